"""Airflow's remaining standard sensors and branch operators, written as Airflow DAG files and run through the
compatibility layer and the real loop (sequential executor) on the injected clock: NOW is Friday 2024-03-01 12:00
UTC. Also: every name under every aliased Airflow module path resolves."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest

from sparkflow.compat.airflow import airflow_finders
from sparkflow.compat.airflow.aliases import ALIASES
from sparkflow.compat.airflow.finder import resolve
from sparkflow.definitions.loader import collect_dags
from sparkflow.definitions.schedule import DataInterval
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.runtime.context import metastore_environment
from sparkflow.scheduler.loop import SchedulerLoop
from sparkflow.state import RunState
from tests.helpers import NOW, Clock, run_dag, states

HEADER = """
from datetime import datetime, time, timedelta
from airflow import DAG
from airflow.decorators import task
"""


def run_airflow(settings, metastore, write_dag, name: str, body: str, clock: Clock | None = None):
    path = write_dag(name, HEADER + body)
    with metastore_environment(metastore):
        return run_dag(settings, metastore, path, name, clock=clock, meta_path_finders=airflow_finders())


def xcom(metastore, run, task_id: str):
    record = queries.get_xcom(metastore.db, run.dag_id, run.run_id, task_id, "return_value")
    return record.value if record is not None else None


def reschedules(metastore, run, task_id: str) -> int:
    return sum(e.new_state == "up_for_reschedule" for e in queries.state_events(metastore.db, run.dag_id, run.run_id)
               if e.task_id == task_id)


def test_task_sensor_decorator_returns_bool_or_poke_return_value(settings, metastore, write_dag, tmp_path) -> None:
    counter = tmp_path / "pokes"
    run = run_airflow(settings, metastore, write_dag, "deco_sensor", f"""
from pathlib import Path
from airflow.sensors.base import PokeReturnValue

COUNTER = Path({str(counter)!r})

with DAG("deco_sensor", start_date=datetime(2024, 1, 1), schedule=None):
    @task.sensor(poke_interval=60, timeout=3600, mode="reschedule")
    def wait_for_third() -> PokeReturnValue:
        n = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1
        COUNTER.write_text(str(n))
        return PokeReturnValue(is_done=n >= 3, xcom_value={{"pokes": n}})

    @task.sensor(poke_interval=0.01, timeout=0.05, soft_fail=True)
    def never() -> bool:
        return False

    @task
    def after(found):
        return found["pokes"] * 10

    after(wait_for_third())
    never()
""")
    assert states(metastore, run) == {"wait_for_third": "success", "never": "skipped", "after": "success"}
    assert xcom(metastore, run, "wait_for_third") == {"pokes": 3} and xcom(metastore, run, "after") == 30
    assert reschedules(metastore, run, "wait_for_third") == 2


def test_bash_sensor_exit_codes(settings, metastore, write_dag, tmp_path) -> None:
    ready = tmp_path / "ready"
    ready.write_text("x")
    run = run_airflow(settings, metastore, write_dag, "bash_sensing", f"""
from airflow.sensors.bash import BashSensor

with DAG("bash_sensing", start_date=datetime(2024, 1, 1), schedule=None):
    BashSensor(task_id="present", bash_command="test -e {ready}", poke_interval=0.01)
    BashSensor(task_id="absent", bash_command="test -e {ready}.nope", poke_interval=0.01, timeout=0.05,
               soft_fail=True)
    BashSensor(task_id="retry_code", bash_command="exit 3", retry_exit_code=3, poke_interval=0.01, timeout=0.05,
               soft_fail=True)
    BashSensor(task_id="other_code", bash_command="exit 2", retry_exit_code=3, poke_interval=0.01, retries=2)
