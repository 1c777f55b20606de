"""Schedules as Airflow defines them: cron expressions, presets, timedelta, None, with data intervals.

A scheduled run covers the interval [start, end) and runs once ``end`` has passed; its logical date is ``start``
(a daily run for 2024-01-01 starts after 2024-01-02 00:00 and has ``ds`` = 2024-01-01).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Protocol

PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


@dataclass(frozen=True)
class DataInterval:
    start: datetime
    end: datetime


class Timetable(Protocol):
    description: str
    periodic: bool

    def infer_manual_data_interval(self, run_after: datetime) -> DataInterval: ...

    def next_interval(
        self, last: DataInterval | None, start_date: datetime | None, now: datetime, catchup: bool
    ) -> DataInterval | None: ...


def _utc(dt: datetime, default_tz: tzinfo = UTC) -> datetime:
    return dt.replace(tzinfo=default_tz) if dt.tzinfo is None else dt


class NullTimetable:
    """schedule=None: manual runs only."""

    description = "Never, manual runs only"
    periodic = False

    def infer_manual_data_interval(self, run_after: datetime) -> DataInterval:
        return DataInterval(run_after, run_after)

    def next_interval(self, last, start_date, now, catchup):  # type: ignore[no-untyped-def]
        return None


class OnceTimetable(NullTimetable):
    """@once: one run at start_date."""

    description = "Once, at the start date"

    def next_interval(self, last, start_date, now, catchup):  # type: ignore[no-untyped-def]
        if last is not None or start_date is None or start_date > now:
            return None
        return DataInterval(start_date, start_date)


def _croniter(*args: Any) -> Any:
    from croniter import croniter

    return croniter(*args)


class CronTimetable:
    def __init__(self, expression: str, tz: tzinfo = UTC) -> None:
        cron = PRESETS.get(expression, expression)
        if expression.startswith("@") and expression not in PRESETS:
            raise ValueError(
                f"unknown schedule preset {expression!r}; use one of @once, {', '.join(PRESETS)}"
            )
        from croniter import CroniterBadCronError  # only cron schedules pay for importing croniter (~18 ms)

        try:
            _croniter(cron)
        except (CroniterBadCronError, ValueError, KeyError) as exc:
            raise ValueError(
                f"invalid cron expression {expression!r} ({exc}); expected 5 fields like '0 2 * * *'"
            ) from None
        self.expression = expression
        self._cron = cron
        self._tz = tz
        self.description = f"cron {expression}" if expression == cron else f"{expression} ({cron})"
        self.periodic = True

    def _next(self, after: datetime) -> datetime:
        value: datetime = _croniter(self._cron, after.astimezone(self._tz)).get_next(datetime)
        return value.astimezone(UTC)

    def _prev(self, before: datetime) -> datetime:
        value: datetime = _croniter(self._cron, before.astimezone(self._tz)).get_prev(datetime)
        return value.astimezone(UTC)

    def _align_up(self, dt: datetime) -> datetime:
        """dt itself if it is a fire time, else the next one."""
        return self._next(dt - timedelta(microseconds=1))

    def infer_manual_data_interval(self, run_after: datetime) -> DataInterval:
        end = self._prev(run_after + timedelta(microseconds=1))  # last fire time <= run_after
        return DataInterval(self._prev(end), end)

    def next_interval(
        self, last: DataInterval | None, start_date: datetime | None, now: datetime, catchup: bool
    ) -> DataInterval | None:
        if last is not None:
            start = last.end
        elif start_date is not None:
            start = self._align_up(start_date)
        else:
            return None
        if not catchup:
            # Only the latest complete interval: the one ending at the last fire time <= now.
            latest_end = self._prev(now + timedelta(microseconds=1))
            latest_start = self._prev(latest_end)
            start = max(start, latest_start)
        end = self._next(start)
        return DataInterval(start, end) if end <= now else None


class DeltaTimetable:
    def __init__(self, delta: timedelta) -> None:
        if delta <= timedelta(0):
            raise ValueError(f"schedule timedelta must be positive, got {delta}")
        self.delta = delta
        self.description = f"every {delta}"
        self.periodic = True

    def infer_manual_data_interval(self, run_after: datetime) -> DataInterval:
        return DataInterval(run_after - self.delta, run_after)

    def next_interval(
        self, last: DataInterval | None, start_date: datetime | None, now: datetime, catchup: bool
    ) -> DataInterval | None:
        if last is not None:
            start = last.end
        elif start_date is not None:
            start = start_date
        else:
            return None
        if not catchup:
            periods = (now - start) // self.delta  # complete intervals between start and now
            if periods > 1:
                start += (periods - 1) * self.delta
        end = start + self.delta
        return DataInterval(start, end) if end <= now else None


def make_timetable(schedule: object, tz: tzinfo = UTC) -> Timetable:
    """Turn a DAG's ``schedule`` argument into a Timetable, or raise ValueError naming the bad value."""
    if schedule is None:
        return NullTimetable()
    if isinstance(schedule, str):
        if schedule == "@once":
            return OnceTimetable()
        return CronTimetable(schedule, tz)
    if isinstance(schedule, timedelta):
        return DeltaTimetable(schedule)
    if hasattr(schedule, "infer_manual_data_interval") and hasattr(schedule, "next_interval"):
        return schedule  # type: ignore[return-value]
    raise ValueError(
        f"schedule {schedule!r} is not supported; use a cron string, a preset like '@daily', a timedelta or None"
    )


def ensure_aware(dt: datetime, tz: tzinfo = UTC) -> datetime:
    return _utc(dt, tz)
