"""metastore.store, the writer of runs and task instances, and the small writers beside it (pools, XComs,
users): what each write returns, what a compare-and-set refuses, what goes in one transaction. On SQLite and
PostgreSQL (the metastore fixture runs each test on both)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sparkflow.definitions.loader import collect_dags
from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.metastore.store import TaskStateChange
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import RunState, TaskState
from tests.helpers import NOW

TWO_TASKS = """
    from datetime import datetime
    from sparkflow import DAG, EmptyOperator

    with DAG("{dag_id}", start_date=datetime(2024, 1, 1)) as dag:
        EmptyOperator(task_id="a")
        EmptyOperator(task_id="b")
"""


def load(path: Path, metastore) -> dict:  # type: ignore[no-untyped-def]
    bag = collect_dags(path.parent, only_file=path)
    assert not bag.import_errors, bag.import_errors
    metastore.dags.sync_dags(bag.dags.values(), [], [str(path)])
    return bag.dags


def new_run(metastore, write_dag, dag_id: str):  # type: ignore[no-untyped-def]
    dags = load(write_dag(dag_id, TWO_TASKS.format(dag_id=dag_id)), metastore)
    return dags[dag_id], trigger_dag(metastore, dags[dag_id], NOW)


# -- task instances: one compare-and-set -------------------------------------------------------------------------
def test_a_state_change_returns_the_task_instance_as_written(metastore, write_dag) -> None:  # type: ignore[no-untyped-def]
    _, run = new_run(metastore, write_dag, "written")
    key = TIKey("written", run.run_id, "a")
    store = metastore.store
    scheduled = store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test", now=NOW)
    assert scheduled == queries.get_task_instance(metastore.db, key)
    assert (scheduled.state, scheduled.updated_at) == (TaskState.SCHEDULED, NOW)
    queued = store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "test", now=NOW, try_number=1)
    assert (queued.state, queued.try_number) == (TaskState.QUEUED, 1)
    running = store.set_task_state(key, TaskState.QUEUED, TaskState.RUNNING, "test", now=NOW, expected_try=1,
                                   hostname="h", pid=7)
    assert running == queries.get_task_instance(metastore.db, key)
    assert (running.start_date, running.last_heartbeat_at, running.hostname, running.pid) == (NOW, NOW, "h", 7)
    later = NOW + timedelta(seconds=90)
    done = store.set_task_state(key, TaskState.RUNNING, TaskState.SUCCESS, "test", now=later, expected_try=1)
    assert done == queries.get_task_instance(metastore.db, key)
    assert (done.end_date, done.duration) == (later, 90.0)
    (one_try,) = queries.task_tries(metastore.db, key)
    assert (one_try.try_number, one_try.state, one_try.duration, one_try.hostname) == (1, "success", 90.0, "h")


def test_a_wrong_try_or_an_unknown_task_instance_is_refused(metastore, write_dag) -> None:  # type: ignore[no-untyped-def]
    _, run = new_run(metastore, write_dag, "refused")
    key = TIKey("refused", run.run_id, "a")
    assert metastore.store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test", expected_try=3) is None
    assert queries.get_task_instance(metastore.db, key).state is TaskState.NONE
    assert [e for e in queries.state_events(metastore.db, "refused", run.run_id) if e.task_id == "a"] == []
    with pytest.raises(NotFound, match="does not exist"):
        metastore.store.set_task_state(TIKey("refused", run.run_id, "nope"), TaskState.NONE, TaskState.SCHEDULED, "x")


def test_state_changes_of_one_iteration_are_one_all_or_nothing_transaction(settings, metastore, write_dag) -> None:
    path = write_dag("batch", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("batch", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="a")
            EmptyOperator(task_id="b")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["batch"], datetime.now(UTC))
    a, b = TIKey("batch", run.run_id, "a"), TIKey("batch", run.run_id, "b")
    assert metastore.store.set_task_state(b, TaskState.NONE, TaskState.SKIPPED, "someone else")
    moved = metastore.store.set_task_states([
        TaskStateChange(a, TaskState.NONE, TaskState.SCHEDULED, "scheduler"),
        TaskStateChange(a, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", fields={"try_number": 1}),
        TaskStateChange(b, TaskState.NONE, TaskState.SCHEDULED, "scheduler"),  # lost the compare-and-set
        TaskStateChange(b, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", fields={"try_number": 1}),
    ])
    assert [bool(m) for m in moved] == [True, True, False, False]
    ti = queries.get_task_instance(metastore.db, a)
    assert (ti.state, ti.try_number) == (TaskState.QUEUED, 1)
    assert queries.get_task_instance(metastore.db, b).state is TaskState.SKIPPED
    events = [(e.task_id, e.old_state, e.new_state) for e in queries.state_events(metastore.db, "batch", run.run_id)
              if e.actor == "scheduler"]
    assert events == [("a", "none", "scheduled"), ("a", "scheduled", "queued")]


def test_consecutive_changes_of_one_task_are_one_compare_and_set_each_audited(settings, metastore, write_dag) -> None:
    path = write_dag("merged", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("merged", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="a")
            EmptyOperator(task_id="b")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["merged"], datetime.now(UTC))
    a, b = TIKey("merged", run.run_id, "a"), TIKey("merged", run.run_id, "b")
    moved = metastore.store.set_task_states([
        TaskStateChange(a, TaskState.NONE, TaskState.SCHEDULED, "scheduler", expected_try=0),
        TaskStateChange(b, TaskState.NONE, TaskState.SCHEDULED, "scheduler", expected_try=5),  # wrong try
        TaskStateChange(a, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", fields={"try_number": 1}),
        TaskStateChange(b, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", fields={"try_number": 6}),
    ])
    assert [bool(m) for m in moved] == [True, False, True, False]
    assert (queries.get_task_instance(metastore.db, a).state, queries.get_task_instance(metastore.db, a).try_number) \
        == (TaskState.QUEUED, 1)
    assert queries.get_task_instance(metastore.db, b).state is TaskState.NONE
    events = [(e.task_id, e.try_number, e.old_state, e.new_state)
              for e in queries.state_events(metastore.db, "merged", run.run_id) if e.actor == "scheduler"]
    assert events == [("a", 0, "none", "scheduled"), ("a", 1, "scheduled", "queued")]
    # The same again: the compare-and-set refuses, nothing is written.
    assert metastore.store.set_task_states([
        TaskStateChange(a, TaskState.NONE, TaskState.SCHEDULED, "scheduler", expected_try=0),
        TaskStateChange(a, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", fields={"try_number": 1}),
    ]) == [None, None]
    missing = TIKey("merged", run.run_id, "nope")
    with pytest.raises(NotFound):
        metastore.store.set_task_states([TaskStateChange(missing, TaskState.NONE, TaskState.SCHEDULED, "x")])


def test_start_try_is_one_checked_transaction(settings, metastore, write_dag) -> None:
    path = write_dag("start", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("start", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="a")
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["start"], datetime.now(UTC))
    key = TIKey("start", run.run_id, "a")
    ti, started_run = metastore.store.start_try(key, 1, "task_runner")
    assert started_run is None and ti.state is TaskState.NONE  # not queued: nothing written
    assert metastore.store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "scheduler")
    assert metastore.store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", try_number=1)
    ti = queries.get_task_instance(metastore.db, key)
    metastore.xcoms.set_xcom(ti, "stale", 1)
    assert metastore.store.start_try(key, 2, "task_runner")[1] is None  # another try
    ti, started_run = metastore.store.start_try(key, 1, "task_runner", hostname="h", pid=42)
    assert started_run is not None and started_run.id == run.id
    assert ti == queries.get_task_instance(metastore.db, key)  # the record returned is the row as written
    assert (ti.state, ti.try_number, ti.hostname, ti.pid) == (TaskState.RUNNING, 1, "h", 42)
    assert queries.list_xcoms(metastore.db, "start", run.run_id) == []
    assert [(t.try_number, t.state) for t in queries.task_tries(metastore.db, key)] == [(1, "running")]
    assert metastore.store.start_try(key, 1, "task_runner")[1] is None  # already running: not twice
    # The outcome compares against the runner's own record instead of reading the row first.
    assert metastore.store.set_task_state(key, TaskState.RUNNING, TaskState.SUCCESS, "task_runner", known=ti,
                                          expected_try=1)
    done = queries.get_task_instance(metastore.db, key)
    assert done.state is TaskState.SUCCESS and done.duration is not None
    assert not metastore.store.set_task_state(key, TaskState.RUNNING, TaskState.FAILED, "task_runner", known=ti)
    assert [e.new_state for e in queries.state_events(metastore.db, "start", run.run_id) if e.task_id == "a"] == [
        "scheduled", "queued", "running", "success"]


def test_compare_and_set_refuses_a_stale_expected_state(settings, metastore, write_dag) -> None:
    path = write_dag("cas", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator

        with DAG("cas", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="only")
    """)
    bag = collect_dags(path.parent, only_file=path)
    run = trigger_dag(metastore, bag.dags["cas"], NOW)
    key = TIKey("cas", run.run_id, "only")
    store = metastore.store
    assert store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "test")
    assert not store.set_task_state(key, TaskState.NONE, TaskState.SKIPPED, "test")  # someone moved it first
    assert queries.get_task_instance(metastore.db, key).state is TaskState.SCHEDULED
    with pytest.raises(Exception, match="cannot move from 'scheduled' to 'success'"):
        store.set_task_state(key, TaskState.SCHEDULED, TaskState.SUCCESS, "test")


