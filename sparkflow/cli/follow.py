"""Following a run live in the terminal: task state changes and every new log line, as they happen."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click

from sparkflow.logs import read_log, task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord
from sparkflow.state import TASK_TERMINAL, TaskState

# "[2024-01-01 00:00:00,000] {sparkflow.task.X} INFO - " is noise in a terminal that already shows the task.
_LOG_PREFIX = re.compile(r"^\[[^\]]+\] \{[^}]+\} (?:INFO - )?")
STATE_COLOURS = {
    TaskState.SUCCESS: "green", TaskState.FAILED: "red", TaskState.UPSTREAM_FAILED: "red",
    TaskState.RUNNING: "cyan", TaskState.UP_FOR_RETRY: "yellow", TaskState.SKIPPED: "magenta",
    TaskState.QUEUED: "blue",
}


class RunFollower:
    def __init__(self, db: Database, run: DagRunRecord, log_folder: Path,
                 echo: Callable[[str], None] = click.echo) -> None:
        self.db = db
        self.run = run
        self.log_folder = log_folder
        self.echo = echo
        self._states: dict[tuple[str, int], tuple[TaskState, int]] = {}
        self._offsets: dict[Path, int] = {}

    def poll(self) -> None:
        for ti in queries.task_instances(self.db, self.run.dag_id, self.run.run_id):
            seen = (ti.state, ti.try_number)
            changed = self._states.get((ti.task_id, ti.map_index)) != seen
            self._states[(ti.task_id, ti.map_index)] = seen
            # A task's last log lines come before the line announcing how it ended, its first ones after "running".
            if changed and ti.state not in TASK_TERMINAL:
                self._announce(ti)
            for try_number in range(1, ti.try_number + 1):
                self._tail(ti, try_number)
            if changed and ti.state in TASK_TERMINAL:
                self._announce(ti)

    def _announce(self, ti: TaskInstanceRecord) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        state = click.style(ti.state.value, fg=STATE_COLOURS.get(ti.state), bold=True)
        tries = f" (try {ti.try_number})" if ti.try_number > 1 else ""
        reason = f": {ti.error.splitlines()[0]}" if ti.error and ti.state is not TaskState.SUCCESS else ""
        self.echo(f"[{stamp}] {_name(ti)} -> {state}{tries}{reason}")

    def _tail(self, ti: TaskInstanceRecord, try_number: int) -> None:
        path = task_log_path(self.log_folder, self.run.dag_id, self.run.run_id, ti.task_id, try_number, ti.map_index)
        text, offset = read_log(path, self._offsets.get(path, 0))
        self._offsets[path] = offset
        for line in text.splitlines():
            self.echo(f"  {click.style(_name(ti), dim=True)} | {_LOG_PREFIX.sub('', line)}")


def _name(ti: TaskInstanceRecord) -> str:
    """``task`` or, for an instance of a mapped task, ``task[2]``."""
    return f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id
