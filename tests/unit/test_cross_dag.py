"""TriggerDagRunOperator and ExternalTaskMarker, as Airflow DAG files through the compatibility layer: runs created
through the task's handle from the target's serialized DAG, the scheduler running both DAGs, waiting on the local
executor (real task processes), and Airflow's recursive clear through markers."""

from __future__ import annotations

import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.loader import collect_dags
from sparkflow.exceptions import UserError
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.runtime.context import metastore_environment
from sparkflow.scheduler import interventions
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import RUN_ACTIVE, RunState
from tests.helpers import NOW, Clock, states

TARGET = """
    from datetime import datetime
    from airflow import DAG
    from airflow.operators.bash import BashOperator

    with DAG("target", start_date=datetime(2024, 1, 1), schedule=None):
        BashOperator(task_id="echo_conf", bash_command="echo {{ dag_run.conf['who'] }}; exit {{ params.code }}",
                     params={"code": {code}})
"""


def write(folder: Path, name: str, code: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return path


def drive_all(settings, metastore, dag_id: str, executor: str = "sequential", clock: Clock | None = None,
              logical_date: datetime | None = None, timeout: float = 60.0):
    """Trigger ``dag_id`` and tick one loop over every DAG of the folder until no run is active."""
    with metastore_environment(metastore):
        bag = collect_dags(settings.resolved_dags_folder, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    metastore.dags.sync_dags(list(bag.dags.values()), [], sorted({d.fileloc for d in bag.dags.values()}))
    clock = clock or Clock(NOW)
    run = trigger_dag(metastore, bag.dags[dag_id], clock(), logical_date=logical_date)
    kwargs = {"clock": clock} if executor == "sequential" else {}
    loop = SchedulerLoop(metastore, make_executor(settings, metastore, bag.dags.get, executor, **kwargs),
                         bag.dags.get, log_folder=settings.resolved_log_folder, **kwargs)
    loop.executor.start()
    deadline = time.monotonic() + timeout
    try:
        while queries.list_runs(metastore.db, states=RUN_ACTIVE):
            assert time.monotonic() < deadline, "runs did not finish"
            if not loop.tick().changed:
                if executor == "sequential":
                    clock.now += timedelta(seconds=30)
                else:
                    loop.executor.wait(0.05)
    finally:
        loop.executor.end()
    return queries.get_run(metastore.db, dag_id, run.run_id)


def xcom(metastore, run, task_id: str, key: str):
    record = queries.get_xcom(metastore.db, run.dag_id, run.run_id, task_id, key)
    return record.value if record is not None else None


def test_trigger_dag_run_creates_a_run_with_conf_that_the_scheduler_runs(settings, metastore) -> None:
    folder = settings.resolved_dags_folder
    write(folder, "target", TARGET.replace("{code}", "0"))
    write(folder, "controller", """
        from datetime import datetime
        from airflow import DAG
        from airflow.operators.trigger_dagrun import TriggerDagRunOperator

        with DAG("controller", start_date=datetime(2024, 1, 1), schedule=None):
            TriggerDagRunOperator(task_id="trigger", trigger_dag_id="target", conf={"who": "{{ ds }}-caller"},
                                  trigger_run_id="from_{{ ds_nodash }}")
    """)
    run = drive_all(settings, metastore, "controller")
    assert run.state is RunState.SUCCESS, states(metastore, run)
    (target_run,) = queries.list_runs(metastore.db, "target")
    assert (target_run.run_id, target_run.run_type, target_run.conf) == ("from_20240301", "manual",
                                                                          {"who": "2024-03-01-caller"})
    assert target_run.state is RunState.SUCCESS and target_run.logical_date == NOW
    assert xcom(metastore, target_run, "echo_conf", "return_value") == "2024-03-01-caller"
    assert xcom(metastore, run, "trigger", "trigger_run_id") == "from_20240301"
    assert xcom(metastore, run, "trigger", "trigger_logical_date_iso") == NOW.isoformat()


@pytest.mark.parametrize(("options", "expected"), [
    ("", "failed"),
    ("skip_when_already_exists=True", "skipped"),
    ("reset_dag_run=True", "success"),
])
def test_a_clash_with_an_existing_run_fails_skips_or_resets(settings, metastore, options, expected) -> None:
    folder = settings.resolved_dags_folder
    write(folder, "target", TARGET.replace("{code}", "0"))
    write(folder, "controller", f"""
        from datetime import datetime
        from airflow import DAG
        from airflow.operators.trigger_dagrun import TriggerDagRunOperator

        with DAG("controller", start_date=datetime(2024, 1, 1), schedule=None):
            TriggerDagRunOperator(task_id="trigger", trigger_dag_id="target", trigger_run_id="fixed",
                                  conf={{"who": "x"}}, {options})
    """)
    first = drive_all(settings, metastore, "controller")
    assert first.state is RunState.SUCCESS
    target = queries.get_run(metastore.db, "target", "fixed")
    second = drive_all(settings, metastore, "controller", clock=Clock(NOW + timedelta(hours=1)))
    assert states(metastore, second) == {"trigger": expected}
    ti = queries.get_task_instance(metastore.db, TIKey("target", "fixed", "echo_conf"))
    assert ti.try_number == (2 if expected == "success" else 1)  # reset: the target's task ran again
    if expected == "failed":
        error = queries.get_task_instance(metastore.db, TIKey("controller", second.run_id, "trigger")).error
        assert "DAG 'target' already has a run" in error and "run id 'fixed'" in error and "reset_dag_run" in error
    assert queries.get_run(metastore.db, "target", "fixed").id == target.id


@pytest.mark.parametrize(("code", "expected"), [(0, RunState.SUCCESS), (1, RunState.FAILED)])
def test_wait_for_completion_follows_the_triggered_run_on_the_local_executor(settings, metastore, code,
                                                                             expected) -> None:
    folder = settings.resolved_dags_folder
    write(folder, "target", TARGET.replace("{code}", str(code)))
    write(folder, "controller", """
        from datetime import datetime
        from airflow import DAG
        from airflow.operators.trigger_dagrun import TriggerDagRunOperator
        from airflow.operators.empty import EmptyOperator

        with DAG("controller", start_date=datetime(2024, 1, 1), schedule=None):
            TriggerDagRunOperator(task_id="trigger", trigger_dag_id="target", conf={"who": "w"},
                                  wait_for_completion=True, poke_interval=0.2) >> EmptyOperator(task_id="after")
    """)
    run = drive_all(settings, metastore, "controller", executor="local", logical_date=datetime.now(UTC))
    assert run.state is expected, states(metastore, run)
    (target_run,) = queries.list_runs(metastore.db, "target")
    assert target_run.state is expected
    if expected is RunState.FAILED:
        error = queries.get_task_instance(metastore.db, TIKey("controller", run.run_id, "trigger")).error
        assert "ended failed, one of failed_states ['failed']" in error


MARKED = """
    from datetime import datetime
    from airflow import DAG
    from airflow.operators.empty import EmptyOperator
    from airflow.sensors.external_task import ExternalTaskMarker

    with DAG("{dag_id}", start_date=datetime(2024, 1, 1), schedule=None):
        work = EmptyOperator(task_id="work")
        {more}
"""


def test_clearing_a_marker_clears_the_other_dags_task_and_its_downstream_recursively(settings, metastore) -> None:
    folder = settings.resolved_dags_folder
    write(folder, "parent", MARKED.format(dag_id="parent", more=(
        'work >> ExternalTaskMarker(task_id="mark_child", external_dag_id="child", external_task_id="start")')))
    write(folder, "child", MARKED.format(dag_id="child", more=(
        'start = EmptyOperator(task_id="start"); end = EmptyOperator(task_id="end"); start >> end\n'
        '        start >> ExternalTaskMarker(task_id="mark_grandchild", external_dag_id="grandchild",\n'
        '                                    external_task_id="work", logical_date="{{ ds }}T12:00:00+00:00")')))
    write(folder, "grandchild", MARKED.format(dag_id="grandchild", more="work >> EmptyOperator(task_id='after')"))
    runs = {dag_id: drive_all(settings, metastore, dag_id) for dag_id in ("parent", "child", "grandchild")}
    assert all(r.state is RunState.SUCCESS for r in runs.values())

    with metastore_environment(metastore):
        bag = collect_dags(folder, airflow_finders())
    selection = interventions.select_for_clear(metastore, bag.dags["parent"], "^work$", downstream=True)
    assert sorted((k.dag_id, k.task_id) for k in selection.keys()) == [
        ("child", "end"), ("child", "mark_grandchild"), ("child", "start"),
        ("grandchild", "after"), ("grandchild", "work"),
        ("parent", "mark_child"), ("parent", "work"),
    ]
    interventions.clear(metastore, bag.dags["parent"], selection)
    assert states(metastore, runs["grandchild"]) == {"work": "none", "after": "none"}
    assert states(metastore, runs["child"]) == {"start": "none", "end": "none", "mark_grandchild": "none",
                                                "work": "success"}
    assert queries.get_run(metastore.db, "child", runs["child"].run_id).state is RunState.QUEUED

    unmarked = interventions.select_for_clear(metastore, bag.dags["parent"], "^work$")  # no marker chosen
    assert {k.dag_id for k in unmarked.keys()} == {"parent"}


def test_marker_recursion_depth_is_enforced(settings, metastore) -> None:
    folder = settings.resolved_dags_folder
    write(folder, "ping", MARKED.format(dag_id="ping", more=(
        'work >> ExternalTaskMarker(task_id="to_pong", external_dag_id="pong", external_task_id="work",\n'
        '                                  recursion_depth=3)')))
    write(folder, "pong", MARKED.format(dag_id="pong", more=(
        'work >> ExternalTaskMarker(task_id="to_ping", external_dag_id="ping", external_task_id="work",\n'
        '                                  recursion_depth=3)')))
    for dag_id in ("ping", "pong"):
        drive_all(settings, metastore, dag_id)
    with metastore_environment(metastore):
        bag = collect_dags(folder, airflow_finders())
    # ping.work -> pong.work -> ping.work is a cycle of task instances: each is cleared once, no error
    selection = interventions.select_for_clear(metastore, bag.dags["ping"], "^work$", downstream=True)
    assert sorted((k.dag_id, k.task_id) for k in selection.keys()) == [
        ("ping", "to_pong"), ("ping", "work"), ("pong", "to_ping"), ("pong", "work")]
    write(folder, "deep", MARKED.format(dag_id="deep", more=(
        'work >> ExternalTaskMarker(task_id="to_ping", external_dag_id="ping", external_task_id="work",\n'
        '                                  recursion_depth=1)')))
    drive_all(settings, metastore, "deep")
    with metastore_environment(metastore):
        bag = collect_dags(folder, airflow_finders())
    # as in Airflow, the first marker's recursion_depth (1) bounds the chain: ping's marker is one too many
    with pytest.raises(UserError, match="Maximum recursion depth 1 reached for ExternalTaskMarker to_pong"):
        interventions.select_for_clear(metastore, bag.dags["deep"], "^work$", downstream=True)
