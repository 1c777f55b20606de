"""The DAG processor: a process of its own that keeps the serialized DAGs in step with the DAG folder
(`sparkflow dag-processor`, or a child of `sparkflow scheduler` / `sparkflow standalone`).

It looks at the folder every ``dag_parse_interval`` seconds (one stat() per unchanged file) and parses the files
that changed, each in a time-limited child (parse_worker). SIGTERM/SIGINT stop it at once, a parse in progress
included. Started by a scheduler, it also stops when that scheduler is gone (kill -9 included), so it never
outlives its parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from sparkflow.metastore.bootstrap import Metastore
from sparkflow.scheduler.dag_processing import DagFolderParser
from sparkflow.scheduler.parse_worker import warm_up
from sparkflow.settings import Settings

log = logging.getLogger("sparkflow.dag_processor")
STOP_GRACE_SECONDS = 5.0  # how long a scheduler waits for its processor to stop before it kills it


class DagProcessor:
    def __init__(self, settings: Settings, metastore: Metastore, parent_pid: int | None = None) -> None:
        self.settings = settings
        self.parser = DagFolderParser(settings, metastore)
        self.parent_pid = parent_pid
        self.stop_requested = threading.Event()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested.set()

    def _stopping(self) -> bool:
        if self.parent_pid is not None and os.getppid() != self.parent_pid:
            self.stop_requested.set()  # the scheduler that started us is gone
        return self.stop_requested.is_set()

    def run(self, num_runs: int | None = None, install_signals: bool = True) -> int:
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        log.info("DAG processor started (folder %s, %d parsing process(es), import time-out %g s)",
                 self.settings.resolved_dags_folder, self.settings.parsing_processes,
                 self.settings.dagbag_import_timeout)
        warm_up()  # now, not at the first changed file: a change is then parsed within a fork's time
        loops = 0
        while not self._stopping():
            started = time.monotonic()
            refresh = self.parser.refresh(stop=self._stopping)
            if refresh.changed:
                log.info("parsed %d file(s) in %.2f s: %d DAG(s), %d import error(s); %d file(s) removed",
                         len(refresh.parsed), time.monotonic() - started, refresh.dag_count, refresh.error_count,
                         len(refresh.removed))
            loops += 1
            if num_runs is not None and loops >= num_runs:
                break
            deadline = time.monotonic() + self.settings.dag_parse_interval
            while not self._stopping() and time.monotonic() < deadline:
                self.stop_requested.wait(min(0.5, max(deadline - time.monotonic(), 0)))
        log.info("DAG processor stopped")
        return 0


class DagProcessorChild:
    """A DAG processor started by a scheduler as its child process: restarted if it dies, stopped with it."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0

    def ensure_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            log.warning("the DAG processor (pid %d) exited with code %s; starting another", self.proc.pid,
                        self.proc.returncode)
            self.proc = None
        if time.monotonic() < self._next_start:
            return
        self._next_start = time.monotonic() + 5.0  # a processor that dies at once is not restarted in a loop
        # The child inherits this process's environment, so it reads the same settings.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sparkflow", "dag-processor", "--parent-pid", str(os.getpid())],
            stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