# -- runs --------------------------------------------------------------------------------------------------------
def test_a_run_state_change_returns_the_run_as_written_or_none_when_stale(metastore, write_dag) -> None:  # type: ignore[no-untyped-def]
    _, run = new_run(metastore, write_dag, "runs")
    started = metastore.store.set_run_state(run, RunState.RUNNING, "test", now=NOW)
    assert started == queries.get_run(metastore.db, "runs", run.run_id)
    assert (started.state, started.start_date) == (RunState.RUNNING, NOW)
    assert metastore.store.set_run_state(run, RunState.RUNNING, "test") is None  # ``run`` says queued: stale
    done = metastore.store.set_run_state(started, RunState.SUCCESS, "test", now=NOW + timedelta(minutes=1))
    assert (done.state, done.end_date) == (RunState.SUCCESS, NOW + timedelta(minutes=1))


def test_a_run_time_out_returns_the_failed_run_and_what_it_skipped(metastore, write_dag) -> None:  # type: ignore[no-untyped-def]
    _, run = new_run(metastore, write_dag, "late")
    started = metastore.store.set_run_state(run, RunState.RUNNING, "test", now=NOW)
    a = TIKey("late", run.run_id, "a")
    metastore.store.set_task_state(a, TaskState.NONE, TaskState.SKIPPED, "test")
    failed, skipped = metastore.store.time_out_run(started, "test", "too slow", now=NOW)
    assert failed == queries.get_run(metastore.db, "late", run.run_id) and failed.state is RunState.FAILED
    assert [(ti.task_id, ti.state) for ti in skipped] == [("b", TaskState.NONE)]  # as it was before
    assert queries.get_task_instance(metastore.db, TIKey("late", run.run_id, "b")).state is TaskState.SKIPPED
    assert metastore.store.time_out_run(started, "test", "again", now=NOW) is None


