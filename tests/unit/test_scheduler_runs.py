"""Scheduled runs, catchup, max_active_runs, the daemon's run creation cap, paused DAGs and backfill, through the
real scheduler loop with an injected clock (sequential executor, in-process)."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.metastore import queries
from sparkflow.scheduler.daemon import SchedulerDaemon
from sparkflow.scheduler.dag_processing import refresh_dag_folder
from sparkflow.state import RunState
from tests.helpers import Clock

DAILY = """
    from datetime import datetime
    from sparkflow import DAG, BashOperator

    with DAG("daily", schedule="@daily", start_date=datetime(2024, 1, 1), catchup={catchup},
             max_active_runs={max_active_runs}) as dag:
        BashOperator(task_id="write", bash_command="echo {{{{ ds }}}} {{{{ run_id }}}} >> {out}")
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def daemon_for(settings, metastore, clock: Clock, **overrides) -> SchedulerDaemon:
    settings = dataclasses.replace(settings, **overrides)
    refresh_dag_folder(settings, metastore)  # the DAG processor's work, done here once
    daemon = SchedulerDaemon(settings, metastore, "sequential", clock=clock)
    daemon.refresh_dags(force=True)
    return daemon


def drive(daemon: SchedulerDaemon, clock: Clock, until: datetime, step: timedelta = timedelta(hours=6)) -> None:
    """Step the daemon, moving the clock forward whenever nothing changed, until ``until``."""
    for _ in range(2000):
        if not daemon.step():
            if clock.now >= until:
                return
            clock.now = min(clock.now + step, until)
    raise AssertionError("daemon did not settle")


def write_daily(write_dag, tmp_path: Path, catchup: bool, max_active_runs: int = 16) -> Path:
    out = tmp_path / "ds.txt"
    write_dag("daily", DAILY.format(catchup=catchup, max_active_runs=max_active_runs, out=out))
    return out


def test_catchup_runs_every_missed_interval_with_airflow_data_intervals(settings, metastore, write_dag,
                                                                       tmp_path) -> None:
    out = write_daily(write_dag, tmp_path, catchup=True)
    clock = Clock(utc(2024, 1, 4, 1))  # three complete days: Jan 1, 2 and 3
    daemon = daemon_for(settings, metastore, clock)
    drive(daemon, clock, clock.now)
    runs = sorted(queries.list_runs(metastore.db, "daily"), key=lambda r: r.logical_date)
    assert [r.run_id for r in runs] == [f"scheduled__2024-01-0{d}T00:00:00+00:00" for d in (1, 2, 3)]
    assert {r.run_type for r in runs} == {"scheduled"} and {r.state for r in runs} == {RunState.SUCCESS}
    assert (runs[0].data_interval_start, runs[0].data_interval_end) == (utc(2024, 1, 1), utc(2024, 1, 2))
    assert sorted(out.read_text().split("\n")[:-1]) == [
        f"2024-01-0{d} scheduled__2024-01-0{d}T00:00:00+00:00" for d in (1, 2, 3)
    ]
    # A day later exactly one more run is due, and only once its interval has ended.
    clock.now = utc(2024, 1, 4, 23, 59)
    assert daemon.schedule_runs(clock.now) == []
    clock.now = utc(2024, 1, 5, 0, 0, 1)
    assert [r.logical_date for r in daemon.schedule_runs(clock.now)] == [utc(2024, 1, 4)]


def test_no_catchup_creates_only_the_latest_interval(settings, metastore, write_dag, tmp_path) -> None:
    write_daily(write_dag, tmp_path, catchup=False)
    clock = Clock(utc(2024, 3, 1, 12))
    daemon = daemon_for(settings, metastore, clock)
    created = daemon.schedule_runs(clock.now)
    assert [(r.logical_date, r.data_interval_end) for r in created] == [(utc(2024, 2, 29), utc(2024, 3, 1))]
    assert daemon.schedule_runs(clock.now) == []


def test_catchup_respects_max_active_runs(settings, metastore, write_dag, tmp_path) -> None:
    write_daily(write_dag, tmp_path, catchup=True, max_active_runs=2)
    clock = Clock(utc(2024, 1, 11))
    daemon = daemon_for(settings, metastore, clock)
    assert len(daemon.schedule_runs(clock.now)) == 2  # ten are due, two may be active
    assert daemon.schedule_runs(clock.now) == []
    seen_running = []
    for _ in range(400):
        changed = daemon.step()
        seen_running.append(len(queries.list_runs(metastore.db, "daily", states=[RunState.RUNNING])))
        if not changed and len(queries.list_runs(metastore.db, "daily", states=[RunState.SUCCESS])) == 10:
            break
    assert max(seen_running) <= 2
    assert len(queries.list_runs(metastore.db, "daily", states=[RunState.SUCCESS])) == 10


def test_daemon_caps_runs_created_at_once_with_a_warning(settings, metastore, write_dag, tmp_path, caplog) -> None:
    write_daily(write_dag, tmp_path, catchup=True, max_active_runs=50)
    clock = Clock(utc(2024, 1, 21))
    daemon = daemon_for(settings, metastore, clock, max_runs_per_loop=3)
    with caplog.at_level(logging.WARNING, logger="sparkflow.scheduler"):
        assert len(daemon.schedule_runs(clock.now)) == 3
    assert "more than 3 runs due" in caplog.text and "max_runs_per_loop" in caplog.text
    assert len(daemon.schedule_runs(clock.now)) == 3  # the rest follow in later loops, in order
    dates = sorted(r.logical_date for r in queries.list_runs(metastore.db, "daily"))
    assert dates == [utc(2024, 1, d) for d in range(1, 7)]