""")
    assert states(metastore, run) == {"present": "success", "absent": "skipped", "retry_code": "skipped",
                                      "other_code": "failed"}
    failed = queries.get_task_instance(metastore.db, next(
        t.key for t in queries.task_instances(metastore.db, run.dag_id, run.run_id) if t.task_id == "other_code"))
    assert failed.try_number == 1 and "return code 2 (retry_exit_code is 3)" in failed.error  # no retry used


def test_time_sensors_wait_on_the_injected_clock(settings, metastore, write_dag) -> None:
    clock = Clock(NOW)
    run = run_airflow(settings, metastore, write_dag, "timing", """
from airflow.sensors.time_sensor import TimeSensor, TimeSensorAsync
from airflow.sensors.time_delta import TimeDeltaSensorAsync
from airflow.providers.standard.sensors.time import TimeSensor as StdTimeSensor

with DAG("timing", start_date=datetime(2024, 1, 1), schedule=None):
    TimeSensor(task_id="passed", target_time=time(11, 0))
    TimeSensorAsync(task_id="half_past", target_time=time(12, 30), poke_interval=300)
    TimeDeltaSensorAsync(task_id="ten_minutes", delta=timedelta(minutes=10), poke_interval=120)
    StdTimeSensor(task_id="too_late", target_time=time(23, 0), mode="reschedule", poke_interval=600,
                  timeout=1800, soft_fail=True)
""", clock=clock)
    assert states(metastore, run) == {"passed": "success", "half_past": "success", "ten_minutes": "success",
                                      "too_late": "skipped"}
    assert reschedules(metastore, run, "passed") == 0
    assert reschedules(metastore, run, "half_past") >= 6  # 12:00 .. 12:30 every 5 minutes, slot given back
    assert reschedules(metastore, run, "ten_minutes") >= 4
    assert clock.now >= NOW + timedelta(minutes=30)


def test_day_of_week_sensor_and_branch(settings, metastore, write_dag) -> None:
    run = run_airflow(settings, metastore, write_dag, "weekdays", """
from airflow.operators.empty import EmptyOperator
from airflow.operators.weekday import BranchDayOfWeekOperator
from airflow.sensors.weekday import DayOfWeekSensor
from airflow.utils.weekday import WeekDay
from airflow.providers.standard.utils.weekday import WeekDay as StdWeekDay

assert WeekDay is StdWeekDay and WeekDay.get_weekday_number("friday") == 5

with DAG("weekdays", start_date=datetime(2024, 1, 1), schedule=None):
    DayOfWeekSensor(task_id="friday", week_day="Friday", poke_interval=0.01)
    DayOfWeekSensor(task_id="weekend", week_day={WeekDay.SATURDAY, WeekDay.SUNDAY}, poke_interval=0.01,
                    timeout=0.05, soft_fail=True)
    DayOfWeekSensor(task_id="by_logical_date", week_day=["Friday"], use_task_logical_date=True, poke_interval=0.01)
    branch = BranchDayOfWeekOperator(task_id="branch", week_day={"Saturday", "Sunday"},
                                     follow_task_ids_if_true="weekend_job", follow_task_ids_if_false="weekday_job")
    branch >> [EmptyOperator(task_id="weekend_job"), EmptyOperator(task_id="weekday_job")]
""")
    assert states(metastore, run) == {"friday": "success", "weekend": "skipped", "by_logical_date": "success",
                                      "branch": "success", "weekend_job": "skipped", "weekday_job": "success"}


def test_bad_week_day_is_a_dag_error_naming_it(tmp_path) -> None:
    (tmp_path / "bad_day.py").write_text(HEADER + """
from airflow.sensors.weekday import DayOfWeekSensor
with DAG("bad_day", start_date=datetime(2024, 1, 1), schedule=None):
    DayOfWeekSensor(task_id="typo", week_day="Fryday")
""")
    (error,) = collect_dags(tmp_path, airflow_finders()).import_errors
    assert "task 'typo'" in error.message and 'Invalid Week Day passed: "Fryday"' in error.message


def test_branch_date_time_operator(settings, metastore, write_dag) -> None:
    run = run_airflow(settings, metastore, write_dag, "windows", """
from airflow.operators.empty import EmptyOperator
from airflow.operators.datetime import BranchDateTimeOperator

