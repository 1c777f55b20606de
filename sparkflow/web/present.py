"""Presentation helpers for pages: state colours, durations, byte sizes, schedules in words.

The state machine (sparkflow.state) has no colours on purpose; they live here, Airflow's palette.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

STATE_COLOURS = {
    "none": "#d7d7d7",
    "scheduled": "#d2b48c",
    "queued": "#808080",
    "running": "#01ff70",
    "success": "#008000",
    "failed": "#ff0000",
    "up_for_retry": "#ffd700",
    "up_for_reschedule": "#40e0d0",
    "upstream_failed": "#ffa500",
    "skipped": "#ff69b4",
    "removed": "#d3d3d3",
}
DARK_STATES = {"success", "failed", "queued"}  # white text reads better on these


@dataclass(frozen=True)
class MappedSummary:
    """A mapped task in one run, as one grid cell: how many instances, how many in each state, and the state the
    cell is coloured by (Airflow's rule: the most pressing state among them)."""

    instances: tuple[Any, ...]  # TaskInstanceRecords by map_index

    @property
    def count(self) -> int:
        return len(self.instances)

    @property
    def states(self) -> dict[str, int]:
        return dict(Counter(ti.state.value for ti in self.instances))

    @property
    def state(self) -> str:
        found = self.states
        for state in ("running", "queued", "up_for_retry", "up_for_reschedule", "scheduled", "failed",
                      "upstream_failed", "none", "skipped", "success", "removed"):
            if state in found:
                return state
        return "none"

    @property
    def summary(self) -> str:
        return ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))

    @property
    def duration(self) -> float | None:
        starts = [ti.start_date for ti in self.instances if ti.start_date]
        ends = [ti.end_date for ti in self.instances if ti.end_date]
        return (max(ends) - min(starts)).total_seconds() if starts and ends else None


def mapped_summary(instances: Sequence[Any]) -> MappedSummary:
    return MappedSummary(tuple(sorted(instances, key=lambda ti: ti.map_index)))


def colour(state: object) -> str:
    return STATE_COLOURS.get(str(state), "#eeeeee")


def text_colour(state: object) -> str:
    return "#ffffff" if str(state) in DARK_STATES else "#111111"


def duration(seconds: float | None) -> str:
    if not isinstance(seconds, (int, float)):  # None, or a metric this Spark version does not report
        return ""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def nbytes(value: float | None) -> str:
    if not isinstance(value, (int, float)):
        return ""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


_PRESETS = {
    "@hourly": "every hour", "@daily": "every day at 00:00 UTC", "@weekly": "every Sunday at 00:00 UTC",
    "@monthly": "on the 1st of every month at 00:00 UTC", "@yearly": "every 1 January at 00:00 UTC",
    "@annually": "every 1 January at 00:00 UTC", "@once": "once",
}
_DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def schedule_words(description: str | None) -> str:
    """The schedule as a sentence: '@daily (0 0 * * *)' -> 'every day at 00:00 UTC'."""
    if not description:
        return "manual runs only"
    text = description.strip()
    if text.startswith("assets: "):  # DAG.schedule_description of a DAG scheduled on assets
        assets, _, timetable = text[len("assets: "):].partition("; or ")
        words = f"when {assets} {'is' if ' ' not in assets else 'are'} updated"
        return f"{words}, or {schedule_words(timetable)}" if timetable else words
    preset = text.split(" ", 1)[0]
    if preset in _PRESETS:
        return _PRESETS[preset]
    if text.startswith("Never"):
        return "manual runs only"
    if text.startswith("Once"):
        return "once, at the start date"
    if text.startswith("every "):
        return text
    match = re.search(r"([\d*/,\-]+ [\d*/,\-]+ [\d*/,\-]+ [\d*/,\-]+ [\w*/,\-]+)", text)
    return _cron_words(match.group(1)) if match else text


def _cron_words(cron: str) -> str:
    minute, hour, dom, month, dow = cron.split()
    if (hour, dom, month, dow) == ("*", "*", "*", "*"):
        if minute == "*":
            return "every minute"
        if minute.startswith("*/"):
            return f"every {minute[2:]} minutes"
        if minute.isdigit():
            return f"every hour at :{int(minute):02d}"
    if minute.isdigit() and hour.isdigit() and month == "*":
        at = f"at {int(hour):02d}:{int(minute):02d} UTC"
        if dom == "*" and dow == "*":
            return f"every day {at}"
        if dom == "*" and dow.isdigit() and int(dow) < 8:
            return f"every {_DAYS[int(dow)]} {at}"
        if dow == "*" and dom.isdigit():
            return f"on day {dom} of every month {at}"
    if minute.isdigit() and hour.startswith("*/") and (dom, month, dow) == ("*", "*", "*"):
        return f"every {hour[2:]} hours at :{int(minute):02d}"
    return f"cron {cron}"