# -- pools, XComs, users -----------------------------------------------------------------------------------------
def test_pools_are_created_resized_and_deleted_but_not_the_default(metastore) -> None:  # type: ignore[no-untyped-def]
    metastore.pools.set_pool("spark", 2, "the cluster")
    metastore.pools.set_pool("spark", 4)
    assert {p.pool: (p.slots, p.description) for p in queries.list_pools(metastore.db)}["spark"] == (4, "the cluster")
    metastore.pools.delete_pool("spark")
    with pytest.raises(NotFound, match="pool 'spark' does not exist"):
        metastore.pools.delete_pool("spark")
    with pytest.raises(UserError, match="cannot be deleted"):
        metastore.pools.delete_pool("default_pool")
    with pytest.raises(UserError, match="slots -1 is negative"):
        metastore.pools.set_pool("spark", -1)
    with pytest.raises(UserError, match="pool name 'a b' is invalid"):
        metastore.pools.set_pool("a b", 1)


def test_an_xcom_replaces_the_last_one_of_its_key_and_must_be_json(metastore, write_dag) -> None:  # type: ignore[no-untyped-def]
    _, run = new_run(metastore, write_dag, "pushes")
    ti = queries.get_task_instance(metastore.db, TIKey("pushes", run.run_id, "a"))
    metastore.xcoms.set_xcom(ti, "k", 1)
    metastore.xcoms.set_xcom(ti, "k", {"n": 2})
    assert [(x.key, x.value) for x in queries.list_xcoms(metastore.db, "pushes", run.run_id)] == [("k", {"n": 2})]
    with pytest.raises(UserError, match="XCom 'bad' value of type set is not JSON-serialisable"):
        metastore.xcoms.set_xcom(ti, "bad", {1})


