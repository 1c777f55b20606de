"""The executor protocol the scheduler loop talks to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sparkflow.metastore.records import TIKey


@dataclass(frozen=True)
class Workload:
    key: TIKey
    try_number: int
    priority_weight: int = 1
    queue: str = "default"


@dataclass(frozen=True)
class ExecutorEvent:
    """A workload ended, or its runner recorded the outcome (``exit_code`` 0: the outcome is in the metastore;
    the local executor reports it the moment the runner says so, before the process has left)."""

    workload: Workload
    exit_code: int
    reason: str | None = None


class Executor(Protocol):
    name: str

    def start(self) -> None: ...

    def open_slots(self) -> int:
        """How many more workloads may be queued now."""

    def queue(self, workload: Workload) -> None: ...

    def sync(self) -> list[ExecutorEvent]:
        """Advance: start what is queued, return what ended since the last call."""

    def running(self) -> set[TIKey]:
        """Keys this executor is responsible for right now (queued or running)."""

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when a workload ends (so the loop reacts at once)."""

    def end(self, kill: bool = False, grace: float | None = None) -> None:
        """Stop: wait for running workloads (at most ``grace`` seconds when given, then kill what is left), or
        kill them (SIGTERM) when ``kill``."""
