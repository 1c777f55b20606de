"""The executor protocol the scheduler loop talks to."""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
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
    the local executor reports it the moment the runner says so, before the process has left).

    ``recorded``: the runner itself said it recorded the try's outcome, so the scheduler need not read the task
    instance to find out whether the process ended before its try started."""

    workload: Workload
    exit_code: int
    reason: str | None = None
    recorded: bool = False


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

    def in_flight(self) -> bool:
        """Whether anything handed to it has not ended yet (so wait() can wake when it does). More than running():
        the Celery executor stops counting a task as running once a worker took it, yet reports its end."""

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when a workload ends (so the loop reacts at once)."""

    def cleanup_stuck_queued_tasks(self, keys: set[TIKey]) -> None:
        """Stop trying to start these queued workloads (task_queued_timeout passed; the scheduler fails them):
        Airflow's name. A start that still happens finds the try no longer queued and runs nothing."""

    def end(self, kill: bool = False, grace: float | None = None) -> None:
        """Stop: wait for running workloads (at most ``grace`` seconds when given, then kill what is left), or
        kill them (SIGTERM) when ``kill``."""


def task_process_gone(pid: int | None, hostname: str | None) -> bool:
    """True when a task's process ran on this host and no longer exists (or is a zombie nobody reaps). A process
    elsewhere, this process itself (an in-process try), or one we cannot see is judged by its heartbeat instead."""
    if pid is None or hostname != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def exit_reason(code: int) -> str | None:
    """Why a task process ended without recording an outcome, from its exit code (negative: killed by a signal)."""
    if code == 0:
        return None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"task process was killed by {name}"
    return f"task process exited with code {code}"
