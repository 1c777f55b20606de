"""The one state machine of sparkflow: task-instance and dag-run states, their groups, and legal moves.

Every state change in the metastore goes through ``metastore.store`` which calls :func:`check_transition`
before its compare-and-set UPDATE. No UI colours live here (the web layer owns presentation).
"""

from __future__ import annotations

from enum import StrEnum

from sparkflow.exceptions import InvalidTransition


class TaskState(StrEnum):
    NONE = "none"  # created with the run (or cleared); the scheduler has not looked at it yet
    SCHEDULED = "scheduled"  # scheduler: dependencies met, waiting for a slot
    QUEUED = "queued"  # scheduler: handed to an executor
    RUNNING = "running"  # task runner: a try is executing
    SUCCESS = "success"  # task runner: the try finished cleanly
    FAILED = "failed"  # task runner (no tries left) or scheduler (lost/timed out, no tries left)
    UP_FOR_RETRY = "up_for_retry"  # task runner / scheduler: a try failed, another one is due after retry_delay
    UP_FOR_RESCHEDULE = "up_for_reschedule"  # task runner: a sensor in reschedule mode gave its slot back
    UPSTREAM_FAILED = "upstream_failed"  # scheduler: the trigger rule can no longer be met because upstream failed
    SKIPPED = "skipped"  # task runner (skip exception, branch, short-circuit) or scheduler (skip propagation)
    REMOVED = "removed"  # scheduler: the task no longer exists in the DAG file


class RunState(StrEnum):
    QUEUED = "queued"  # trigger/scheduler: created, not started (max_active_runs may hold it)
    RUNNING = "running"  # scheduler: at least one task may run
    SUCCESS = "success"  # scheduler: every leaf task ended in success or skipped
    FAILED = "failed"  # scheduler: some leaf task failed or upstream_failed


TASK_TERMINAL: frozenset[TaskState] = frozenset(
    {TaskState.SUCCESS, TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.SKIPPED, TaskState.REMOVED}
)
# A task in one of these holds (or is about to hold) an executor slot.
TASK_ACTIVE: frozenset[TaskState] = frozenset({TaskState.QUEUED, TaskState.RUNNING})
# Waiting for the scheduler to decide again (time-based).
TASK_WAITING: frozenset[TaskState] = frozenset({TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RESCHEDULE})
# Upstream states that count as "failed" for trigger rules.
TASK_FAILED_LIKE: frozenset[TaskState] = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED})

RUN_TERMINAL: frozenset[RunState] = frozenset({RunState.SUCCESS, RunState.FAILED})
RUN_ACTIVE: frozenset[RunState] = frozenset({RunState.QUEUED, RunState.RUNNING})

_T = TaskState
TASK_TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # none -> failed: the scheduler cannot expand a mapped task (not a list or dict, more than max_map_length)
    _T.NONE: frozenset({_T.SCHEDULED, _T.SKIPPED, _T.UPSTREAM_FAILED, _T.REMOVED, _T.FAILED}),
    _T.SCHEDULED: frozenset({_T.QUEUED, _T.NONE, _T.SKIPPED, _T.UPSTREAM_FAILED, _T.REMOVED}),
    # queued -> scheduled: the executor lost the task before it started (scheduler restart adopts/resets)
    _T.QUEUED: frozenset({_T.RUNNING, _T.SCHEDULED, _T.FAILED, _T.UP_FOR_RETRY}),
    _T.RUNNING: frozenset({_T.SUCCESS, _T.FAILED, _T.UP_FOR_RETRY, _T.SKIPPED, _T.UP_FOR_RESCHEDULE}),
    _T.UP_FOR_RETRY: frozenset({_T.SCHEDULED, _T.FAILED}),
    # up_for_reschedule -> queued: the scheduler hands a due sensor straight back to an executor, continuing the
    # same try (a reschedule never consumes a retry, so it skips the scheduled -> queued step that counts tries)
    _T.UP_FOR_RESCHEDULE: frozenset({_T.SCHEDULED, _T.QUEUED, _T.FAILED}),
    _T.SUCCESS: frozenset(),
    _T.FAILED: frozenset(),
    _T.UPSTREAM_FAILED: frozenset(),
    _T.SKIPPED: frozenset(),
    _T.REMOVED: frozenset({_T.NONE}),
}

_R = RunState
RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    _R.QUEUED: frozenset({_R.RUNNING, _R.FAILED}),
    _R.RUNNING: frozenset({_R.SUCCESS, _R.FAILED}),
    _R.SUCCESS: frozenset(),
    _R.FAILED: frozenset(),
}


# Operations that leave the table on purpose, each audited by its own store method (event "clear" / "mark").
# clear: a task that is not queued or running goes back to none (its tries are kept; the next try is try+1).
TASK_CLEARABLE: frozenset[TaskState] = frozenset(TaskState) - TASK_ACTIVE
# mark: a user sets the outcome by hand; a running task is then killed by whoever marked it.
TASK_MARK_TARGETS: frozenset[TaskState] = frozenset({TaskState.SUCCESS, TaskState.FAILED})
# time-out: a running run that outlives its DAG's dagrun_timeout fails, and each of its unfinished tasks is
# skipped (a running one is killed), as in Airflow.
TASK_UNFINISHED: frozenset[TaskState] = frozenset(TaskState) - TASK_TERMINAL
# clear of some of a run's tasks re-opens the run: a finished run is queued again, an active one stays as it is.
RUN_CLEAR_TRANSITIONS: dict[RunState, RunState] = {
    RunState.SUCCESS: RunState.QUEUED,
    RunState.FAILED: RunState.QUEUED,
    RunState.QUEUED: RunState.QUEUED,
    RunState.RUNNING: RunState.RUNNING,
}


def check_transition(old: TaskState, new: TaskState) -> None:
    """Raise InvalidTransition unless the task state machine allows ``old -> new``.

    Leaving a terminal state is not a transition: it is a *clear* (re-run) or a *mark*, each an audited
    operation of its own in ``metastore.store``; so is a run's *time-out*, which skips its unfinished tasks.
    """
    if new not in TASK_TRANSITIONS[old]:
        raise InvalidTransition(f"task instance cannot move from '{old}' to '{new}'")


def check_run_transition(old: RunState, new: RunState) -> None:
    if new not in RUN_TRANSITIONS[old]:
        raise InvalidTransition(f"dag run cannot move from '{old}' to '{new}'")


def check_clear(old: TaskState) -> None:
    if old not in TASK_CLEARABLE:
        raise InvalidTransition(f"task instance in '{old}' cannot be cleared; it is {old} (mark it failed first)")


def check_mark(old: TaskState, new: TaskState) -> None:
    if new not in TASK_MARK_TARGETS:
        raise InvalidTransition(f"task instance cannot be marked '{new}'; mark it success or failed")
    if old is new:
        raise InvalidTransition(f"task instance is already '{new}'")
