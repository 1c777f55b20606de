"""count_trips_connect: count_trips_sql's work as three @task.pyspark steps on a managed Spark Connect server.

The first task that runs starts the server behind `spark_connect_local` (conf/connections.yaml); the others, and
later runs, reuse it while it is warm. Each step runs in a Spark Connect session of its own, so steps hand data
over through files, not temporary views:

    stage_trips (CSV -> Parquet of pickup dates)  >>  count_per_day (-> one CSV)  >>  busiest_days (-> XCom)

    sparkflow trigger count_trips_connect --wait
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from sparkflow import DAG, task

DATA = Path(os.environ.get("SPARKFLOW_HOME", "~/sparkflow")).expanduser() / "data"
CONNECT = {"conn_id": "spark_connect_local", "config_kwargs": {"spark.sql.shuffle.partitions": "4"}}

with DAG(
    dag_id="count_trips_connect",
    description="Trips per pickup day, as three Spark steps on a warm Spark Connect server",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["spark", "spark-connect", "demo"],
    params={
        "trips_path": str(DATA / "fhvhv_tripdata_2024-01.csv"),
        "output_root": str(DATA / "output" / "trips_per_day_connect"),
        "top": 5,
    },
    default_args={"retries": 1, "retry_delay": 5},
) as dag:

    @task.pyspark(**CONNECT)
    def stage_trips(spark: Any, trips_path: str, staged: str) -> int:
        """The trips' pickup dates as Parquet (what the next step needs, columnar)."""
        trips = spark.read.option("header", True).csv(trips_path)
        trips.selectExpr("to_date(pickup_datetime) AS pickup_date").write.mode("overwrite").parquet(staged)
        rows = spark.read.parquet(staged).count()
        print(f"Staged {rows} trips from {trips_path} to {staged}")
        return int(rows)

    @task.pyspark(**CONNECT)
    def count_per_day(spark: Any, staged: str, output_dir: str) -> int:
        """Trips per pickup day, one CSV with header, ordered by date (count_trips_sql's query)."""
        spark.read.parquet(staged).createOrReplaceTempView("trips")
        result = spark.sql("SELECT pickup_date, count(*) AS trips FROM trips GROUP BY pickup_date ORDER BY pickup_date")
        result.coalesce(1).write.mode("overwrite").option("header", True).csv(output_dir)
        days = spark.read.option("header", True).csv(output_dir).count()
        print(f"Wrote {days} days of trip counts to {output_dir}")
        return int(days)

    @task.pyspark(multiple_outputs=False, **CONNECT)  # one XCom with the whole table, not one per day
    def busiest_days(spark: Any, output_dir: str, top: int) -> dict[str, int]:
        rows = spark.read.option("header", True).csv(output_dir).collect()
        counts = {str(row["pickup_date"]): int(row["trips"]) for row in rows}
        print(f"Trips per day ({len(counts)} days, {sum(counts.values())} trips)")
        busiest = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: int(top)]
        print("Busiest days: " + ", ".join(f"{day} ({trips})" for day, trips in busiest))
        return counts

    staged_dir = "{{ params.output_root }}/{{ ts_nodash }}/staged"
    out_dir = "{{ params.output_root }}/{{ ts_nodash }}/per_day"
    staged = stage_trips(trips_path="{{ params.trips_path }}", staged=staged_dir)
    counted = count_per_day(staged=staged_dir, output_dir=out_dir)
    report = busiest_days(output_dir=out_dir, top="{{ params.top }}")
    staged >> counted >> report
