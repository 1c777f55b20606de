"""Helpers shared by tests: drive a run through the real scheduler loop with the sequential executor."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from importlib.abc import MetaPathFinder
from pathlib import Path

from sparkflow.definitions.loader import collect_dags
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import Settings
from sparkflow.state import RunState

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run_dag(
    settings: Settings, metastore: Metastore, path: Path, dag_id: str, conf: dict | None = None,
    clock: Clock | None = None, max_ticks: int = 200, meta_path_finders: Iterable[MetaPathFinder] = (),
) -> DagRunRecord:
    """Trigger dag_id and tick the scheduler loop (sequential executor) until the run ends.

    ``meta_path_finders`` go to the loader (the Airflow compatibility layer's, for Airflow DAG files)."""
    bag = collect_dags(path.parent, meta_path_finders, only_file=path)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    metastore.dags.sync_dags([dag], [], [str(path)])
    clock = clock or Clock(NOW)
    run = trigger_dag(metastore, dag, clock(), conf)
    executor = make_executor(settings, metastore, bag.dags.get, "sequential", clock=clock)
    loop = SchedulerLoop(metastore, executor, bag.dags.get, clock=clock, log_folder=settings.resolved_log_folder,
                         max_map_length=settings.max_map_length)
    for _ in range(max_ticks):
        result = loop.tick()
        current = queries.get_run(metastore.db, dag_id, run.run_id)
        if current.state in (RunState.SUCCESS, RunState.FAILED):
            loop.callbacks.drain(timeout=60)  # the DAG's callback, which runs off the loop
            return current
        if not result.changed:
            clock.now += timedelta(seconds=30)  # nothing to do now: let retry delays pass
    raise AssertionError("run did not finish")


def states(metastore: Metastore, run: DagRunRecord) -> dict[str, str]:
    return {ti.task_id: ti.state.value for ti in queries.task_instances(metastore.db, run.dag_id, run.run_id)}


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[:1] != ["Z"]
    except OSError:
        return False
