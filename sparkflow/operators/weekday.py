"""Days of the week: Airflow's ``WeekDay``, ``DayOfWeekSensor`` and ``BranchDayOfWeekOperator``.

The day is today's (UTC, from the runtime's clock) unless ``use_task_logical_date`` takes the run's logical date.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, utcnow
from sparkflow.operators.branch import BaseBranchOperator
from sparkflow.operators.sensors import BaseSensorOperator

WeekDaySpec = str | int | Iterable[str | int]


class WeekDay(enum.IntEnum):
    """ISO weekday numbers, as ``datetime.isoweekday()`` gives them."""

    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6
    SUNDAY = 7

    @classmethod
    def get_weekday_number(cls, week_day_str: str) -> int:
        try:
            return cls[week_day_str.upper()]
        except KeyError:
            raise AttributeError(
                f'Invalid Week Day passed: "{week_day_str}"; use one of {", ".join(cls.__members__)}'
            ) from None

    @classmethod
    def convert(cls, day: str | int) -> int:
        if isinstance(day, WeekDay):
            return day
        if isinstance(day, str):
            return cls.get_weekday_number(day)
        raise TypeError(f"week day {day!r} is neither a WeekDay nor a day name like 'Monday'")

    @classmethod
    def validate_week_day(cls, week_day: WeekDaySpec) -> set[int]:
        """A day or days (names or WeekDay members, alone or in any iterable) -> their ISO numbers."""
        if isinstance(week_day, (str, WeekDay)):
            return {cls.convert(week_day)}
        if isinstance(week_day, Iterable):
            days = {cls.convert(day) for day in week_day}
            if days:
                return days
        raise TypeError(
            f"Unsupported Type for week_day parameter: {week_day!r}. Give a day name like 'Monday', a WeekDay, "
            "or a set/list of them"
        )


def _weekday(context: Context, use_task_logical_date: bool) -> int:
    day = context["logical_date"] if use_task_logical_date else utcnow()
    return int(day.isoweekday())


def _week_day_numbers(operator: BaseOperator, week_day: WeekDaySpec) -> set[int]:
    """The day numbers ``week_day`` names; a bad one is the operator's one-line error."""
    try:
        return WeekDay.validate_week_day(week_day)
    except (AttributeError, TypeError) as exc:
        raise operator._error(str(exc)) from None


class DayOfWeekSensor(BaseSensorOperator):
    """Done on the given day(s) of the week."""

    template_fields = ("week_day",)

    def __init__(self, *, week_day: WeekDaySpec, use_task_logical_date: bool = False,
                 use_task_execution_day: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.week_day = week_day
        self.use_task_logical_date = use_task_logical_date or use_task_execution_day
        self._week_day_num = _week_day_numbers(self, week_day)

    def poke(self, context: Context) -> bool:
        return _weekday(context, self.use_task_logical_date) in self._week_day_num

    def _poke_description(self) -> str:
        return f"for week day {sorted(WeekDay(d).name for d in self._week_day_num)}"


class BranchDayOfWeekOperator(BaseBranchOperator):
    """Follows ``follow_task_ids_if_true`` on the given day(s) of the week, else ``follow_task_ids_if_false``."""

    def __init__(self, *, follow_task_ids_if_true: str | Iterable[str], follow_task_ids_if_false: str | Iterable[str],
                 week_day: WeekDaySpec, use_task_logical_date: bool = False, use_task_execution_day: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.week_day = week_day
        self.use_task_logical_date = use_task_logical_date or use_task_execution_day
        self._week_day_num = _week_day_numbers(self, week_day)

    def choose_branch(self, context: Context) -> str | Iterable[str]:
        if _weekday(context, self.use_task_logical_date) in self._week_day_num:
            return self.follow_task_ids_if_true
        return self.follow_task_ids_if_false
