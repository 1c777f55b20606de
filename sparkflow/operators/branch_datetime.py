"""BranchDateTimeOperator: follow one branch inside a time window, another outside it (Airflow's semantics)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sparkflow.definitions.context import Context, utcnow
from sparkflow.operators.branch import BaseBranchOperator


def target_times_as_dates(
    base: datetime, lower: datetime | time | None, upper: datetime | time | None
) -> tuple[datetime | None, datetime | None]:
    """Times of day become datetimes on ``base``'s date; an upper time before the lower one is the next day's."""
    if isinstance(lower, datetime) and isinstance(upper, datetime):
        return lower, upper
    low = datetime.combine(base.date(), lower, base.tzinfo) if isinstance(lower, time) else lower
    high = datetime.combine(base.date(), upper, base.tzinfo) if isinstance(upper, time) else upper
    if low is not None and high is not None and high < low:
        high += timedelta(days=1)
    return low, high


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class BranchDateTimeOperator(BaseBranchOperator):
    """``follow_task_ids_if_true`` when now (or the logical date, with ``use_task_logical_date``) is within
    [target_lower, target_upper]; either bound may be None (open), a datetime, or a time of day."""

    def __init__(self, *, follow_task_ids_if_true: str | Iterable[str], follow_task_ids_if_false: str | Iterable[str],
                 target_lower: datetime | time | None = None, target_upper: datetime | time | None = None,
                 use_task_logical_date: bool = False, use_task_execution_date: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if target_lower is None and target_upper is None:
            raise self._error("Both target_upper and target_lower are None. At least one must be defined to be "
                              "compared to the current datetime")
        for name, bound in (("target_lower", target_lower), ("target_upper", target_upper)):
            if bound is not None and not isinstance(bound, (datetime, time)):
                raise self._error(f"{name} must be a datetime, a time or None, got {type(bound).__name__}")
        self.follow_task_ids_if_true = follow_task_ids_if_true
        self.follow_task_ids_if_false = follow_task_ids_if_false
        self.target_lower = target_lower
        self.target_upper = target_upper
        self.use_task_logical_date = use_task_logical_date or use_task_execution_date

    def choose_branch(self, context: Context) -> str | Iterable[str]:
        now: datetime = context["logical_date"] if self.use_task_logical_date else utcnow()
        lower, upper = target_times_as_dates(now, self.target_lower, self.target_upper)
        lower, upper = _aware(lower), _aware(upper)
        self.log.info("Checking whether %s is within [%s, %s]", now.isoformat(), lower, upper)
        if (upper is not None and upper < now) or (lower is not None and lower > now):
            return self.follow_task_ids_if_false
        return self.follow_task_ids_if_true
