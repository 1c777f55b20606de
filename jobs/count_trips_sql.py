"""count_trips_sql: check the trips file, count trips per pickup day with Spark SQL, log the busiest days.

The paths are params, so a run can point elsewhere: sparkflow trigger count_trips_sql --conf '{"trips_path": ...}'.
By default they live under $SPARKFLOW_HOME/data, where `make demo` generates the sample.
"""

from __future__ import annotations

import csv
import os
from datetime import datetime
from pathlib import Path

from sparkflow import DAG, PythonOperator, SparkSubmitOperator, task

SPARKFLOW_HOME = Path(os.environ.get("SPARKFLOW_HOME", "~/sparkflow")).expanduser()
DATA = SPARKFLOW_HOME / "data"
SPARK_APP = Path(__file__).resolve().parent / "spark" / "count_trips_sql.py"


def check_input(trips_path: str) -> str:
    path = Path(trips_path)
    if not path.is_file() or path.stat().st_size == 0:
        raise FileNotFoundError(
            f"trips file {trips_path} does not exist or is empty; generate it with "
            f"`python jobs/generate_trips.py {trips_path}` or pass trips_path in --conf"
        )
    print(f"Input {trips_path}: {path.stat().st_size / 1e6:.1f} MB")
    return trips_path


with DAG(
    dag_id="count_trips_sql",
    description="Trips per pickup day from FHVHV trip records, with Spark SQL",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["spark", "demo"],
    params={
        "trips_path": str(DATA / "fhvhv_tripdata_2024-01.csv"),
        "output_root": str(DATA / "output" / "trips_per_day"),
        "top": 5,
    },
    default_args={"retries": 1, "retry_delay": 5},
) as dag:
    check = PythonOperator(
        task_id="check_input",
        python_callable=check_input,
        op_kwargs={"trips_path": "{{ params.trips_path }}"},
        retries=0,
    )

    submit_job = SparkSubmitOperator(
        task_id="submit_job",
        application=str(SPARK_APP),
        conn_id="spark_local",
        name="count_trips_sql",
        application_args=["{{ params.trips_path }}", "{{ params.output_root }}/{{ ts_nodash }}"],
        conf={"spark.sql.shuffle.partitions": "4", "spark.ui.showConsoleProgress": "false"},
        driver_memory="1g",
    )

    @task(multiple_outputs=False)  # one XCom with the whole table, not one per day
    def report_busiest_days(output_dir: str, top: int) -> dict[str, int]:
        """Read the per-day counts Spark wrote, print them all and name the busiest days."""
        parts = sorted(Path(output_dir).glob("part-*.csv"))
        if not parts:
            raise FileNotFoundError(f"no part-*.csv in {output_dir}; did submit_job write its output?")
        counts: dict[str, int] = {}
        for part in parts:
            with part.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    counts[row["pickup_date"]] = int(row["trips"])
        print(f"Trips per day ({len(counts)} days, {sum(counts.values())} trips):")
        for day, trips in sorted(counts.items()):
            print(f"  {day}  {trips:>6}  {'#' * (trips // 100)}")
        busiest = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: int(top)]
        print("Busiest days: " + ", ".join(f"{day} ({trips})" for day, trips in busiest))
        return counts

    report = report_busiest_days(
        output_dir="{{ params.output_root }}/{{ ts_nodash }}", top="{{ params.top }}"
    )
    check >> submit_job >> report
