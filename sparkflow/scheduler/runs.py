"""Creating DagRuns: manual triggers (CLI, API) and scheduled runs, with Airflow's run ids and data intervals."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.schedule import CronTimetable, DataInterval, DeltaTimetable, NullTimetable
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.state import RUN_ACTIVE


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def parse_run_conf(text: str | None, source: str = "--conf") -> dict[str, Any] | None:
    """A run conf as typed on the CLI or in a form: nothing (None or blank) or a JSON object."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise UserError(f"{source} is not valid JSON ({exc.msg} at position {exc.pos}); pass an object like "
                        "'{\"key\": \"value\"}'") from None
    except ValueError as exc:  # NaN / Infinity: Python's json takes them, JSON (and the API) does not
        raise UserError(f"{source} contains {exc}, which is not JSON; use a number or a string") from None
    if not isinstance(value, dict):
        raise UserError(f"{source} must be a JSON object like '{{\"key\": \"value\"}}', got {type(value).__name__}")
    return value


# Airflow's default allowed_run_id_pattern, and its run_id column's length
RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.~:+-]{1,250}$")


def check_run_id(run_id: str) -> None:
    """A run id a user chose: Airflow's characters (letters, digits, _ . ~ : + -) and at most 250 of them, so it
    is reachable in every API path and makes a valid log folder name."""
    if not RUN_ID_PATTERN.match(run_id):
        shown = run_id if len(run_id) <= 60 else run_id[:60] + f"... ({len(run_id)} characters)"
        raise UserError(f"run_id {shown!r} is invalid; use 1 to 250 of these characters: letters, digits and "
                        "_ . ~ : + - (Airflow's allowed_run_id_pattern)")


def make_run_id(run_type: str, logical_date: datetime) -> str:
    """Airflow's shape: ``manual__2024-01-01T00:00:00+00:00``."""
    return f"{run_type}__{logical_date.isoformat()}"


def trigger_dag(
    metastore: Metastore,
    dag: DAG,
    now: datetime,
    conf: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    actor: str = "cli",
) -> DagRunRecord:
    """Create a manual run. The data interval is inferred from the schedule as Airflow does for manual runs."""
    if conf is not None and not isinstance(conf, Mapping):
        raise UserError(f"--conf must be a JSON object like '{{\"key\": \"value\"}}', got {type(conf).__name__}")
    logical = logical_date or now
    if run_id is not None:
        check_run_id(run_id)
    if run_id is not None and (not run_id.strip() or run_id.startswith(("scheduled__", "backfill__"))):
        raise UserError(
            f"--run-id {run_id!r} is not allowed; use a non-empty id not starting with scheduled__ or backfill__"
        )
    interval = dag.infer_manual_data_interval(logical)
    return metastore.store.create_dag_run(
        dag, run_id or make_run_id("manual", logical), "manual", logical, interval, conf, actor=actor, now=now
    )


@dataclass
class ScheduledRuns:
    """What one pass of scheduling did for a DAG: the runs created, and whether ``max_runs`` held more back."""

    created: list[DagRunRecord] = field(default_factory=list)
    capped: bool = False
    # When nothing was due: no scheduled run can be due before this (the end of the next interval; NEVER for
    # schedule=None), so a scheduler need not look at the DAG again until then. None: look again next time.
    not_due_before: datetime | None = None


NEVER = datetime.max.replace(tzinfo=UTC)


def _not_due_before(dag: DAG, last: DataInterval | None, now: datetime) -> datetime | None:
    """The end of the interval after ``last`` when that is still to come (cron and timedelta schedules, whose
    intervals follow each other whatever ``now`` is); NEVER for schedule=None; else None (ask again)."""
    timetable = dag.timetable
    if type(timetable) is NullTimetable:
        return NEVER
    if not isinstance(timetable, CronTimetable | DeltaTimetable):
        return None
    upcoming = timetable.next_interval(last, dag.start_date, NEVER, True)
    return upcoming.end if upcoming is not None and upcoming.end > now else None


def create_scheduled_runs(
    metastore: Metastore, dag: DAG, now: datetime, max_runs: int, actor: str = "scheduler"
) -> ScheduledRuns:
    """Create the scheduled runs that are due for ``dag``: each interval after the last scheduled run whose end
    has passed (every missed one with catchup, else only the latest), while the DAG has fewer than
    max_active_runs active runs, and at most ``max_runs`` in one call (``capped`` says more were due).
    A logical date that already has a run (a backfill, a manual run at that date) is skipped, not duplicated."""
    result = ScheduledRuns()
    db = metastore.db
    last_run = queries.latest_run(db, dag.dag_id, ["scheduled"])
    last = None
    if last_run is not None and last_run.data_interval_start is not None and last_run.data_interval_end is not None:
        last = DataInterval(last_run.data_interval_start, last_run.data_interval_end)
    interval = dag.next_data_interval(last, now)
    if interval is None:
        result.not_due_before = _not_due_before(dag, last, now)
        return result
    room = dag.max_active_runs - len(queries.list_runs(db, dag.dag_id, states=RUN_ACTIVE))
    limit = min(room, max_runs)
    while interval is not None and room > 0:
        if len(result.created) >= limit:
            result.capped = limit == max_runs
            break
        if not queries.runs_at(db, dag.dag_id, interval.start):
            result.created.append(metastore.store.create_dag_run(
                dag, make_run_id("scheduled", interval.start), "scheduled", interval.start, interval, actor=actor,
                now=now,
            ))
        interval = dag.next_data_interval(interval, now)
    return result
