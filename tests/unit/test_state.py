"""The state machine (sparkflow.state): every allowed and every refused move of a task instance and of a run,
as the table says and as the store enforces it on SQLite and PostgreSQL; and the operations that leave the table
on purpose (clear, mark)."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import update

from sparkflow import DAG, EmptyOperator
from sparkflow.exceptions import InvalidTransition
from sparkflow.metastore import queries
from sparkflow.metastore import schema as t
from sparkflow.metastore.records import TIKey
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import (
    RUN_TRANSITIONS,
    TASK_ACTIVE,
    TASK_TRANSITIONS,
    RunState,
    TaskState,
    check_clear,
    check_mark,
    check_run_transition,
    check_transition,
)
from tests.helpers import NOW

TASK_PAIRS = list(itertools.product(TaskState, TaskState))
RUN_PAIRS = list(itertools.product(RunState, RunState))

# The table, written out once more by hand: a change to the state machine has to change this too, on purpose.
ALLOWED = {
    ("none", "scheduled"), ("none", "skipped"), ("none", "upstream_failed"), ("none", "removed"), ("none", "failed"),
    ("scheduled", "queued"), ("scheduled", "none"), ("scheduled", "skipped"), ("scheduled", "upstream_failed"),
    ("scheduled", "removed"),
    ("queued", "running"), ("queued", "scheduled"), ("queued", "failed"), ("queued", "up_for_retry"),
    ("running", "success"), ("running", "failed"), ("running", "up_for_retry"), ("running", "skipped"),
    ("running", "up_for_reschedule"),
    ("up_for_retry", "scheduled"), ("up_for_retry", "failed"),
    ("up_for_reschedule", "scheduled"), ("up_for_reschedule", "queued"), ("up_for_reschedule", "failed"),
    ("removed", "none"),
}
RUN_ALLOWED = {("queued", "running"), ("queued", "failed"), ("running", "success"), ("running", "failed")}


def test_every_state_has_a_row_in_the_tables() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskState)
    assert set(RUN_TRANSITIONS) == set(RunState)
    assert {(o.value, n.value) for o, n in TASK_PAIRS if n in TASK_TRANSITIONS[o]} == ALLOWED


@pytest.mark.parametrize(("old", "new"), TASK_PAIRS, ids=[f"{o}->{n}" for o, n in TASK_PAIRS])
def test_a_task_move_is_allowed_exactly_when_the_table_lists_it(old: TaskState, new: TaskState) -> None:
    if (old.value, new.value) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"cannot move from '{old}' to '{new}'"):
            check_transition(old, new)


@pytest.mark.parametrize(("old", "new"), RUN_PAIRS, ids=[f"{o}->{n}" for o, n in RUN_PAIRS])
def test_a_run_move_is_allowed_exactly_when_the_table_lists_it(old: RunState, new: RunState) -> None:
    if (old.value, new.value) in RUN_ALLOWED:
        check_run_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"dag run cannot move from '{old}' to '{new}'"):
            check_run_transition(old, new)


@pytest.mark.parametrize("old", list(TaskState))
def test_clear_takes_anything_but_a_queued_or_running_task(old: TaskState) -> None:
    if old in TASK_ACTIVE:
        with pytest.raises(InvalidTransition, match="cannot be cleared"):
            check_clear(old)
    else:
        check_clear(old)


@pytest.mark.parametrize(("old", "new"), TASK_PAIRS, ids=[f"{o}->{n}" for o, n in TASK_PAIRS])
def test_mark_sets_success_or_failed_from_any_other_state(old: TaskState, new: TaskState) -> None:
    if new in (TaskState.SUCCESS, TaskState.FAILED) and old is not new:
        check_mark(old, new)
    else:
        with pytest.raises(InvalidTransition):
            check_mark(old, new)


def test_the_store_makes_every_allowed_task_move_and_refuses_every_other(metastore) -> None:  # type: ignore[no-untyped-def]
    """One task instance per (old, new) pair, put in ``old`` by hand, then moved through Store.set_task_state:
    an allowed move is written and audited, a refused one raises and leaves the row and the audit trail alone."""
    names = {pair: f"t_{pair[0].value}__{pair[1].value}" for pair in TASK_PAIRS}
    with DAG("moves", start_date=NOW, schedule=None) as dag:
        for name in names.values():
            EmptyOperator(task_id=name)
    metastore.dags.sync_dags([dag], [], [])
    run = trigger_dag(metastore, dag, NOW)
    with metastore.db.write() as conn:
        for (old, _), name in names.items():
            conn.execute(update(t.task_instance).where(t.task_instance.c.run_id == run.run_id,
                                                       t.task_instance.c.task_id == name).values(state=old))
    for (old, new), name in names.items():
        key = TIKey("moves", run.run_id, name)
        if (old.value, new.value) in ALLOWED:
            written = metastore.store.set_task_state(key, old, new, "test", now=NOW)
            assert written is not None and written.state is new, (old, new)
        else:
            with pytest.raises(InvalidTransition):
                metastore.store.set_task_state(key, old, new, "test", now=NOW)
            assert queries.get_task_instance(metastore.db, key).state is old
    events = {(e.task_id, e.old_state, e.new_state) for e in queries.state_events(metastore.db, "moves", run.run_id)
              if e.actor == "test"}
    assert events == {(names[(TaskState(o), TaskState(n))], o, n) for o, n in ALLOWED}


@pytest.mark.parametrize(("old", "new"), sorted(RUN_ALLOWED))
def test_the_store_makes_every_allowed_run_move(metastore, old: str, new: str) -> None:  # type: ignore[no-untyped-def]
    with DAG(f"run_{old}_{new}", start_date=NOW, schedule=None) as dag:
        EmptyOperator(task_id="a")
    metastore.dags.sync_dags([dag], [], [])
    run = trigger_dag(metastore, dag, NOW)
    if old == "running":
        run = metastore.store.set_run_state(run, RunState.RUNNING, "test", now=NOW)
    written = metastore.store.set_run_state(run, RunState(new), "test", now=NOW)
    assert written is not None and written.state is RunState(new)
    for refused in set(RunState) - {RunState(s) for o, s in RUN_ALLOWED if o == new}:
        with pytest.raises(InvalidTransition):
            metastore.store.set_run_state(written, refused, "test")
    assert queries.get_run(metastore.db, dag.dag_id, run.run_id).state is RunState(new)
