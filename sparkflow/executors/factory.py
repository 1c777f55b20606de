"""Build the executor the settings name: local, sequential or celery (SPARKFLOW_EXECUTOR)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import ConfigError
from sparkflow.executors.base import Executor, Workload
from sparkflow.executors.celery import CeleryExecutor, make_celery_app
from sparkflow.executors.local import LocalExecutor
from sparkflow.executors.sequential import SequentialExecutor
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.runtime.task_runner import run_try, utcnow
from sparkflow.settings import Settings


def make_executor(
    settings: Settings, metastore: Metastore, get_dag: Callable[[str], DAG | None], name: str | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Executor:
    """``clock`` reaches in-process task runs only (sequential); task processes use the wall clock."""
    name = name or settings.executor
    if name == "local":
        return LocalExecutor(settings.parallelism)
    if name == "sequential":
        def run(workload: Workload) -> object:
            return run_try(settings, metastore, workload.key, workload.try_number, dag=get_dag(workload.key.dag_id),
                           clock=clock).state

        return SequentialExecutor(run)
    if name == "celery":
        try:
            app = make_celery_app(settings)
        except ImportError as exc:
            raise ConfigError(f"the celery executor needs Celery and redis ({exc}); pip install 'sparkflow[celery]'")\
                from None
        return CeleryExecutor(settings, metastore, app)
    raise ConfigError(f"executor {name!r} is not available in this build; use local, sequential or celery")
