"""PostgreSQL row locks of the scheduler (two schedulers on one database): an iteration holds its DAGs' rows
(FOR UPDATE SKIP LOCKED) so another skips them, and a batch of decisions skips task instances someone else has
locked instead of waiting (no deadlock between schedulers); the compare-and-set still refuses a second move."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from sparkflow import DAG, EmptyOperator
from sparkflow.metastore import queries
from sparkflow.metastore import schema as t
from sparkflow.metastore.store import TaskStateChange
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import TaskState

pytestmark = [pytest.mark.postgres, pytest.mark.parametrize("db_backend", ["postgres"], indirect=True)]
NOW = datetime(2024, 3, 1, tzinfo=UTC)


def make_run(metastore, dag_id: str):  # type: ignore[no-untyped-def]
    with DAG(dag_id, start_date=datetime(2024, 1, 1), schedule=None) as dag:
        EmptyOperator(task_id="a")
    metastore.dags.sync_dags([dag], [], [])
    return trigger_dag(metastore, dag, NOW)


def test_an_iteration_holds_its_dags_until_it_ends(metastore) -> None:  # type: ignore[no-untyped-def]
    one, two = make_run(metastore, "one"), make_run(metastore, "two")
    store = metastore.store
    with store.scheduling_claims() as first:
        assert first.runs([one]) == [one]
        with store.scheduling_claims() as second:
            assert second.runs([one, two]) == [two]  # "one" is held by the first iteration: skipped, no wait
            assert first.runs([one, two]) == [one]  # and the second holds "two" now
    with store.scheduling_claims() as third:
        assert third.runs([one, two]) == [one, two]  # released when the iterations ended


def test_a_batch_skips_a_locked_task_instance_and_the_cas_refuses_a_second_move(metastore) -> None:  # type: ignore[no-untyped-def]
    run = make_run(metastore, "locked")
    key = queries.task_instances(metastore.db, "locked", run.run_id)[0].key
    change = TaskStateChange(key, TaskState.NONE, TaskState.SCHEDULED, "scheduler", now=NOW)
    with metastore.db.engine.connect() as other, other.begin():  # another scheduler holds the row
        other.execute(select(t.task_instance).where(t.task_instance.c.task_id == "a").with_for_update())
        assert metastore.store.set_task_states([change]) == [None]  # skipped at once, not blocked
    assert metastore.store.set_task_states([change])[0] is not None
    assert metastore.store.set_task_states([change]) == [None]  # already moved: compare-and-set refuses
    assert queries.get_task_instance(metastore.db, key).state is TaskState.SCHEDULED


def test_alike_changes_move_in_one_batch_that_skips_a_locked_row_and_refuses_a_moved_one(metastore) -> None:  # type: ignore[no-untyped-def]
    """A fan-out's tasks moving none -> scheduled -> queued together (one UPDATE for all of them): a row another
    scheduler holds is skipped, one someone else moved is refused, and every change moved is audited."""
    with DAG("fan", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        for name in "abcde":
            EmptyOperator(task_id=name)
    metastore.dags.sync_dags([dag], [], [])
    run = trigger_dag(metastore, dag, NOW)
    keys = {ti.task_id: ti.key for ti in queries.task_instances(metastore.db, "fan", run.run_id)}
    assert metastore.store.set_task_state(keys["b"], TaskState.NONE, TaskState.SKIPPED, "someone else")
    queued = dict(try_number=1, queued_at=NOW, executor="celery", next_try_at=None)
    changes = [change for name in "abcde" for change in (
        TaskStateChange(keys[name], TaskState.NONE, TaskState.SCHEDULED, "scheduler", now=NOW, expected_try=0),
        TaskStateChange(keys[name], TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", now=NOW, fields=queued))]
    with metastore.db.engine.connect() as other, other.begin():  # another scheduler holds "c"
        other.execute(select(t.task_instance).where(t.task_instance.c.task_id == "c").with_for_update())
        moved = metastore.store.set_task_states(changes)
    assert [m.state if m else None for m in moved] == [TaskState.QUEUED] * 2 + [None] * 4 + [TaskState.QUEUED] * 4
    states = {ti.task_id: ti.state for ti in queries.task_instances(metastore.db, "fan", run.run_id)}
    assert states == {"a": TaskState.QUEUED, "b": TaskState.SKIPPED, "c": TaskState.NONE, "d": TaskState.QUEUED,
                      "e": TaskState.QUEUED}
    events = [(e.task_id, e.try_number, e.old_state, e.new_state)
              for e in queries.state_events(metastore.db, "fan", run.run_id) if e.actor == "scheduler"]
    assert sorted(events) == [(name, try_number, old, new) for name in "ade" for try_number, old, new in
                              ((0, "none", "scheduled"), (1, "scheduled", "queued"))]
    assert metastore.store.set_task_states(changes[4:6])[0] is not None  # "c", once it is free
    assert metastore.store.set_task_states(changes) == [None] * 10  # all moved already: every one refused


def test_two_schedulers_recording_one_new_dag_at_once_both_succeed(metastore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Schedulers started together parse the same new DAG: the second insert of its row waits for the first and
    does nothing, instead of failing the second scheduler with a duplicate key."""
    dag = DAG("twice", start_date=datetime(2024, 1, 1), schedule=None)
    EmptyOperator(task_id="a", dag=dag)
    dag.fileloc = str(tmp_path / "twice.py")
    with metastore.db.write() as first:  # the first scheduler's transaction: row inserted, not yet committed
        first.execute(insert(t.dag).values(dag_id="twice", fileloc=dag.fileloc, is_paused=False, is_active=True))
        errors: list[BaseException] = []
        second = threading.Thread(target=_capture, args=(errors, metastore.dags.sync_dags, [dag], [], [dag.fileloc]))
        second.start()
        second.join(0.5)
        assert second.is_alive()  # waiting on the first transaction's row
    second.join(10)
    assert not second.is_alive() and errors == []
    assert queries.get_dag(metastore.db, "twice").is_active


def _capture(errors: list[BaseException], func, *args) -> None:  # type: ignore[no-untyped-def]
    try:
        func(*args)
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)
