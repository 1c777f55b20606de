"""A user's hand on runs: clear (re-run) task instances and mark them success/failed, both audited in the store.

Marking a running task kills its process, and so does a run's time-out (SchedulerLoop): the task process leads
its own process group (the local executor starts it in a new session) and its pid and host are on the task
instance, so SIGTERM goes to the group; the runner turns SIGTERM into TaskKilled and calls the operator's
on_kill() (spark-submit is killed with it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.setup_teardown import related_setups_and_teardowns
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.scheduler.external_markers import follow_markers
from sparkflow.state import TASK_ACTIVE, TASK_FAILED_LIKE, TaskState


@dataclass
class ClearSelection:
    items: list[tuple[DagRunRecord, list[str]]] = field(default_factory=list)
    active: list[TaskInstanceRecord] = field(default_factory=list)  # queued/running: left alone
    map_indexes: list[int] | None = None  # only these instances of mapped tasks (None: all)
    chosen: list[TIKey] = field(default_factory=list)  # this DAG's task instances in items, with their map index
    # other DAGs' task instances that ExternalTaskMarkers among the chosen tasks point at (recursive clear)
    external: list[tuple[DAG, DagRunRecord, list[str]]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(ids) for _, ids in self.items) + sum(len(ids) for _, _, ids in self.external)

    def keys(self) -> list[TIKey]:
        """Every task instance the clear would reset, this DAG's and (through markers) other DAGs'."""
        return self.chosen + [TIKey(run.dag_id, run.run_id, tid) for _, run, ids in self.external for tid in ids]


def select_for_clear(
    metastore: Metastore, dag: DAG, task_regex: str | None = None, start: datetime | None = None,
    end: datetime | None = None, only_failed: bool = False, downstream: bool = False,
    map_indexes: Iterable[int] | None = None,
) -> ClearSelection:
    """Which task instances `tasks clear` would reset: tasks matching the regex (plus their downstream), in runs
    whose logical date is in [start, end], only failed ones with only_failed. Writes nothing."""
    if start is not None and end is not None and end < start:
        raise UserError(f"--end-date {end.isoformat()} is before --start-date {start.isoformat()}; swap them")
    task_ids = set(dag.task_dict)
    if task_regex is not None:
        try:
            pattern = re.compile(task_regex)
        except re.error as exc:
            raise UserError(f"-t/--task-regex {task_regex!r} is not a valid regular expression ({exc}); fix it, "
                            "e.g. '^load_'") from None
        task_ids = {tid for tid in dag.task_dict if pattern.search(tid)}
        if not task_ids:
            raise UserError(f"-t/--task-regex {task_regex!r} matches no task of DAG '{dag.dag_id}'; known: "
                            f"{', '.join(sorted(dag.task_dict))}")
    if downstream:
        for tid in list(task_ids):
            task_ids |= dag.downstream_of(tid)
    task_ids |= related_setups_and_teardowns(dag, task_ids)
    selection = ClearSelection(map_indexes=None if map_indexes is None else sorted(set(map_indexes)))
    for run in sorted(queries.list_runs(metastore.db, dag.dag_id), key=lambda r: r.logical_date):
        if (start is not None and run.logical_date < start) or (end is not None and run.logical_date > end):
            continue
        chosen = []
        for ti in queries.task_instances(metastore.db, run.dag_id, run.run_id):
            if ti.task_id not in task_ids or (only_failed and ti.state not in TASK_FAILED_LIKE):
                continue
            if selection.map_indexes is not None and ti.map_index >= 0 and ti.map_index not in selection.map_indexes:
                continue
            if ti.state in TASK_ACTIVE:
                selection.active.append(ti)
            else:
                chosen.append(ti.task_id)
                selection.chosen.append(ti.key)
        if chosen:
            selection.items.append((run, chosen))
    followed = follow_markers(metastore, dag, selection.items)
    selection.external, selection.active = followed.items, selection.active + followed.active
    return selection


def clear(metastore: Metastore, dag: DAG, selection: ClearSelection, actor: str = "cli") -> list[TIKey]:
    indexes = None if selection.map_indexes is None else [-1, *selection.map_indexes]
    cleared = metastore.store.clear_task_instances(dag, selection.items, actor, map_indexes=indexes)
    for other, run, task_ids in selection.external:  # through ExternalTaskMarkers: every instance of those tasks
        cleared += metastore.store.clear_task_instances(other, [(run, task_ids)], actor)
    return cleared


@dataclass(frozen=True)
class MarkResult:
    before: TaskInstanceRecord
    killed_pid: int | None = None
    note: str | None = None


def mark(metastore: Metastore, key: TIKey, state: TaskState, actor: str = "cli") -> MarkResult:
    """Set a task's state by hand (audited); a running task's process group gets SIGTERM."""
    queries.get_run(metastore.db, key.dag_id, key.run_id)  # a clear error for an unknown run
    before = metastore.store.mark_task_state(key, state, actor)
    if before.state is not TaskState.RUNNING:
        return MarkResult(before)
    return terminate(before)


def terminate(ti: TaskInstanceRecord) -> MarkResult:
    """SIGTERM the process group of a task that was running (marked, or its run timed out): its runner kills
    what the task started (spark-submit, the Spark application) and leaves. ``note`` says why nothing was sent;
    such a try ends at its own next heartbeat instead, which finds it no longer running (task_runner)."""
    if ti.pid is None or ti.pid <= 1:  # killpg(1) would signal every process it may (a container's pid 1)
        return MarkResult(ti, note="no process id of its own is recorded for it")
    if ti.hostname != socket.gethostname():
        return MarkResult(ti, note=f"it runs on host {ti.hostname} (pid {ti.pid}); its next heartbeat there "
                                    "finds the new state and ends it")
    try:
        # Task processes start their own session; a scheduler running tasks in-process (sequential executor)
        # may lead its shell job's group, and that group holds more than the task (`... | tee log`).
        own_session = os.getsid(ti.pid) == ti.pid
    except ProcessLookupError:
        return MarkResult(ti, note=f"its process {ti.pid} is already gone")
    if not own_session or ti.pid == os.getpid():
        return MarkResult(ti, note=f"process {ti.pid} is not a task process of its own (sequential executor?); "
                                    "its next heartbeat ends the try")
    with contextlib.suppress(ProcessLookupError):
        os.killpg(ti.pid, signal.SIGTERM)
    return MarkResult(ti, killed_pid=ti.pid)
