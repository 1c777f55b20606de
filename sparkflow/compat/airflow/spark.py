"""``SparkSubmitHook`` with the Airflow provider's constructor, for DAG code that submits from its own callables.

A thin shell: ``submit()`` runs sparkflow's SparkSubmitOperator inside the running task, so the command, the
connection handling, the log streaming and the recording of the application id on the task instance are the
operator's, not a second copy.
"""

from __future__ import annotations

from typing import Any

from sparkflow.compat.airflow.models import BaseHook
from sparkflow.definitions.context import get_current_context
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
