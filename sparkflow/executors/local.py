"""Runs each workload in its own Python process (``python -m sparkflow.runtime``), up to ``parallelism`` at once.

A task that crashes, leaks memory or calls os._exit cannot take the scheduler down; its exit code comes back as
an event and the scheduler fails or retries the task if the runner could not record an outcome.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sparkflow.executors.base import ExecutorEvent, Workload
from sparkflow.logs import task_log_path
from sparkflow.metastore.records import TIKey
from sparkflow.process import terminate_group

POLL_SECONDS = 0.005  # how often wait() looks for ended task processes


@dataclass
class _Running:
    workload: Workload
    proc: subprocess.Popen[bytes]


class LocalExecutor:
    name = "local"

    def __init__(self, parallelism: int, log_folder: Path, env: dict[str, str] | None = None) -> None:
        self.parallelism = parallelism
        self.log_folder = log_folder
        self.env = env
        self._queued: list[Workload] = []
        self._running: dict[TIKey, _Running] = {}

    def start(self) -> None:
        pass

    def open_slots(self) -> int:
        return max(self.parallelism - len(self._running) - len(self._queued), 0)

    def queue(self, workload: Workload) -> None:
        self._queued.append(workload)

    def _launch(self, workload: Workload) -> None:
        key = workload.key
        # Anything the process prints before the runner takes over its log (an import crash) lands in the same
        # file the runner will write, so the reason is never lost.
        path = task_log_path(self.log_folder, key.dag_id, key.run_id, key.task_id, workload.try_number)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sparkflow.runtime", key.dag_id, key.run_id, key.task_id,
                 str(workload.try_number)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                start_new_session=True,  # its own group: killing it takes its children (spark-submit) along
            )
        self._running[key] = _Running(workload, proc)

    def sync(self) -> list[ExecutorEvent]:
        events = []
        for key, item in list(self._running.items()):
            code = item.proc.poll()
            if code is not None:
                del self._running[key]
                reason = None if code == 0 else f"task process exited with code {code}"
                events.append(ExecutorEvent(item.workload, code, reason))
        self._queued.sort(key=lambda w: -w.priority_weight)
        while self._queued and len(self._running) < self.parallelism:
            self._launch(self._queued.pop(0))
        return events

    def running(self) -> set[TIKey]:
        return set(self._running) | {w.key for w in self._queued}

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._queued or any(item.proc.poll() is not None for item in self._running.values()):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(POLL_SECONDS, left))

    def kill(self, key: TIKey) -> bool:
        item = self._running.get(key)
        if item is None:
            return False
        terminate_group(item.proc)
        return True

    def end(self, kill: bool = False) -> None:
        self._queued.clear()
        for item in self._running.values():
            if kill:
                terminate_group(item.proc)
            item.proc.wait()
        self._running.clear()

