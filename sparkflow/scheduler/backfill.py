"""Backfill: run a DAG for every scheduled logical date in a range, with the scheduler's own loop.

Planning is separate from writing: :func:`plan_backfill` validates the range and works out which runs to create
and which existing runs to clear, writing nothing, so a bad range or a refused confirmation leaves no trace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.schedule import DataInterval, NullTimetable, OnceTimetable
from sparkflow.exceptions import UserError
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.loop import SchedulerLoop, end_drive
from sparkflow.scheduler.runs import make_run_id
from sparkflow.settings import Settings
from sparkflow.state import RUN_ACTIVE, RUN_TERMINAL, TASK_FAILED_LIKE, RunState

ACTOR = "backfill"


@dataclass
class BackfillPlan:
    dag: DAG
    intervals: list[DataInterval]
    to_create: list[DataInterval] = field(default_factory=list)
    to_clear: list[tuple[DagRunRecord, list[str]]] = field(default_factory=list)
    to_drive: list[DagRunRecord] = field(default_factory=list)  # existing active runs, driven as they are
    untouched: list[DagRunRecord] = field(default_factory=list)  # existing finished runs left alone

    @property
    def writes(self) -> int:
        return len(self.to_create) + len(self.to_clear)


def _day(dt: datetime) -> str:
    return dt.isoformat()


def backfill_intervals(dag: DAG, start: datetime, end: datetime, now: datetime) -> list[DataInterval]:
    """The scheduled data intervals whose logical date (start) lies in [start, end] and which have ended."""
    if isinstance(dag.timetable, NullTimetable) and not isinstance(dag.timetable, OnceTimetable):
        raise UserError(
            f"DAG '{dag.dag_id}' has schedule=None, so it has no logical dates to backfill; give it a schedule or "
            f"run one date with `sparkflow trigger {dag.dag_id} --logical-date DATE`"
        )
    intervals: list[DataInterval] = []
    interval = dag.timetable.next_interval(None, start, now, True)
    while interval is not None and interval.start <= end:
        if dag.end_date is not None and interval.start > dag.end_date:
            break
        intervals.append(interval)
        interval = dag.timetable.next_interval(interval, start, now, True)
    return intervals


def plan_backfill(
    metastore: Metastore, dag: DAG, start: datetime, end: datetime, now: datetime,
    reset_dagruns: bool = False, rerun_failed_tasks: bool = False,
) -> BackfillPlan:
    """Validate the range (naming the date that is wrong) and decide what to create, clear and drive."""
    if end < start:
        raise UserError(
            f"backfill of DAG '{dag.dag_id}': --end-date {_day(end)} is before --start-date {_day(start)}; "
            "swap them or pick a later end date"
        )
    if dag.start_date is not None and start < dag.start_date:
        raise UserError(
            f"backfill of DAG '{dag.dag_id}': --start-date {_day(start)} is before the DAG's start_date "
            f"{_day(dag.start_date)}; use a start date on or after it"
        )
    if dag.end_date is not None and start > dag.end_date:
        raise UserError(
            f"backfill of DAG '{dag.dag_id}': --start-date {_day(start)} is after the DAG's end_date "
            f"{_day(dag.end_date)}; use a start date on or before it"
        )
    if end > now:
        raise UserError(
            f"backfill of DAG '{dag.dag_id}': --end-date {_day(end)} is in the future (now is {_day(now)}); "
            "backfill runs dates whose data interval has ended"
        )
    intervals = backfill_intervals(dag, start, end, now)
    if not intervals:
        raise UserError(
            f"backfill of DAG '{dag.dag_id}': no complete '{dag.timetable.description}' interval starts between "
            f"--start-date {_day(start)} and --end-date {_day(end)}; widen the range"
        )
    plan = BackfillPlan(dag, intervals)
    for interval in intervals:
        existing = queries.runs_at(metastore.db, dag.dag_id, interval.start)
        if not existing:
            plan.to_create.append(interval)
            continue
        run = existing[-1]
        if run.state in RUN_ACTIVE:
            plan.to_drive.append(run)
            continue
        tis = queries.task_instances(metastore.db, run.dag_id, run.run_id)
        if reset_dagruns:
            plan.to_clear.append((run, [ti.task_id for ti in tis]))
        elif rerun_failed_tasks and run.state is RunState.FAILED:
            plan.to_clear.append((run, [ti.task_id for ti in tis if ti.state in TASK_FAILED_LIKE]))
        else:
            plan.untouched.append(run)
    return plan


def start_backfill(metastore: Metastore, plan: BackfillPlan, now: datetime) -> list[DagRunRecord]:
    """Write the plan: create the new runs and clear the chosen ones. Returns every run the backfill drives."""
    dag = plan.dag
    if plan.to_clear:
        metastore.store.clear_task_instances(dag, plan.to_clear, ACTOR, now=now)
    runs = [run for run, _ in plan.to_clear] + plan.to_drive
    for interval in plan.to_create:
        runs.append(metastore.store.create_dag_run(
            dag, make_run_id("backfill", interval.start), "backfill", interval.start, interval, actor=ACTOR, now=now,
        ))
    return sorted((queries.get_run(metastore.db, r.dag_id, r.run_id) for r in runs), key=lambda r: r.logical_date)


def drive_runs(
    settings: Settings, metastore: Metastore, dag: DAG, runs: list[DagRunRecord], executor_name: str | None = None,
    on_tick: Callable[[], None] | None = None, idle_sleep: float = 0.2,
) -> list[DagRunRecord]:
    """Run these runs to their end with the scheduler loop (max_active_runs holds the rest queued)."""
    dags = {dag.dag_id: dag}
    executor = make_executor(settings, metastore, dags.get, executor_name)
    loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=settings.heartbeat_timeout,
                         max_map_length=settings.max_map_length, log_folder=settings.resolved_log_folder,
                         callback_time_limit=settings.callback_time_limit)
    ids = [r.id for r in runs]
    executor.start()
    over = False
    try:
        while True:
            result = loop.tick(run_filter=ids)
            if on_tick is not None:
                on_tick()
            current = [queries.get_run(metastore.db, r.dag_id, r.run_id) for r in runs]
            if all(r.state in RUN_TERMINAL for r in current):
                over = True
                return current
            if not result.changed:
                loop.idle(idle_sleep)
    finally:
        end_drive(executor, over, loop.callbacks)
