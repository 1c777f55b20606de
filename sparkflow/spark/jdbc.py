"""The JDBC transfer of SparkJDBCOperator/SparkJDBCHook: its options (one definition, the provider's names and
order) and what it adds to a spark-submit of sparkflow's JDBC application (sparkflow/spark/jdbc_app.py).

Unlike the provider, the database credentials never appear on the command line: they reach the driver through
its environment (so local and standalone Spark only; on YARN and Kubernetes env_vars become --conf arguments).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from sparkflow.connections import Connection
from sparkflow.exceptions import UserError
from sparkflow.spark import jdbc_app
from sparkflow.spark.command import build_jdbc_app_args

CMD_TYPES = (jdbc_app.SPARK_TO_JDBC, jdbc_app.JDBC_TO_SPARK)
JDBC_APP = str(Path(jdbc_app.__file__).resolve())
# The provider's spark_* argument names for SparkSubmit options, with its defaults.
SPARK_ALIASES: dict[str, tuple[str, Any]] = {
    "spark_app_name": ("name", "airflow-spark-jdbc"),
    "spark_conn_id": ("conn_id", "spark-default"),
    "spark_conf": ("conf", None),
    "spark_py_files": ("py_files", None),
    "spark_files": ("files", None),
    "spark_jars": ("jars", None),
}
# SparkJDBCHook's positional parameters before the transfer's own: the aliases, then these SparkSubmit options.
HOOK_SPARK_OPTIONS = ("num_executors", "executor_cores", "executor_memory", "driver_memory", "verbose", "principal",
                      "keytab")


@dataclass(frozen=True)
class JdbcTransfer:
    cmd_type: str = jdbc_app.SPARK_TO_JDBC
    jdbc_table: str | None = None
    jdbc_conn_id: str = "jdbc-default"
    jdbc_driver: str | None = None
    metastore_table: str | None = None
    jdbc_truncate: bool = False
    save_mode: str | None = None
    save_format: str | None = None
    batch_size: int | None = None
    fetch_size: int | None = None
    num_partitions: int | None = None
    partition_column: str | None = None
    lower_bound: str | None = None
    upper_bound: str | None = None
    create_table_column_types: str | None = None

    def problem(self) -> str | None:
        if self.cmd_type not in CMD_TYPES:
            return f"cmd_type has bad value {self.cmd_type!r}; use {' or '.join(CMD_TYPES)}"
        if not self.jdbc_table or not self.metastore_table:
            return "jdbc_table and metastore_table are both required (the two ends of the copy)"
        return None

    def submit_values(self, jdbc: Connection, master_manager: str, spark: dict[str, Any]) -> dict[str, Any]:
        """The spark-submit values (``spark``, the Spark options) for this transfer: the JDBC application, its
        arguments and the credentials in its environment."""
        prefix = str(jdbc.extra_dejson.get("conn_prefix", ""))
        if "?" in prefix:
            raise UserError(f"connection '{jdbc.conn_id}': extra conn_prefix {prefix!r} must not contain '?'")
        if jdbc.host and "/" in jdbc.host:
            raise UserError(f"connection '{jdbc.conn_id}': host {jdbc.host!r} must not contain '/'")
        if manager_exposes_env(master_manager):
            raise UserError(
                f"SparkJDBCOperator passes credentials through the driver's environment, which {master_manager} "
                "would expose as --conf arguments; run it in client mode on local or standalone Spark"
            )
        host = f"{jdbc.host}:{jdbc.port}" if jdbc.port else str(jdbc.host or "")
        url = f"{prefix}{host}/{jdbc.schema or ''}"
        name = spark.get("name") or "airflow-spark-jdbc"
        args = build_jdbc_app_args(
            self.cmd_type, url, self.metastore_table, self.jdbc_table, self.jdbc_truncate, self.jdbc_driver,
            self.batch_size, self.fetch_size, self.num_partitions, self.partition_column, self.lower_bound,
            self.upper_bound, self.save_mode, self.save_format, self.create_table_column_types,
        ) + ["-name", name]
        credentials = {jdbc_app.USER_ENV: jdbc.login or "", jdbc_app.PASSWORD_ENV: jdbc.password or ""}
        env_vars = {**(spark.get("env_vars") or {}), **{k: v for k, v in credentials.items() if v}}
        return {**spark, "application": spark.get("application") or JDBC_APP, "application_args": args,
                "env_vars": env_vars}


def manager_exposes_env(manager: str) -> bool:
    return manager in ("yarn", "k8s")


JDBC_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(JdbcTransfer))


def jdbc_default(name: str) -> Any:
    return next(f.default for f in fields(JdbcTransfer) if f.name == name)
