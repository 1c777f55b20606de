"""Helpers shared by tests: drive a run through the real scheduler loop with the sequential executor."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from importlib.abc import MetaPathFinder
from pathlib import Path
from typing import Any

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import DagBag, collect_dags
from sparkflow.definitions.serialization import deserialize_dag, serialize_dag
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TIKey
from sparkflow.runtime.context import metastore_environment
from sparkflow.runtime.lost_try import LostTry, call_lost_try_callback
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import Settings
from sparkflow.state import RunState, TaskState

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

    The loop plans from the DAG's serialized form, as the scheduler daemon does, while the tasks run the DAG
    file's own (the sequential executor gets the real DAG, and callbacks are called on it): every test that runs
    a DAG this way checks that planning from a serialized DAG behaves as from the DAG itself.
    ``meta_path_finders`` go to the loader (the Airflow compatibility layer's, for Airflow DAG files)."""
    bag = collect_dags(path.parent, meta_path_finders, only_file=path)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    metastore.dags.sync_dags([dag], [], [str(path)])
    serialized = deserialize_dag(serialize_dag(dag))
    clock = clock or Clock(NOW)
    run = trigger_dag(metastore, serialized, clock(), conf)
    executor = make_executor(settings, metastore, bag.dags.get, "sequential", clock=clock)
    loop = SchedulerLoop(metastore, executor, {dag_id: serialized}.get, clock=clock,
                         log_folder=settings.resolved_log_folder, max_map_length=settings.max_map_length,
                         callback_sink=lambda request: call_in_process(metastore, dag, request, settings, clock))
    for _ in range(max_ticks):
        result = loop.tick()
        current = queries.get_run(metastore.db, dag_id, run.run_id)
        if current.state in (RunState.SUCCESS, RunState.FAILED):
            loop.callbacks.drain(timeout=60)  # the DAG's callback, which runs off the loop
            return current
        if not result.changed:
            clock.now += timedelta(seconds=30)  # nothing to do now: let retry delays pass
    raise AssertionError("run did not finish")


def call_in_process(metastore: Metastore, dag: DAG, request: Mapping[str, Any], settings: Settings,
                    clock: Clock) -> None:
    """What the scheduler's callback process does for a serialized DAG, here, on the DAG file's own DAG."""
    if "task_id" in request:
        key = TIKey(request["dag_id"], request["run_id"], request["task_id"], request.get("map_index", -1))
        lost = LostTry(queries.get_task_instance(metastore.db, key), TaskState(request["state"]), request["reason"])
        try:
            call_lost_try_callback(metastore, dag, lost, settings.resolved_log_folder, clock)
        except Exception:  # noqa: BLE001 - as the scheduler: the state is recorded, the loop carries on
            logging.getLogger("sparkflow.scheduler").exception("the callback could not be called")
        return
    run = queries.get_run(metastore.db, request["dag_id"], request["run_id"])
    callback = dag.on_success_callback if run.state is RunState.SUCCESS else dag.on_failure_callback
    if callback is not None:
        try:
            callback({"dag": dag, "dag_run": run, "run_id": run.run_id, "reason": request["reason"]})
        except Exception:  # noqa: BLE001
            logging.getLogger("sparkflow.scheduler").exception("DAG '%s' callback raised", dag.dag_id)


def parse_folder(settings: Settings, metastore: Metastore) -> DagBag:
    """Import the DAG folder in this process (Airflow names resolving to sparkflow) and record it, for tests that
    look at the DAG objects themselves; sparkflow's commands parse in time-limited child processes instead."""
    with metastore_environment(metastore):
        bag = collect_dags(settings.resolved_dags_folder, airflow_finders())
    metastore.dags.sync_dags(bag.dags.values(), bag.import_errors, [str(p.resolve()) for p in bag.files],
                              complete=True)
    return bag


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
