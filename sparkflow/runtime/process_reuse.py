"""What a reused worker process puts back between tries, and what makes it unfit to reuse (see
runtime/forkserver.py). Runs in the worker process."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ProcessState:
    """What a try may change in its worker process that the worker puts back before the next try."""

    environ: dict[bytes, bytes]  # os.environ's own encoded copy: compared in C, not variable by variable
    cwd: str
    path: list[str]

    @classmethod
    def save(cls) -> ProcessState:
        return cls(dict(os.environ._data), os.getcwd(), list(sys.path))  # type: ignore[attr-defined]

    def changes_left(self) -> str:
        """Why the process cannot be reused as it is ("" when it can): threads the try started (beyond the main
        thread; the worker's own helpers are bare threads, not counted) or child processes still alive."""
        if threading.active_count() > 1:
            return f"the task left {threading.active_count() - 1} thread(s) running"
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:  # reap what ended; stop at one still alive
                pass
        except ChildProcessError:
            return ""  # no child processes at all
        return "the task left child processes running"

    def restore(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # nothing between tries writes into the last try's log
            os.dup2(null, fd)
        os.close(null)
        if os.environ._data != self.environ:  # type: ignore[attr-defined]
            os.environ.clear()
            os.environb.update(self.environ)
        with contextlib.suppress(OSError):
            if os.getcwd() != self.cwd:
                os.chdir(self.cwd)
        sys.path[:] = self.path
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)


def too_large(limit_mb: int) -> str:
    """Why a worker is too large to keep ("" when it is not): its resident memory now, against the limit."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (OSError, ValueError, IndexError):
        return ""
    return f"it uses {resident} MB, more than max_memory_per_child_mb={limit_mb}" if resident > limit_mb else ""
