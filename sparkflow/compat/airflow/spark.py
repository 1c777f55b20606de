"""``SparkSubmitHook`` and ``SparkJDBCHook`` with the Airflow provider's constructors, for DAG code that submits
from its own callables.

Thin shells: ``submit()`` runs sparkflow's SparkSubmitOperator (``submit_jdbc_job()`` its SparkJDBCOperator)
inside the running task, so the command, the connection handling, the log streaming and the recording of the
application id on the task instance are the operator's, not a second copy.
"""

from __future__ import annotations

from typing import Any

from sparkflow.compat.airflow.models import BaseHook
from sparkflow.definitions.context import get_current_context
from sparkflow.operators.spark_jdbc import SparkJDBCOperator
from sparkflow.operators.spark_submit import SparkSubmitOperator


class SparkSubmitHook(BaseHook):
    conn_name_attr = "conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark"
    hook_name = "Spark"

    def __init__(
        self,
        conf: dict[str, Any] | None = None,
        conn_id: str = "spark_default",
        files: str | None = None,
        py_files: str | None = None,
        archives: str | None = None,
        driver_class_path: str | None = None,
        jars: str | None = None,
        java_class: str | None = None,
        packages: str | None = None,
        exclude_packages: str | None = None,
        repositories: str | None = None,
        total_executor_cores: int | None = None,
        executor_cores: int | None = None,
        executor_memory: str | None = None,
        driver_memory: str | None = None,
        keytab: str | None = None,
        principal: str | None = None,
        proxy_user: str | None = None,
        name: str = "default-name",
        num_executors: int | None = None,
        status_poll_interval: int = 1,
        application_args: list[Any] | None = None,
        env_vars: dict[str, Any] | None = None,
        verbose: bool = False,
        spark_binary: str | None = None,
        properties_file: str | None = None,
        yarn_queue: str | None = None,
        deploy_mode: str | None = None,
        *,
        use_krb5ccache: bool = False,
    ) -> None:
        self._options: dict[str, Any] = dict(
            conf=conf, conn_id=conn_id, files=files, py_files=py_files, archives=archives,
            driver_class_path=driver_class_path, jars=jars, java_class=java_class, packages=packages,
            exclude_packages=exclude_packages, repositories=repositories, total_executor_cores=total_executor_cores,
            executor_cores=executor_cores, executor_memory=executor_memory, driver_memory=driver_memory,
            keytab=keytab, principal=principal, proxy_user=proxy_user, name=name, num_executors=num_executors,
            status_poll_interval=status_poll_interval, application_args=application_args, env_vars=env_vars,
            verbose=verbose, spark_binary=spark_binary, properties_file=properties_file, yarn_queue=yarn_queue,
            deploy_mode=deploy_mode, use_krb5ccache=use_krb5ccache,
        )
        self.conn_id = conn_id
        self._operator: SparkSubmitOperator | None = None

    def submit(self, application: str = "", **kwargs: Any) -> Any:
        """Run spark-submit for ``application`` inside the current task; raises on a non-zero exit.

        Returns the Spark application id when Spark printed one. ``kwargs`` (Airflow passes them to Popen) are
        not used.
        """
        context = get_current_context()
        self._operator = SparkSubmitOperator(
            task_id=f"{context['ti'].task_id}", application=application, **self._options
        )
        return self._operator.execute(context)

    def on_kill(self) -> None:
        if self._operator is not None:
            self._operator.on_kill()


class SparkJDBCHook(SparkSubmitHook):
    """The provider's ``SparkJDBCHook``: ``submit_jdbc_job()`` runs sparkflow's SparkJDBCOperator inside the current
    task (same command, credential handling and application-id recording as the operator); ``submit()`` is
    SparkSubmitHook's, with the Spark options given here."""

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark_jdbc"
    hook_name = "Spark JDBC"

    def __init__(
        self,
        spark_app_name: str = "airflow-spark-jdbc",
        spark_conn_id: str = default_conn_name,
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
        *args: Any,
        use_krb5ccache: bool = False,
        **kwargs: Any,
    ) -> None:
        spark = dict(
            name=spark_app_name, conn_id=spark_conn_id, conf=spark_conf, py_files=spark_py_files, files=spark_files,
            jars=spark_jars, num_executors=num_executors, executor_cores=executor_cores,
            executor_memory=executor_memory, driver_memory=driver_memory, verbose=verbose, principal=principal,
            keytab=keytab, use_krb5ccache=use_krb5ccache,
        )
        super().__init__(*args, **{**kwargs, **spark})
        self._jdbc_options: dict[str, Any] = dict(
            spark_app_name=spark_app_name, spark_conn_id=spark_conn_id, spark_conf=spark_conf,
            spark_py_files=spark_py_files, spark_files=spark_files, spark_jars=spark_jars,
            num_executors=num_executors, executor_cores=executor_cores, executor_memory=executor_memory,
            driver_memory=driver_memory, verbose=verbose, principal=principal, keytab=keytab, cmd_type=cmd_type,
            jdbc_table=jdbc_table, jdbc_conn_id=jdbc_conn_id, jdbc_driver=jdbc_driver,
            metastore_table=metastore_table, jdbc_truncate=jdbc_truncate, save_mode=save_mode,
            save_format=save_format, batch_size=batch_size, fetch_size=fetch_size, num_partitions=num_partitions,
            partition_column=partition_column, lower_bound=lower_bound, upper_bound=upper_bound,
            create_table_column_types=create_table_column_types, use_krb5ccache=use_krb5ccache,
            # the remaining SparkSubmitHook options (deploy_mode, env_vars, ...) apply to the JDBC job too
            **{k: v for k, v in self._options.items() if k not in spark and k != "application_args"},
        )
        self.spark_conn_id = spark_conn_id
        self.jdbc_conn_id = jdbc_conn_id

    def submit_jdbc_job(self) -> Any:
        """Run the JDBC transfer inside the current task; raises on failure. Returns the Spark application id."""
        context = get_current_context()
        self._operator = SparkJDBCOperator(task_id=f"{context['ti'].task_id}", **self._jdbc_options)
        return self._operator.execute(context)

    def get_conn(self) -> Any:
        return None
