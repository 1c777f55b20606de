"""A user's own Timetable class: kept in the serialized DAG by import path and state (as Airflow keeps a plugin's
timetable), rebuilt by the scheduler daemon, which then schedules the DAG; a class the scheduler could not import
is a one-line import error at parse time, and one that vanished later a one-line warning."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sparkflow.definitions.custom_timetable import timetable_from_json
from sparkflow.metastore import queries
from sparkflow.scheduler.daemon import SchedulerDaemon
from sparkflow.scheduler.dag_processing import refresh_dag_folder
from tests.helpers import Clock

MODULE = "sf_test_hourly_timetables"
PLUGIN = """
    from datetime import timedelta
    from sparkflow.definitions.schedule import DataInterval

    class EveryNHours:
        periodic = True

        def __init__(self, hours):
            self.hours = hours
            self.description = f"every {hours} hours"

        def serialize(self):
            return {"hours": self.hours}

        @classmethod
        def deserialize(cls, data):
            return cls(data["hours"])

        def infer_manual_data_interval(self, run_after):
            return DataInterval(run_after - timedelta(hours=self.hours), run_after)

        def next_interval(self, last, start_date, now, catchup):
            start = last.end if last is not None else start_date
            end = start + timedelta(hours=self.hours)
            return DataInterval(start, end) if end <= now else None
"""
DAG_FILE = f"""
    from datetime import datetime, timezone
    from sparkflow import DAG, EmptyOperator
    from {MODULE} import EveryNHours

    with DAG("custom_tt", schedule=EveryNHours(6), start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
             catchup=True, max_active_runs=1) as dag:
        EmptyOperator(task_id="noop")
"""


@pytest.fixture
def plugin(settings, monkeypatch) -> Path:
    """The timetable's module in the plugins folder; sys.path and sys.modules as they were afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = settings.resolved_plugins_folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{MODULE}.py"
    path.write_text(textwrap.dedent(PLUGIN))
    yield path
    sys.modules.pop(MODULE, None)


def test_a_plugin_timetable_is_serialized_by_import_path_and_scheduled_by_the_daemon(
        settings, metastore, write_dag, plugin) -> None:
    write_dag("custom_tt", DAG_FILE)
    refresh = refresh_dag_folder(settings, metastore)
    assert refresh.error_count == 0, queries.list_import_errors(metastore.db)
    data = json.loads(queries.serialized_dags(metastore.db, ["custom_tt"])[0].data)
    assert data["dag"]["schedule"] == {"type": "custom", "module": MODULE, "class": "EveryNHours",
                                       "data": {"hours": 6}, "description": "every 6 hours"}
    assert sys.modules.get(MODULE) is None  # parsed in a worker process: the daemon imports it by its path

    clock = Clock(datetime(2024, 1, 1, 13, tzinfo=UTC))
    daemon = SchedulerDaemon(settings, metastore, "sequential", clock=clock)
    daemon.refresh_dags(force=True)
    assert daemon.dags["custom_tt"].timetable.hours == 6
    created = daemon.schedule_runs(clock.now)
    assert [(r.data_interval_start, r.data_interval_end) for r in created] == [
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, 6, tzinfo=UTC))]
    assert [r.dag_id for r in queries.list_dags(metastore.db)] == ["custom_tt"]
    assert queries.list_dags(metastore.db)[0].schedule == "every 6 hours"


def test_a_timetable_defined_in_the_dag_file_is_a_one_line_import_error(settings, metastore, write_dag) -> None:
    inline = textwrap.dedent(PLUGIN) + textwrap.dedent(DAG_FILE).replace(f"from {MODULE} import EveryNHours\n", "")
    write_dag("custom_tt", inline)
    refresh_dag_folder(settings, metastore)
    [error] = queries.list_import_errors(metastore.db)
    assert error.message == (
        "DAG 'custom_tt' cannot be serialized: timetable class 'EveryNHours' is defined in the DAG file, so the "
        "scheduler cannot import it; move the class to a module in the plugins folder (setting plugins_folder, "
        "default $SPARKFLOW_HOME/plugins) and import it from there in the DAG file")
    assert queries.list_dags(metastore.db) == []


