"""SparkJDBCOperator: the provider's transfer operator between a JDBC database and a Spark (metastore) table.

It submits sparkflow's own JDBC application (sparkflow/spark/jdbc_app.py) like any SparkSubmitOperator task, so
it gets the same live progress, metrics and kill. Unlike the provider, the database credentials never appear on
the command line: they reach the driver through its environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sparkflow.definitions.context import Context, lookup_connection
from sparkflow.logs import masker
from sparkflow.operators.spark_submit import SparkSubmitOperator
from sparkflow.spark import jdbc_app
from sparkflow.spark.command import build_jdbc_app_args
from sparkflow.spark.spec import classify_master, master_url

CMD_TYPES = (jdbc_app.SPARK_TO_JDBC, jdbc_app.JDBC_TO_SPARK)
JDBC_APP = str(Path(jdbc_app.__file__).resolve())


class SparkJDBCOperator(SparkSubmitOperator):
    template_fields = (*SparkSubmitOperator.template_fields, "jdbc_table", "metastore_table")

    def __init__(
        self,
        *,
        spark_app_name: str = "airflow-spark-jdbc",
        spark_conn_id: str = "spark-default",
        spark_conf: dict[str, Any] | None = None,
        spark_py_files: str | None = None,
        spark_files: str | None = None,
        spark_jars: str | None = None,
        num_executors: int | None = None,
        executor_cores: int | None = None,
        executor_memory: str | None = None,
        driver_memory: str | None = None,
        verbose: bool = False,
        principal: str | None = None,
        keytab: str | None = None,
        cmd_type: str = "spark_to_jdbc",
        jdbc_table: str | None = None,
        jdbc_conn_id: str = "jdbc-default",
        jdbc_driver: str | None = None,
        metastore_table: str | None = None,
        jdbc_truncate: bool = False,
        save_mode: str | None = None,
        save_format: str | None = None,
        batch_size: int | None = None,
        fetch_size: int | None = None,
        num_partitions: int | None = None,
        partition_column: str | None = None,
        lower_bound: str | None = None,
        upper_bound: str | None = None,
        create_table_column_types: str | None = None,
        use_krb5ccache: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("application", JDBC_APP)
        super().__init__(
            name=spark_app_name, conn_id=spark_conn_id, conf=spark_conf, py_files=spark_py_files, files=spark_files,
            jars=spark_jars, num_executors=num_executors, executor_cores=executor_cores,
            executor_memory=executor_memory, driver_memory=driver_memory, verbose=verbose, principal=principal,
            keytab=keytab, use_krb5ccache=use_krb5ccache, **kwargs,
        )
        self.spark_conn_id = spark_conn_id
        self.cmd_type = cmd_type
        self.jdbc_table = jdbc_table
        self.jdbc_conn_id = jdbc_conn_id
        self.jdbc_driver = jdbc_driver
        self.metastore_table = metastore_table
        self.jdbc_truncate = jdbc_truncate
        self.save_mode = save_mode
        self.save_format = save_format
        self.batch_size = batch_size
        self.fetch_size = fetch_size
        self.num_partitions = num_partitions
        self.partition_column = partition_column
        self.lower_bound = lower_bound
        self.upper_bound = upper_bound
        self.create_table_column_types = create_table_column_types
        if cmd_type not in CMD_TYPES:
            raise self._error(f"cmd_type has bad value {cmd_type!r}; use {' or '.join(CMD_TYPES)}")
        if not jdbc_table or not metastore_table:
            raise self._error("jdbc_table and metastore_table are both required (the two ends of the copy)")

    def execute(self, context: Context) -> Any:
        jdbc = lookup_connection(self.jdbc_conn_id)
        masker.add(*jdbc.secrets())
        prefix = str(jdbc.extra_dejson.get("conn_prefix", ""))
        if "?" in prefix:
            raise self._error(f"connection '{self.jdbc_conn_id}': extra conn_prefix {prefix!r} must not contain '?'")
        host = f"{jdbc.host}:{jdbc.port}" if jdbc.port else str(jdbc.host or "")
        url = f"{prefix}{host}/{jdbc.schema or ''}"
        manager = classify_master(master_url(lookup_connection(self.conn_id)))
        if manager in ("yarn", "k8s"):
            raise self._error(
                f"SparkJDBCOperator passes credentials through the driver's environment, which {manager} would "
                "expose as --conf arguments; run it in client mode on local or standalone Spark"
            )
        self.application_args = build_jdbc_app_args(
            self.cmd_type, url, self.metastore_table, self.jdbc_table, self.jdbc_truncate, self.jdbc_driver,
            self.batch_size, self.fetch_size, self.num_partitions, self.partition_column, self.lower_bound,
            self.upper_bound, self.save_mode, self.save_format, self.create_table_column_types,
        ) + ["-name", self.name]
        credentials = {jdbc_app.USER_ENV: jdbc.login or "", jdbc_app.PASSWORD_ENV: jdbc.password or ""}
        self.env_vars = {**(self.env_vars or {}), **{k: v for k, v in credentials.items() if v}}
        return super().execute(context)
