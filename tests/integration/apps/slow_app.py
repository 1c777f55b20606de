"""A Spark application that takes a while: SECONDS of sleep in each of 2 partitions, then a small SQL job.

    spark-submit slow_app.py SECONDS
"""

import sys
import time

from pyspark.sql import SparkSession


def main() -> None:
    seconds = float(sys.argv[1])
    spark = SparkSession.builder.appName("slow_app").getOrCreate()

    def slow(rows):
        time.sleep(seconds)
        yield sum(1 for _ in rows)

    total = spark.sparkContext.parallelize(range(1000), 2).mapPartitions(slow).sum()
    spark.sql("SELECT 1 AS one").collect()
    print(f"slow_app: counted {total} rows")
    spark.stop()


if __name__ == "__main__":
    main()