def test_paused_dag_gets_no_runs_and_new_files_are_picked_up(settings, metastore, write_dag, tmp_path) -> None:
    write_daily(write_dag, tmp_path, catchup=True)
    clock = Clock(utc(2024, 1, 3))
    daemon = daemon_for(settings, metastore, clock)
    metastore.dags.set_paused("daily", True)
    assert daemon.schedule_runs(clock.now) == []
    write_dag("broken", "from sparkflow import DAG\nwith DAG('broken') as dag:\n    raise ValueError('boom')\n")
    assert not refresh_dag_folder(settings, metastore).parsed[0].dags  # the broken file: an import error
    assert not daemon.refresh_dags()  # nothing new to plan from
    assert not refresh_dag_folder(settings, metastore).changed  # unchanged files are not parsed again
    assert [e.dag_id or "" for e in queries.list_import_errors(metastore.db)] != []
    (settings.resolved_dags_folder / "broken.py").write_text(
        "from sparkflow import DAG, EmptyOperator\nwith DAG('broken') as dag:\n    EmptyOperator(task_id='ok')\n"
    )
    assert refresh_dag_folder(settings, metastore).changed
    assert daemon.refresh_dags()  # the daemon reads the new serialized DAG without a restart
    assert queries.list_import_errors(metastore.db) == []
    assert set(daemon.dags) == {"daily", "broken"}


def test_scheduled_run_skips_a_date_a_backfill_already_has(settings, metastore, write_dag, tmp_path,
                                                          monkeypatch, capsys) -> None:
    write_daily(write_dag, tmp_path, catchup=True)
    monkeypatch.setenv("SPARKFLOW_EXECUTOR", "sequential")
    assert main(["backfill", "daily", "-s", "2024-01-02", "-e", "2024-01-03"]) == 0
    runs = queries.list_runs(metastore.db, "daily")
    assert sorted((r.run_type, r.state.value) for r in runs) == [("backfill", "success")] * 2
    assert {r.run_id for r in runs} == {"backfill__2024-01-02T00:00:00+00:00", "backfill__2024-01-03T00:00:00+00:00"}
    clock = Clock(utc(2024, 1, 5))
    daemon = daemon_for(settings, metastore, clock)
    assert [r.logical_date for r in daemon.schedule_runs(clock.now)] == [utc(2024, 1, 1), utc(2024, 1, 4)]
    # A second backfill over the same range changes nothing without --reset-dagruns.
    assert main(["backfill", "daily", "-s", "2024-01-02", "-e", "2024-01-02"]) == 0
    assert "already success; --reset-dagruns runs it again" in capsys.readouterr().out


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2024-01-05", "2024-01-02", "--end-date 2024-01-02T00:00:00+00:00 is before --start-date"),
    ("2023-12-01", "2024-01-02", "--start-date 2023-12-01T00:00:00+00:00 is before the DAG's start_date"),
    ("2024-01-02", "2999-01-01", "--end-date 2999-01-01T00:00:00+00:00 is in the future"),
    ("2024-01-02", "yesterday-ish", "--end-date 'yesterday-ish' is not a date"),
])
def test_backfill_range_errors_name_the_wrong_date(settings, metastore, write_dag, tmp_path, capsys,
                                                   start, end, message) -> None:
    write_daily(write_dag, tmp_path, catchup=False)
    assert main(["backfill", "daily", "-s", start, "-e", end]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert queries.list_runs(metastore.db, "daily") == []


def test_backfill_beyond_the_cap_needs_yes(settings, metastore, write_dag, tmp_path, monkeypatch, capsys) -> None:
    write_daily(write_dag, tmp_path, catchup=False)
    monkeypatch.setenv("SPARKFLOW_MAX_RUNS_PER_LOOP", "2")
    monkeypatch.setenv("SPARKFLOW_EXECUTOR", "sequential")
    assert main(["backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-03"]) == 2
    assert "would create or clear 3 runs, more than max_runs_per_loop=2" in capsys.readouterr().err
    assert queries.list_runs(metastore.db, "daily") == []  # nothing half-written
    assert main(["backfill", "daily", "-s", "2024-01-01", "-e", "2024-01-03", "--yes"]) == 0
    assert len(queries.list_runs(metastore.db, "daily", states=[RunState.SUCCESS])) == 3


def test_backfill_rerun_failed_tasks_clears_only_the_failures(settings, metastore, write_dag, tmp_path,
                                                             monkeypatch) -> None:
    flag = tmp_path / "fail"
    flag.write_text("")
    write_dag("flaky", f"""
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("flaky", schedule="@daily", start_date=datetime(2024, 1, 1)) as dag:
            ok = BashOperator(task_id="ok", bash_command="echo ok >> {tmp_path}/ok.txt")
            bad = BashOperator(task_id="bad", bash_command="test ! -e {flag}")
            ok >> bad
    """)
    monkeypatch.setenv("SPARKFLOW_EXECUTOR", "sequential")
    assert main(["backfill", "flaky", "-s", "2024-01-01", "-e", "2024-01-01"]) == 1
    flag.unlink()
    assert main(["backfill", "flaky", "-s", "2024-01-01", "-e", "2024-01-01", "--rerun-failed-tasks"]) == 0
    assert (tmp_path / "ok.txt").read_text() == "ok\n"  # the successful task did not run again
    (run,) = queries.list_runs(metastore.db, "flaky")
    assert run.state is RunState.SUCCESS
    tis = {ti.task_id: ti for ti in queries.task_instances(metastore.db, "flaky", run.run_id)}
    assert tis["bad"].try_number == 2 and tis["ok"].try_number == 1
