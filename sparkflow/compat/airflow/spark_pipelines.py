"""The provider's ``SparkPipelinesHook``: ``submit_pipeline()`` runs sparkflow's SparkPipelinesOperator inside the
running task (same command, output streaming, ids, progress, metrics and kill), as SparkSubmitHook does."""

from __future__ import annotations

from typing import Any

from sparkflow.compat.airflow.models import BaseHook
from sparkflow.definitions.context import get_current_context
from sparkflow.operators.spark_pipelines import SparkPipelinesOperator

_OPERATOR_ARGS = ("conf", "conn_id", "num_executors", "executor_cores", "executor_memory", "driver_memory", "verbose",
                  "env_vars", "deploy_mode", "yarn_queue", "keytab", "principal", "status_poll_interval")


class SparkPipelinesHook(BaseHook):
    conn_name_attr = "conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark"
    hook_name = "Spark Pipelines"

    def __init__(self, pipeline_spec: str | None = None, pipeline_command: str = "run", **kwargs: Any) -> None:
        if pipeline_command not in ("run", "dry-run"):
            raise ValueError(f"Invalid pipeline command: {pipeline_command}. Must be 'run' or 'dry-run'")
        self.pipeline_spec = pipeline_spec
        self.pipeline_command = pipeline_command
        # SparkSubmitHook's other arguments (files, jars, ...) mean nothing to a pipeline run; kept, not used
        self._options = {k: v for k, v in kwargs.items() if k in _OPERATOR_ARGS}
        self._operator: SparkPipelinesOperator | None = None

    def submit_pipeline(self, **kwargs: Any) -> Any:
        context = get_current_context()
        self._operator = SparkPipelinesOperator(
            task_id=context["ti"].task_id, pipeline_spec=self.pipeline_spec, pipeline_command=self.pipeline_command,
            **self._options,
        )
        return self._operator.execute(context)

    def submit(self, application: str = "", **kwargs: Any) -> Any:
        return self.submit_pipeline(**kwargs)

    def on_kill(self) -> None:
        if self._operator is not None:
            self._operator.on_kill()
