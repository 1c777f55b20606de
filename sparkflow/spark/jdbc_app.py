"""The Spark application behind SparkJDBCOperator: copy a table between a JDBC database and Spark's catalog.

    spark-submit jdbc_app.py -cmdType jdbc_to_spark|spark_to_jdbc -url URL -jdbcTable T -metastoreTable M ...

The argument names are the Airflow provider's (spark_jdbc_script.py), except that the credentials never appear on
the command line: they come from the SPARKFLOW_JDBC_USER / SPARKFLOW_JDBC_PASSWORD environment variables.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

USER_ENV = "SPARKFLOW_JDBC_USER"
PASSWORD_ENV = "SPARKFLOW_JDBC_PASSWORD"
SPARK_TO_JDBC = "spark_to_jdbc"
JDBC_TO_SPARK = "jdbc_to_spark"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Spark JDBC transfer")
    parser.add_argument("-cmdType", dest="cmd_type", choices=(SPARK_TO_JDBC, JDBC_TO_SPARK), required=True)
    parser.add_argument("-url", dest="url", required=True)
    parser.add_argument("-jdbcTable", dest="jdbc_table", required=True)
    parser.add_argument("-metastoreTable", dest="metastore_table", required=True)
    parser.add_argument("-jdbcDriver", dest="jdbc_driver")
    parser.add_argument("-jdbcTruncate", dest="truncate", default="False")
    parser.add_argument("-batchsize", dest="batch_size", type=int)
    parser.add_argument("-fetchsize", dest="fetch_size", type=int)
    parser.add_argument("-numPartitions", dest="num_partitions", type=int)
    parser.add_argument("-partitionColumn", dest="partition_column")
    parser.add_argument("-lowerBound", dest="lower_bound")
    parser.add_argument("-upperBound", dest="upper_bound")
    parser.add_argument("-saveMode", dest="save_mode", default="append")
    parser.add_argument("-saveFormat", dest="save_format", default="parquet")
    parser.add_argument("-createTableColumnTypes", dest="create_table_column_types")
    parser.add_argument("-name", dest="name", default="sparkflow-spark-jdbc")
    return parser.parse_args(argv)


def jdbc_options(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {"url": args.url, "dbtable": args.jdbc_table}
    if environ.get(USER_ENV):
        options["user"] = environ[USER_ENV]
    if environ.get(PASSWORD_ENV):
        options["password"] = environ[PASSWORD_ENV]
    for key, value in (
        ("driver", args.jdbc_driver),
        ("batchsize", args.batch_size),
        ("fetchsize", args.fetch_size),
        ("numPartitions", args.num_partitions),
        ("createTableColumnTypes", args.create_table_column_types),
    ):
        if value is not None:
            options[key] = value
    if args.partition_column and args.lower_bound and args.upper_bound and args.num_partitions:
        options.update(partitionColumn=args.partition_column, lowerBound=args.lower_bound,
                       upperBound=args.upper_bound)
    if args.cmd_type == SPARK_TO_JDBC and args.truncate.lower() == "true":
        options["truncate"] = "true"
    return options


def main(argv: list[str]) -> int:
    from pyspark.sql import SparkSession  # only inside Spark: the module is imported by tests without pyspark

    args = parse_args(argv)
    options = jdbc_options(args, dict(os.environ))
    spark = SparkSession.builder.appName(args.name).enableHiveSupport().getOrCreate()
    try:
        if args.cmd_type == SPARK_TO_JDBC:
            frame = spark.table(args.metastore_table)
            frame.write.format("jdbc").options(**options).mode(args.save_mode).save()
            print(f"spark_to_jdbc: wrote {frame.count()} rows of {args.metastore_table} to {args.jdbc_table}")
        else:
            frame = spark.read.format("jdbc").options(**options).load()
            frame.write.saveAsTable(args.metastore_table, format=args.save_format, mode=args.save_mode)
            print(f"jdbc_to_spark: copied {frame.count()} rows of {args.jdbc_table} to {args.metastore_table}")
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
