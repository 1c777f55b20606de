"""Sensors in poke and reschedule mode through the real loop and runner (sequential executor, injected clock):
reschedules keep the try, timeouts fail without retry or skip with soft_fail, and every sensor kind."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from sparkflow import DAG, FileSensor, PythonSensor
from sparkflow.definitions.context import task_environment
from sparkflow.exceptions import DagDefinitionError
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.state import RunState, TaskState
from tests.helpers import NOW, Clock, run_dag, states

COUNTING_SENSOR = """
    from datetime import datetime
    from pathlib import Path
    from sparkflow import DAG, PythonSensor, EmptyOperator

    COUNT = Path({count!r})

    def ready():
        n = int(COUNT.read_text() or 0) + 1 if COUNT.exists() else 1
        COUNT.write_text(str(n))
        return n >= {ready_at}

    with DAG("sensing", start_date=datetime(2024, 1, 1)) as dag:
        wait = PythonSensor(task_id="wait", python_callable=ready, mode={mode!r}, poke_interval={interval},
                            timeout={timeout}, soft_fail={soft_fail}, retries=2)
        wait >> EmptyOperator(task_id="after")
"""


def sensing_dag(write_dag, tmp_path, mode="reschedule", ready_at=3, interval=60, timeout=3600, soft_fail=False):
    count = tmp_path / "pokes.txt"
    return write_dag("sensing", COUNTING_SENSOR.format(count=str(count), ready_at=ready_at, mode=mode,
                                                       interval=interval, timeout=timeout, soft_fail=soft_fail)), count


def test_reschedule_mode_frees_the_slot_and_keeps_one_try(settings, metastore, write_dag, tmp_path) -> None:
    path, count = sensing_dag(write_dag, tmp_path, mode="reschedule", ready_at=3, interval=60)
    clock = Clock(NOW)
    run = run_dag(settings, metastore, path, "sensing", clock=clock)
    assert run.state is RunState.SUCCESS and count.read_text() == "3"
    key = TIKey("sensing", run.run_id, "wait")
    ti = queries.get_task_instance(metastore.db, key)
    assert ti.try_number == 1  # two reschedules, no retry used
    (only_try,) = queries.task_tries(metastore.db, key)
    assert only_try.state is TaskState.SUCCESS and only_try.start_date == NOW  # the try spans every poke
    moves = [(e.old_state, e.new_state) for e in queries.state_events(metastore.db, "sensing", run.run_id)
             if e.task_id == "wait"]
    assert moves.count(("running", "up_for_reschedule")) == 2
    assert moves.count(("up_for_reschedule", "queued")) == 2
    assert clock.now - NOW >= timedelta(minutes=2)  # each poke waited for poke_interval on the loop's clock


def test_reschedule_mode_times_out_without_retrying(settings, metastore, write_dag, tmp_path) -> None:
    path, count = sensing_dag(write_dag, tmp_path, mode="reschedule", ready_at=99, interval=60, timeout=150)
    run = run_dag(settings, metastore, path, "sensing")
    assert states(metastore, run) == {"wait": "failed", "after": "upstream_failed"}
    ti = queries.get_task_instance(metastore.db, TIKey("sensing", run.run_id, "wait"))
    assert ti.try_number == 1 and "SensorTimeout" in ti.error and "timeout of 150s" in ti.error
    assert int(count.read_text()) == 4  # pokes at 0, 60, 120 and the last one at 150 s


def test_poke_mode_waits_in_the_slot(settings, metastore, write_dag, tmp_path) -> None:
    path, count = sensing_dag(write_dag, tmp_path, mode="poke", ready_at=3, interval=0.01)
    run = run_dag(settings, metastore, path, "sensing")
    assert run.state is RunState.SUCCESS and count.read_text() == "3"
    moves = [e.new_state for e in queries.state_events(metastore.db, "sensing", run.run_id) if e.task_id == "wait"]
    assert "up_for_reschedule" not in moves


@pytest.mark.parametrize(("soft_fail", "expected"), [(False, "failed"), (True, "skipped")])
def test_poke_mode_timeout_fails_or_soft_fails(settings, metastore, write_dag, tmp_path, soft_fail,
                                               expected) -> None:
    path, _ = sensing_dag(write_dag, tmp_path, mode="poke", ready_at=10**6, interval=0.01, timeout=0.05,
                          soft_fail=soft_fail)
    run = run_dag(settings, metastore, path, "sensing")
    assert states(metastore, run)["wait"] == expected
    assert queries.get_task_instance(metastore.db, TIKey("sensing", run.run_id, "wait")).try_number == 1


def test_file_sensor_uses_the_fs_connection_path(settings, metastore, write_dag, tmp_path, monkeypatch) -> None:
    landing = tmp_path / "landing"
    (landing / "2024" / "03").mkdir(parents=True)
    (landing / "2024" / "03" / "trips.csv").write_text("x")
    monkeypatch.setenv("SPARKFLOW_CONN_FS_LANDING", f'{{"conn_type": "fs", "extra": {{"path": "{landing}"}}}}')
    path = write_dag("files", """
        from datetime import datetime
        from sparkflow import DAG, FileSensor

        with DAG("files", start_date=datetime(2024, 1, 1)) as dag:
            FileSensor(task_id="flat", filepath="*/03/*.csv", fs_conn_id="fs_landing", poke_interval=0.01)
            FileSensor(task_id="deep", filepath="**/*.csv", fs_conn_id="fs_landing", recursive=True,
                       poke_interval=0.01)
            FileSensor(task_id="dir", filepath="2024", fs_conn_id="fs_landing", poke_interval=0.01)
            FileSensor(task_id="missing", filepath="{{ ds }}/*.csv", fs_conn_id="fs_landing", poke_interval=0.01,
                       timeout=0.05, soft_fail=True)
    """)
    run = run_dag(settings, metastore, path, "files")
    assert states(metastore, run) == {"flat": "success", "deep": "success", "dir": "success", "missing": "skipped"}


def test_external_task_sensor_waits_for_another_dags_task(settings, metastore, write_dag) -> None:
    upstream = write_dag("upstream", """
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("upstream", start_date=datetime(2024, 1, 1)) as dag:
            BashOperator(task_id="produce", bash_command="exit {{ params.code }}", params={"code": 0})
    """)
    path = write_dag("downstream", """
        from datetime import datetime, timedelta
        from sparkflow import DAG, ExternalTaskSensor

        with DAG("downstream", start_date=datetime(2024, 1, 1)) as dag:
            ExternalTaskSensor(task_id="task_done", external_dag_id="upstream", external_task_id="produce",
                               failed_states=["failed"], mode="reschedule", poke_interval=60, timeout=600)
            ExternalTaskSensor(task_id="run_done", external_dag_id="upstream", mode="reschedule",
                               poke_interval=60, timeout=600)
            ExternalTaskSensor(task_id="yesterday", external_dag_id="upstream", external_task_id="produce",
                               execution_delta=timedelta(days=1), mode="reschedule", poke_interval=60, timeout=120,
                               soft_fail=True)
    """)
    first = run_dag(settings, metastore, upstream, "upstream")  # logical date NOW
    assert first.state is RunState.SUCCESS
    run = run_dag(settings, metastore, path, "downstream")  # the same logical date
    assert states(metastore, run) == {"task_done": "success", "run_done": "success", "yesterday": "skipped"}
    metastore.db.dispose()


def test_external_task_sensor_fails_on_a_failed_state(settings, metastore, write_dag) -> None:
    upstream = write_dag("upstream", """
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("upstream", start_date=datetime(2024, 1, 1)) as dag:
            BashOperator(task_id="produce", bash_command="exit 1")
    """)
    path = write_dag("downstream", """
        from datetime import datetime
        from sparkflow import DAG, ExternalTaskSensor

        with DAG("downstream", start_date=datetime(2024, 1, 1)) as dag:
            ExternalTaskSensor(task_id="task_done", external_dag_id="upstream", external_task_id="produce",
                               failed_states=["failed"], poke_interval=0.01, timeout=5, retries=3)
    """)
    run_dag(settings, metastore, upstream, "upstream")
    run = run_dag(settings, metastore, path, "downstream")
    ti = queries.get_task_instance(metastore.db, TIKey("downstream", run.run_id, "task_done"))
    assert ti.state is TaskState.FAILED and ti.try_number == 1 and "one of failed_states" in ti.error


def test_time_sensors(settings, metastore, write_dag) -> None:
    """Time sensors read the runtime's clock (here the loop's injected one, which reschedules move on)."""
    soon = (NOW + timedelta(minutes=2)).isoformat()
    path = write_dag("timed", f"""
        from datetime import datetime, timedelta
        from sparkflow import DAG, DateTimeSensor, TimeDeltaSensor

        with DAG("timed", start_date=datetime(2024, 1, 1)) as dag:
            DateTimeSensor(task_id="at", target_time="{soon}", poke_interval=60, timeout=600, mode="reschedule")
            TimeDeltaSensor(task_id="after_interval", delta=timedelta(minutes=5), poke_interval=60, timeout=600,
                            mode="reschedule")
            DateTimeSensor(task_id="far", target_time="{{{{ macros.ds_add(ds, 3650) }}}}T00:00:00+00:00",
                           poke_interval=0.01, timeout=0.03, soft_fail=True)
    """)
    clock = Clock(NOW)
    run = run_dag(settings, metastore, path, "timed", clock=clock)  # a manual run: its interval ends at NOW
    assert states(metastore, run) == {"at": "success", "after_interval": "success", "far": "skipped"}
    assert clock.now >= NOW + timedelta(minutes=5)


def test_sensor_arguments_are_checked_at_load_time_and_backoff_doubles(tmp_path) -> None:
    with DAG("checks", start_date=datetime(2024, 1, 1)):
        with pytest.raises(DagDefinitionError, match="mode 'sleepy' is not supported"):
            PythonSensor(task_id="bad", python_callable=lambda: True, mode="sleepy")
        sensor = PythonSensor(task_id="grow", python_callable=lambda: True, poke_interval=10, timeout=300,
                              exponential_backoff=True, max_wait=60)
        files = FileSensor(task_id="files", filepath=str(tmp_path / "x"))
    assert [sensor.next_poke_interval(n) for n in range(1, 6)] == [10, 20, 40, 60, 60]
    with task_environment(None, None, None):
        assert files.full_path() == str(tmp_path / "x")  # no fs_default defined: the path as it is