def test_a_timetable_that_cannot_be_imported_any_more_is_named_in_one_line(
        settings, metastore, write_dag, plugin, caplog) -> None:
    write_dag("custom_tt", DAG_FILE)
    refresh_dag_folder(settings, metastore)
    plugin.unlink()  # the plugin went away after the parse
    daemon = SchedulerDaemon(settings, metastore, "sequential",
                             clock=Clock(datetime(2024, 1, 2, tzinfo=UTC) + timedelta(hours=1)))
    with caplog.at_level(logging.WARNING, logger="sparkflow.scheduler"):
        daemon.refresh_dags(force=True)
    assert "custom_tt" not in daemon.dags
    [line] = [r.getMessage() for r in caplog.records if "custom_tt" in r.getMessage()]
    assert line == (
        f"DAG 'custom_tt' is not scheduled: its serialized form cannot be read: timetable class "
        f"'{MODULE}.EveryNHours' cannot be imported (ModuleNotFoundError: No module named '{MODULE}'); put its "
        "module in the plugins folder (setting plugins_folder) or the DAG folder")
    # A class that needs arguments and has no deserialize(data):
    with pytest.raises(ValueError, match=r"^timetable 'json.JSONDecodeError' cannot be rebuilt with "
                                         r"JSONDecodeError\(\) \(TypeError: .*\); give the class serialize\(\)"):
        timetable_from_json({"type": "custom", "module": "json", "class": "JSONDecodeError", "data": {}})


AIRFLOW_MODULE = "sf_test_workday_timetable"
AIRFLOW_PLUGIN = """
    from datetime import timedelta
    from airflow.timetables.base import DagRunInfo, DataInterval, TimeRestriction, Timetable

    class AfterWorkday(Timetable):
        description = "after each workday"

        def infer_manual_data_interval(self, *, run_after):
            start = run_after.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
            return DataInterval(start=start, end=start + timedelta(days=1))

        def next_dagrun_info(self, *, last_automated_data_interval, restriction: TimeRestriction):
            start = last_automated_data_interval.end if last_automated_data_interval else restriction.earliest
            while start.weekday() >= 5:  # no runs for Saturday and Sunday
                start = start.add(days=1)  # a pendulum DateTime, as in Airflow
            return DagRunInfo.interval(start=start, end=start + timedelta(days=1))
"""
AIRFLOW_DAG = f"""
    import pendulum
    from airflow import DAG
    from airflow.operators.empty import EmptyOperator
    from {AIRFLOW_MODULE} import AfterWorkday

    with DAG("workdays", schedule=AfterWorkday(), start_date=pendulum.datetime(2024, 1, 5, tz="UTC"),
             catchup=True) as dag:
        EmptyOperator(task_id="noop")
"""


def test_an_airflow_timetable_subclass_from_the_plugins_folder_is_scheduled_as_airflow_would(
        settings, metastore, write_dag, monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    settings.resolved_plugins_folder.mkdir(parents=True, exist_ok=True)
    (settings.resolved_plugins_folder / f"{AIRFLOW_MODULE}.py").write_text(textwrap.dedent(AIRFLOW_PLUGIN))
    write_dag("workdays", AIRFLOW_DAG)
    try:
        assert refresh_dag_folder(settings, metastore).error_count == 0, queries.list_import_errors(metastore.db)
        clock = Clock(datetime(2024, 1, 9, 1, tzinfo=UTC))  # Tuesday: Friday's and Monday's runs are due
        daemon = SchedulerDaemon(settings, metastore, "sequential", clock=clock)
        daemon.refresh_dags(force=True)
        created = daemon.schedule_runs(clock.now)
        assert [(r.data_interval_start.day, r.data_interval_end.day) for r in created] == [(5, 6), (8, 9)]
        manual = daemon.dags["workdays"].infer_manual_data_interval(datetime(2024, 1, 10, 12, tzinfo=UTC))
        assert (manual.start, manual.end) == (datetime(2024, 1, 9, tzinfo=UTC), datetime(2024, 1, 10, tzinfo=UTC))
        assert queries.list_dags(metastore.db)[0].schedule == "after each workday"
    finally:
        sys.modules.pop(AIRFLOW_MODULE, None)
