"""Write a deterministic sample of NYC-taxi-style FHVHV trips as CSV (no Spark needed).

    python jobs/generate_trips.py OUTPUT_CSV [--rows 100000] [--month 2024-01] [--seed 7]

Columns follow the TLC's high-volume for-hire-vehicle data: hvfhs_license_num, dispatching_base_num,
pickup_datetime, dropoff_datetime, PULocationID, DOLocationID, SR_Flag. The same arguments always give the same
file (byte for byte), so demo results and tests are reproducible.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import itertools
import os
import random
import sys
from datetime import datetime, timedelta

# Uber, Lyft, Via, Juno: the licence numbers used in the TLC files, with dispatching bases for each.
LICENSES = {
    "HV0003": ["B02764", "B02765", "B02869", "B02871", "B02872"],
    "HV0005": ["B02510", "B02844"],
    "HV0004": ["B02800"],
    "HV0002": ["B02907"],
}
LICENSE_WEIGHTS = [0.70, 0.24, 0.04, 0.02]
# Relative demand per weekday (Monday first): Fridays and Saturdays are busiest, as in the real data.
WEEKDAY_DEMAND = [0.85, 0.92, 0.97, 1.03, 1.25, 1.32, 1.0]
FIELDS = ["hvfhs_license_num", "dispatching_base_num", "pickup_datetime", "dropoff_datetime",
          "PULocationID", "DOLocationID", "SR_Flag"]


def generate(path: str, rows: int, month: str, seed: int) -> None:
    rng = random.Random(seed)
    year, mon = (int(part) for part in month.split("-"))
    days = calendar.monthrange(year, mon)[1]
    start = datetime(year, mon, 1)
    day_cum_weights = list(itertools.accumulate(WEEKDAY_DEMAND[(start + timedelta(d)).weekday()] for d in range(days)))
    license_cum_weights = list(itertools.accumulate(LICENSE_WEIGHTS))
    licenses = list(LICENSES)
    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FIELDS)
        for _ in range(rows):
            day = rng.choices(range(days), cum_weights=day_cum_weights)[0]
            pickup = start + timedelta(days=day, seconds=rng.randrange(86400))
            dropoff = pickup + timedelta(seconds=rng.randint(180, 3600))
            license_num = rng.choices(licenses, cum_weights=license_cum_weights)[0]
            writer.writerow([
                license_num,
                rng.choice(LICENSES[license_num]),
                pickup.strftime("%Y-%m-%d %H:%M:%S"),
                dropoff.strftime("%Y-%m-%d %H:%M:%S"),
                rng.randint(1, 265),
                rng.randint(1, 265),
                "Y" if rng.random() < 0.08 else "",
            ])
    os.replace(tmp, path)  # readers never see a half-written file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--month", default="2024-01", help="YYYY-MM")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, got {args.rows}")
    try:
        datetime.strptime(args.month, "%Y-%m")
    except ValueError:
        parser.error(f"--month {args.month!r} is not YYYY-MM")
    generate(args.output, args.rows, args.month, args.seed)
    print(f"wrote {args.rows} trips for {args.month} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