def test_users_need_a_valid_name_a_known_role_and_exist_for_a_token(metastore) -> None:  # type: ignore[no-untyped-def]
    metastore.users.create_user("ada", "hash", "admin", now=datetime(2024, 1, 1, tzinfo=UTC))
    with pytest.raises(UserError, match="user 'ada' already exists"):
        metastore.users.create_user("ada", "hash", "admin")
    with pytest.raises(UserError, match="role 'root' is unknown"):
        metastore.users.create_user("bob", "hash", "root")
    with pytest.raises(UserError, match="username 'b o b' is invalid"):
        metastore.users.create_user("b o b", "hash", "viewer")
    metastore.users.add_api_token("ada", "digest")
    with pytest.raises(NotFound, match="user 'bob' does not exist"):
        metastore.users.add_api_token("bob", "digest")


def test_alike_changes_of_mapped_instances_are_one_update_each_audited(settings, metastore, write_dag) -> None:
    path = write_dag("fan", """
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("fan", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def each(x):
                return x

            each.expand(x=[1, 2, 3, 4, 5])
    """)
    dags = load(path, metastore)
    run = trigger_dag(metastore, dags["fan"], NOW)
    assert metastore.store.expand_mapped_task(TIKey("fan", run.run_id, "each"), 5, "scheduler", now=NOW)
    keys = [TIKey("fan", run.run_id, "each", i) for i in range(5)]
    assert metastore.store.set_task_state(keys[2], TaskState.NONE, TaskState.SKIPPED, "someone else")
    queued = dict(try_number=1, queued_at=NOW, executor="local", next_try_at=None)
    changes = []
    for key in keys:
        changes.append(TaskStateChange(key, TaskState.NONE, TaskState.SCHEDULED, "scheduler", now=NOW, expected_try=0))
        if key.map_index != 4:  # no open slot for instance 4: scheduled only
            changes.append(TaskStateChange(key, TaskState.SCHEDULED, TaskState.QUEUED, "scheduler", now=NOW,
                                           fields=queued))
    moved = metastore.store.set_task_states(changes)
    assert [m.state if m else None for m in moved] == [TaskState.QUEUED] * 4 + [None, None] + [TaskState.QUEUED] * 2 \
        + [TaskState.SCHEDULED]
    states = {ti.map_index: (ti.state, ti.try_number) for ti in queries.task_instances(metastore.db, "fan", run.run_id)}
    assert states == {0: (TaskState.QUEUED, 1), 1: (TaskState.QUEUED, 1), 2: (TaskState.SKIPPED, 0),
                      3: (TaskState.QUEUED, 1), 4: (TaskState.SCHEDULED, 0)}
    events = [(e.map_index, e.try_number, e.old_state, e.new_state)
              for e in queries.state_events(metastore.db, "fan", run.run_id) if e.actor == "scheduler"
              and e.event == "state_change"]
    assert events == [(0, 0, "none", "scheduled"), (0, 1, "scheduled", "queued"),
                      (1, 0, "none", "scheduled"), (1, 1, "scheduled", "queued"),
                      (3, 0, "none", "scheduled"), (3, 1, "scheduled", "queued"), (4, 0, "none", "scheduled")]
