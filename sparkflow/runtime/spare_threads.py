"""Bare threads kept for reuse within a task process: a warm worker runs many tries, and starting a thread for each
try's output pipe (runtime/output_pump.py) and heartbeat (runtime/guards.py) cost it more than the work itself.

Bare (``_thread``), not ``threading.Thread``: Thread.start() waits until the new thread has run, on a try's critical
path, and a bare thread is not one of the try's own threads that make a worker unfit for reuse
(runtime/process_reuse.py). Kept only once a task process says so (``keep()``): elsewhere (a scheduler running
tries in-process, which later forks its fork server) a parked thread is best avoided, and ``start`` starts a
thread that ends with its job.
"""

from __future__ import annotations

import _thread
import os
import sys
from collections.abc import Callable

_idle: list[_Spare] = []
_lock = _thread.allocate_lock()
_keeping = False


def keep() -> None:
    """From now on (in this process, not in its forked children) a thread whose job is done waits for the next."""
    global _keeping
    _keeping = True


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
            assert job is not None
            _run_alone(job)
            with _lock:
                _idle.append(self)


def _run_alone(job: Callable[[], None]) -> None:
    try:
        job()
    except BaseException as exc:  # noqa: BLE001 - a job handles its own errors; a kept thread must live on
        print(f"sparkflow: a background job failed: {exc!r}", file=sys.stderr)


def start(job: Callable[[], None]) -> None:
    """Run ``job`` in a spare thread of this process (a new one when none is idle); it is not waited for."""
    if not _keeping:
        _thread.start_new_thread(_run_alone, (job,))
        return
    with _lock:
        spare = _idle.pop() if _idle else None
    if spare is None:
        spare = _Spare()
    spare.job = job
    spare.go.release()


def _after_fork_in_child() -> None:
    """Threads do not survive fork(): the child has none of the parent's spares (and a fresh lock, in case a
    spare held it at the fork)."""
    global _lock, _keeping
    _idle.clear()
    _lock = _thread.allocate_lock()
    _keeping = False


os.register_at_fork(after_in_child=_after_fork_in_child)
