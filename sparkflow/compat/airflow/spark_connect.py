"""The provider's ``SparkConnectHook`` and ``pyspark_task`` (``@task.pyspark``) for Airflow DAG code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sparkflow.compat.airflow.models import BaseHook
from sparkflow.compat.airflow.translate import task
from sparkflow.spark.connect_config import CONN_TYPE, DEFAULT_CONN_ID, resolve_connect


class SparkConnectHook(BaseHook):
    """``SparkConnectHook(conn_id).get_connection_url()``: the ``sc://`` URL of a spark_connect connection, with
    ``user_id`` (login), ``token`` (password) and ``use_ssl`` (extra), as the provider builds it."""

    PARAM_USE_SSL = "use_ssl"
    PARAM_TOKEN = "token"
    PARAM_USER_ID = "user_id"
    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Spark Connect"

    def __init__(self, conn_id: str = DEFAULT_CONN_ID) -> None:
        super().__init__()
        self._conn_id = conn_id

    def get_connection_url(self) -> str:
        return resolve_connect(self.get_connection(self._conn_id)).url


def pyspark_task(python_callable: Callable[..., Any] | None = None, multiple_outputs: bool | None = None,
                 **kwargs: Any) -> Any:
    """The provider's ``pyspark_task`` decorator (what ``@task.pyspark`` is)."""
    return task.pyspark(python_callable, multiple_outputs=multiple_outputs, **kwargs)
