"""Runs one workload at a time inside the calling process (debugging, `dags test`, fast unit tests)."""

from __future__ import annotations

from collections.abc import Callable

from sparkflow.executors.base import ExecutorEvent, Workload
from sparkflow.metastore.records import TIKey


class SequentialExecutor:
    name = "sequential"

    def __init__(self, run: Callable[[Workload], object]) -> None:
        self._run = run
        self._pending: list[Workload] = []

    def start(self) -> None:
        pass

    def open_slots(self) -> int:
        return 0 if self._pending else 1

    def queue(self, workload: Workload) -> None:
        self._pending.append(workload)

    def sync(self) -> list[ExecutorEvent]:
        events = []
        while self._pending:
            workload = self._pending.pop(0)
            self._run(workload)
            events.append(ExecutorEvent(workload, 0))
        return events

    def running(self) -> set[TIKey]:
        return {w.key for w in self._pending}

    def in_flight(self) -> bool:
        return bool(self._pending)

    def wait(self, timeout: float) -> None:
        pass  # workloads run inside sync(); nothing runs in between

    def cleanup_stuck_queued_tasks(self, keys: set[TIKey]) -> None:
        self._pending = [w for w in self._pending if w.key not in keys]

    def end(self, kill: bool = False, grace: float | None = None) -> None:
        self._pending.clear()