with DAG("windows", start_date=datetime(2024, 1, 1), schedule=None):
    for name, lower, upper in [("inside", time(11), time(13)), ("before", time(13), None),
                               ("overnight", time(22), time(2)), ("dates", datetime(2024, 2, 1), datetime(2024, 4, 1))]:
        BranchDateTimeOperator(task_id=name, target_lower=lower, target_upper=upper,
                               follow_task_ids_if_true=f"{name}_yes", follow_task_ids_if_false=f"{name}_no") >> [
            EmptyOperator(task_id=f"{name}_yes"), EmptyOperator(task_id=f"{name}_no")]
""")
    chosen = {task_id for task_id, state in states(metastore, run).items()
              if task_id.endswith(("_yes", "_no")) and state == "success"}
    assert chosen == {"inside_yes", "before_no", "overnight_no", "dates_yes"}


def run_scheduled(settings, metastore, path, dag_id: str, interval: DataInterval, clock: Clock):
    """A scheduled run of ``interval`` (LatestOnlyOperator lets manual runs through), ticked to its end."""
    bag = collect_dags(path.parent, airflow_finders(), only_file=path)
    dag = bag.dags[dag_id]
    metastore.dags.sync_dags([dag], [], [str(path)])
    run = metastore.store.create_dag_run(dag, f"scheduled__{interval.start.isoformat()}", "scheduled",
                                         interval.start, interval, now=clock())
    executor = make_executor(settings, metastore, bag.dags.get, "sequential", clock=clock)
    loop = SchedulerLoop(metastore, executor, bag.dags.get, clock=clock, log_folder=settings.resolved_log_folder)
    for _ in range(50):
        loop.tick()
        current = queries.get_run(metastore.db, dag_id, run.run_id)
        if current.state in (RunState.SUCCESS, RunState.FAILED):
            return current
    raise AssertionError("run did not finish")


@pytest.mark.parametrize(("start", "latest"), [(datetime(2024, 2, 29, tzinfo=UTC), True),
                                               (datetime(2024, 2, 27, tzinfo=UTC), False)])
def test_latest_only_skips_downstream_of_all_but_the_latest_run(settings, metastore, write_dag, start,
                                                                 latest) -> None:
    path = write_dag("latest", HEADER + """
from airflow.operators.empty import EmptyOperator
from airflow.operators.latest_only import LatestOnlyOperator

with DAG("latest", start_date=datetime(2024, 1, 1), schedule="@daily", catchup=True):
    LatestOnlyOperator(task_id="latest_only") >> EmptyOperator(task_id="load") >> EmptyOperator(task_id="report")
""")
    with metastore_environment(metastore):
        run = run_scheduled(settings, metastore, path, "latest", DataInterval(start, start + timedelta(days=1)),
                            Clock(NOW))
    expected = "success" if latest else "skipped"
    assert states(metastore, run) == {"latest_only": "success", "load": expected, "report": expected}


def test_latest_only_lets_a_manual_run_through(settings, metastore, write_dag) -> None:
    run = run_airflow(settings, metastore, write_dag, "manual_latest", """
from airflow.operators.empty import EmptyOperator
from airflow.operators.latest_only import LatestOnlyOperator

with DAG("manual_latest", start_date=datetime(2023, 1, 1), schedule="@daily"):
    LatestOnlyOperator(task_id="latest_only") >> EmptyOperator(task_id="load")
""")
    assert states(metastore, run) == {"latest_only": "success", "load": "success"}


def test_every_name_under_every_aliased_module_resolves() -> None:
    """Nothing under a documented Airflow module path fails with a raw AttributeError or TypeError."""
    finder = airflow_finders()[0]
    sys.meta_path.insert(0, finder)
    try:
        __import__("airflow")
        for module, names in ALIASES.items():
            for name, target in names.items():
                assert resolve(target, f"{module}.{name}") is not None, f"{module}.{name}"
    finally:
        sys.meta_path.remove(finder)
