"""A try that ends without recording its own outcome: every way it happens is handled here.

- Its queued try cannot even start (its DAG or task vanished): the task process fails it while it is still
  queued (``fail_unstartable_try``, in the task process).
- Its process died (killed -9, OOM-killed, its host lost) or exited non-zero before recording: the scheduler
  finds it (an executor's exit event, a process gone, a stopped heartbeat) and fails or retries it
  (``fail_lost_try``, in the scheduler process), with the reason in the try's log; the task's failure or retry
  callback then gets the reason as ``exception`` (``call_lost_try_callback``), as Airflow does for zombie tasks:
  an alert on failure must not depend on how the process died.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sparkflow.definitions.dag import DAG
from sparkflow.logs import append_task_log_line, task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import TaskInstanceRecord, TIKey
from sparkflow.runtime.context import RuntimeTaskInstance, build_context, call_callbacks, metastore_environment
from sparkflow.state import TaskState

log = logging.getLogger("sparkflow.scheduler")


@dataclass(frozen=True)
class LostTry:
    """A lost try the scheduler has failed or retried: the record as it was found, its new state and why."""

    ti: TaskInstanceRecord
    state: TaskState
    reason: str


def fail_unstartable_try(metastore: Metastore, key: TIKey, reason: str, actor: str) -> None:
    """In the task process: a queued try that cannot even start fails rather than staying queued."""
    metastore.store.set_task_state(key, TaskState.QUEUED, TaskState.FAILED, actor, detail=reason, error=reason)


def fail_lost_try(
    metastore: Metastore, dag: DAG | None, ti: TaskInstanceRecord, reason: str, now: datetime,
    log_folder: Path | None, actor: str,
) -> LostTry | None:
    """In the scheduler process: ``ti`` (queued or running) lost its process before it recorded an outcome. It
    goes to up_for_retry while tries are left, else failed, compare-and-set against the state and try it was
    found in; None when someone else moved it first."""
    task = dag.task_dict.get(ti.task_id) if dag else None
    fields: dict[str, Any]
    if ti.try_number <= ti.max_tries and task is not None:
        new, fields = TaskState.UP_FOR_RETRY, {"next_try_at": now + task.retry_delay_for(ti.try_number)}
    else:
        new, fields = TaskState.FAILED, {}
    log.warning("%s: %s; marking %s", ti.key, reason, new.value)
    moved = metastore.store.set_task_state(ti.key, ti.state, new, actor, detail=reason, now=now, error=reason,
                                           expected_try=ti.try_number, **fields)
    if not moved:
        return None
    note_in_try_log(ti, log_folder, now, f"{reason}; the scheduler marked the task {new.value}")
    return LostTry(ti, new, reason)


def note_in_try_log(ti: TaskInstanceRecord, log_folder: Path | None, when: datetime, message: str) -> None:
    """Put the scheduler's reason in the try's own log, where the user looks first."""
    if ti.log_path:
        path = Path(ti.log_path)
    elif log_folder is not None:
        path = task_log_path(log_folder, ti.dag_id, ti.run_id, ti.task_id, max(ti.try_number, 1), ti.map_index)
    else:
        return
    try:
        append_task_log_line(path, when, "ERROR", message)
    except OSError:
        log.exception("could not write to the task log %s", path)


def call_lost_try_callback(
    metastore: Metastore, dag: DAG, lost: LostTry, log_folder: Path, clock: Callable[[], datetime],
) -> None:
    """The task's on_failure_callback (failed) or on_retry_callback (up_for_retry) for a lost try, with the
    try's context and the reason as ``exception``. User code: the scheduler calls it off its loop."""
    ti, state = lost.ti, lost.state
    task = dag.task_dict.get(ti.task_id)
    if task is None:
        return
    callback = {TaskState.FAILED: task.on_failure_callback, TaskState.UP_FOR_RETRY: task.on_retry_callback}.get(state)
    if callback is None:
        return
    run = queries.get_run(metastore.db, ti.dag_id, ti.run_id)
    context = build_context(dag, task, run, RuntimeTaskInstance(metastore, ti, run, dag, log_folder, clock))
    context["exception"] = lost.reason
    with metastore_environment(metastore, context):
        call_callbacks(callback, context, f"{state.value} callback")

