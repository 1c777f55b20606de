"""Airflow's timetable API (``airflow.timetables.base``) for a user's own Timetable class.

An Airflow user writes a subclass of ``Timetable`` with ``infer_manual_data_interval(*, run_after)`` and
``next_dagrun_info(*, last_automated_data_interval, restriction)`` (and ``serialize``/``deserialize`` for its
state), keeps it in a plugins-folder module and uses it as a DAG's ``schedule``. This base class answers
sparkflow's timetable protocol (``next_interval``) with those two methods, so the planner schedules such a DAG as
Airflow would; the serialized DAG refers to the class by import path (definitions.custom_timetable). Times given
to the user's methods are pendulum DateTimes, as in Airflow.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import pendulum


class DataInterval(NamedTuple):
    start: datetime
    end: datetime

    @classmethod
    def exact(cls, at: datetime) -> DataInterval:
        return cls(at, at)


class TimeRestriction(NamedTuple):
    earliest: datetime | None
    latest: datetime | None
    catchup: bool


class DagRunInfo(NamedTuple):
    run_after: datetime
    data_interval: DataInterval

    @classmethod
    def exact(cls, at: datetime) -> DagRunInfo:
        return cls(at, DataInterval.exact(at))

    @classmethod
    def interval(cls, start: datetime, end: datetime) -> DagRunInfo:
        return cls(end, DataInterval(start, end))

    @property
    def logical_date(self) -> datetime:
        return self.data_interval.start


def _pendulum(value: datetime | None) -> Any:
    return None if value is None else pendulum.instance(value)


class Timetable:
    """``airflow.timetables.base.Timetable``: subclass it and define the two methods below."""

    description: str = ""
    periodic: bool = True
    can_be_scheduled: bool = True
    active_runs_limit: int | None = None
    run_ordering: tuple[str, ...] = ("data_interval_end", "logical_date")

    @property
    def summary(self) -> str:
        return type(self).__name__

    def serialize(self) -> dict[str, Any]:
        return {}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> Timetable:
        return cls()

    def validate(self) -> None:
        """Airflow calls this when a DAG is parsed; raise to make the DAG an import error."""

    def infer_manual_data_interval(self, *, run_after: datetime) -> DataInterval:
        raise NotImplementedError(f"{type(self).__name__}.infer_manual_data_interval(*, run_after)")

    def next_dagrun_info(self, *, last_automated_data_interval: DataInterval | None,
                         restriction: TimeRestriction) -> DagRunInfo | None:
        raise NotImplementedError(f"{type(self).__name__}.next_dagrun_info(*, last_automated_data_interval, "
                                  "restriction)")

    # sparkflow's timetable protocol, answered with Airflow's methods
    def next_interval(self, last: Any, start_date: datetime | None, now: datetime, catchup: bool) -> Any:
        previous = None if last is None else DataInterval(_pendulum(last.start), _pendulum(last.end))
        info = self.next_dagrun_info(last_automated_data_interval=previous,
                                     restriction=TimeRestriction(_pendulum(start_date), None, catchup))
        if info is None or info.run_after > now:
            return None
        return info.data_interval
