"""Bare threads kept for reuse within a task process: a warm worker runs many tries, and starting a thread for each
try's output pipe (runtime/output_pump.py) cost it more than the rest of the pipe.

Bare (``_thread``), not ``threading.Thread``: Thread.start() waits until the new thread has run, on a try's critical
path, and a bare thread is not one of the try's own threads that make a worker unfit for reuse
(runtime/process_reuse.py). Only for task processes: a parked thread left in a process that later forks (a
scheduler running tries in-process) is best avoided, so the heartbeat keeps a thread of its own per try.
"""

from __future__ import annotations

import _thread
import os
import sys
from collections.abc import Callable

_idle: list[_Spare] = []
_lock = _thread.allocate_lock()


class _Spare:
    def __init__(self) -> None:
        self.job: Callable[[], None] | None = None
        self.go = _thread.allocate_lock()  # released when a job is handed over
        self.go.acquire()
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        while True:
            self.go.acquire()
            job, self.job = self.job, None
            try:
                assert job is not None
                job()
            except BaseException as exc:  # noqa: BLE001 - a job handles its own errors; this thread must live on
                print(f"sparkflow: a background job failed: {exc!r}", file=sys.stderr)
            with _lock:
                _idle.append(self)


def start(job: Callable[[], None]) -> None:
    """Run ``job`` in a spare thread of this process (a new one when none is idle); it is not waited for."""
    with _lock:
        spare = _idle.pop() if _idle else None
    if spare is None:
        spare = _Spare()
    spare.job = job
    spare.go.release()


def _after_fork_in_child() -> None:
    """Threads do not survive fork(): the child has none of the parent's spares (and a fresh lock, in case a
    spare held it at the fork)."""
    global _lock
    _idle.clear()
    _lock = _thread.allocate_lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
