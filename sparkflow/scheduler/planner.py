"""Pure scheduling decisions: which tasks of a run may start, which are skipped or upstream_failed, and the
run's resulting state. No I/O, no clock of its own: everything comes in as arguments, so it is fast to test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.trigger_rule import TriggerRule
from sparkflow.state import TASK_FAILED_LIKE, TASK_TERMINAL, TASK_WAITING, RunState, TaskState

TR = TriggerRule


class UpstreamCounts(NamedTuple):
    total: int
    success: int = 0
    skipped: int = 0
    failed: int = 0  # failed + upstream_failed
    failed_only: int = 0  # failed itself (one_done counts only real outcomes)
    done: int = 0  # in a terminal state

    @classmethod
    def of(cls, upstream_states: list[TaskState]) -> UpstreamCounts:
        # One pass with plain counters: the loop evaluates every waiting task of a run each iteration (hot path).
        success = skipped = failed = failed_only = done = 0
        for state in upstream_states:
            if state in TASK_TERMINAL:
                done += 1
                if state is TaskState.SUCCESS:
                    success += 1
                elif state is TaskState.SKIPPED:
                    skipped += 1
                elif state in TASK_FAILED_LIKE:
                    failed += 1
                    failed_only += state is TaskState.FAILED
        return cls(len(upstream_states), success, skipped, failed, failed_only, done)


def evaluate_trigger_rule(rule: TriggerRule, up: UpstreamCounts,
                          setups: UpstreamCounts | None = None) -> TaskState | None:
    """What the task should become given its direct upstream: SCHEDULED (may run), SKIPPED, UPSTREAM_FAILED,
    or None (not decided yet: wait). Airflow's semantics, including skip propagation. ``setups``: the states of
    the upstream tasks that are setups (a teardown's rule looks at them)."""
    if up.total == 0 or rule is TR.ALWAYS:
        return TaskState.SCHEDULED
    all_done = up.done == up.total
    if rule is TR.ALL_DONE_SETUP_SUCCESS:
        if not all_done:
            return None
        return TaskState.SKIPPED if setups is not None and setups.total and not setups.success else \
            TaskState.SCHEDULED
    if rule is TR.ALL_SUCCESS:
        if up.failed:
            return TaskState.UPSTREAM_FAILED
        if up.skipped:
            return TaskState.SKIPPED
        return TaskState.SCHEDULED if up.success == up.total else None
    if rule is TR.ALL_FAILED:
        if up.success or up.skipped:
            return TaskState.SKIPPED
        return TaskState.SCHEDULED if all_done else None
    if rule is TR.ALL_DONE:
        return TaskState.SCHEDULED if all_done else None
    if rule is TR.ONE_SUCCESS:
        if up.success:
            return TaskState.SCHEDULED
        if all_done:
            return TaskState.SKIPPED if up.skipped == up.total else TaskState.UPSTREAM_FAILED
        return None
    if rule is TR.ONE_FAILED:
        if up.failed:
            return TaskState.SCHEDULED
        return TaskState.SKIPPED if all_done else None
    if rule is TR.ONE_DONE:
        if up.success or up.failed_only:
            return TaskState.SCHEDULED
        return TaskState.SKIPPED if all_done else None
    if rule is TR.NONE_FAILED:
        if up.failed:
            return TaskState.UPSTREAM_FAILED
        return TaskState.SCHEDULED if all_done else None
    if rule is TR.NONE_FAILED_MIN_ONE_SUCCESS:
        if up.failed:
            return TaskState.UPSTREAM_FAILED
        if all_done:
            return TaskState.SCHEDULED if up.success else TaskState.SKIPPED
        return None
    if rule is TR.NONE_SKIPPED:
        if up.skipped:
            return TaskState.SKIPPED
        return TaskState.SCHEDULED if all_done else None
    raise AssertionError(f"unhandled trigger rule {rule}")


TIRef = str | tuple[str, int]  # one task instance of a run: its task_id, or (task_id, map_index) when mapped


def task_of(ref: TIRef) -> str:
    return ref if isinstance(ref, str) else ref[0]


@dataclass
class RunPlan:
    """Changes for one run: new states for instances in NONE, waiting instances whose time has come, and mapped
    tasks to expand now (their upstream is done: the loop reads the lengths and creates the instances)."""

    decisions: dict[TIRef, TaskState] = field(default_factory=dict)
    retry_due: list[TIRef] = field(default_factory=list)
    expand: list[str] = field(default_factory=list)
    run_state: RunState | None = None  # the run's final state, when every task is done


def plan_run(
    dag: DAG,
    states: Mapping[TIRef, TaskState],
    next_try_at: Mapping[TIRef, datetime | None],
    now: datetime,
    past_ok: Mapping[str, bool] | None = None,
) -> RunPlan:
    """Decide the next step of one run.

    ``states`` holds every task instance's state; ``next_try_at`` when up_for_retry/up_for_reschedule instances
    may go again; ``past_ok`` for depends_on_past tasks whether the previous run's instance succeeded or skipped.
    Decisions are applied in topological order within this call, so skips and upstream failures propagate
    through a whole chain in one pass. A mapped task's trigger rule counts every instance of its upstream
    tasks (inside a mapped task group, instance i looks at instance i of its upstream in the group).
    """
    plan = RunPlan()
    current = dict(states)
    # Without expanded mapped instances every ref is a task id (the common case, planned without the index).
    by_task: dict[str, list[TIRef]] | None = None
    if not all(isinstance(ref, str) for ref in current):
        by_task = {}
        for ref in current:
            by_task.setdefault(task_of(ref), []).append(ref)
    for task in dag.topological_order():
        tid = task.task_id
        refs = by_task.get(tid, ()) if by_task is not None else (tid,) if tid in current else ()
        for ref in refs:
            state = current[ref]
            if state is TaskState.NONE:
                setups = None
                if task.trigger_rule is TR.ALL_DONE_SETUP_SUCCESS:
                    setup_ids = {u for u in task.upstream_task_ids if dag.task_dict[u].is_setup}
                    setups = UpstreamCounts.of(_upstream_states(dag, setup_ids, ref, by_task, current))
                decision = evaluate_trigger_rule(task.trigger_rule, UpstreamCounts.of(
                    _upstream_states(dag, task.upstream_task_ids, ref, by_task, current)), setups)
                if decision is TaskState.SCHEDULED and task.depends_on_past and past_ok is not None:
                    if not past_ok.get(tid, True):
                        decision = None
                if decision is TaskState.SCHEDULED and isinstance(ref, str) and task.is_mapped:
                    plan.expand.append(tid)  # not decided here: the loop expands it into instances first
                    continue
                if decision is not None:
                    plan.decisions[ref] = decision
                    current[ref] = decision
            elif state in TASK_WAITING:
                due = next_try_at.get(ref)
                if due is None or due <= now:
                    plan.retry_due.append(ref)
    plan.run_state = None if plan.expand else run_state(dag, current)
    return plan


def _upstream_states(dag: DAG, upstream_ids: set[str], ref: TIRef, by_task: Mapping[str, list[TIRef]] | None,
                     current: Mapping[TIRef, TaskState]) -> list[TaskState]:
    if by_task is None:  # no expanded instances: each upstream is one task instance, named by its task id
        return [current[u] for u in upstream_ids if u in current]
    group = dag.task_dict[task_of(ref)].mapped_group_id
    if isinstance(ref, str):
        if group is None:
            return [current[r] for u in upstream_ids for r in by_task.get(u, ())]
        # A task of a mapped group expands once its upstream in the group has expanded; each of its instances
        # then waits for the same instance upstream.
        return [current[r] for u in upstream_ids for r in by_task.get(u, ())
                if not (dag.task_dict[u].mapped_group_id == group and u not in current)]
    states = []
    for u in upstream_ids:
        if group is not None and dag.task_dict[u].mapped_group_id == group and (u, ref[1]) in current:
            states.append(current[(u, ref[1])])  # the same instance of an upstream in the mapped group
        else:
            states.extend(current[r] for r in by_task.get(u, ()))
    return states


def _leaves_for_run_state(dag: DAG) -> set[str]:
    """Airflow's effective leaves: a teardown does not decide the run (unless on_failure_fail_dagrun), so the
    work before it counts as a leaf."""
    def ignorable(tid: str) -> bool:
        task = dag.task_dict[tid]
        return task.is_teardown and not task.on_failure_fail_dagrun

    leaves = {t.task_id for t in dag.tasks if not ignorable(t.task_id)
              and all(ignorable(d) for d in t.downstream_task_ids if d in dag.task_dict)}
    return leaves or {t.task_id for t in dag.leaves}


def run_state(dag: DAG, states: Mapping[TIRef, TaskState]) -> RunState | None:
    """SUCCESS or FAILED once every task instance is terminal (failed if an instance of a leaf failed), else
    None."""
    if any(s not in TASK_TERMINAL for s in states.values()):
        return None
    leaves = _leaves_for_run_state(dag)
    if any(state in TASK_FAILED_LIKE and task_of(ref) in leaves for ref, state in states.items()):
        return RunState.FAILED
    return RunState.SUCCESS
