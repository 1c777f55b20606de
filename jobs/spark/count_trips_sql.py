"""Count FHVHV trips per pickup date with Spark SQL.

    spark-submit count_trips_sql.py INPUT_CSV OUTPUT_DIR

Reads the trips CSV (with header), registers it as the view ``trips`` and writes one CSV (with header) of
``pickup_date,trips`` rows, ordered by date, to OUTPUT_DIR.
"""

from __future__ import annotations

import sys

from pyspark.sql import SparkSession

QUERY = """
SELECT to_date(pickup_datetime) AS pickup_date, count(*) AS trips
FROM trips
GROUP BY to_date(pickup_datetime)
ORDER BY pickup_date
"""


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: count_trips_sql.py INPUT_CSV OUTPUT_DIR", file=sys.stderr)
        return 2
    input_path, output_path = argv
    spark = SparkSession.builder.appName("count_trips_sql").getOrCreate()
    try:
        trips = spark.read.option("header", True).option("inferSchema", False).csv(input_path)
        trips.createOrReplaceTempView("trips")
        result = spark.sql(QUERY)
        result.coalesce(1).write.mode("overwrite").option("header", True).csv(output_path)
        days = result.count()
        print(f"count_trips_sql: wrote {days} days of trip counts to {output_path}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
