"""A Spark application that writes N rows as CSV: spark-submit write_rows.py N OUTPUT_DIR"""

import sys

from pyspark.sql import SparkSession


def main() -> None:
    rows, output = int(sys.argv[1]), sys.argv[2]
    spark = SparkSession.builder.appName("write_rows").getOrCreate()
    spark.range(rows).coalesce(1).write.mode("overwrite").csv(output)
    spark.stop()


if __name__ == "__main__":
    main()
