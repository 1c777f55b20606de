"""A try's standard output and error, in a task process: a pipe whose reader appends to the try's log through
``logs.write_capped``.

Why a pipe, not the log file itself on file descriptors 1 and 2: whatever writes to those descriptors directly (a
subprocess that inherits them, ``os.system``, a C library) would bypass the log's size cap
(``max_task_log_bytes``) and fill the disk. Through the pipe every byte is counted; output past the cap is read
and dropped, so the writer never blocks on a full pipe. A write that fails (a full disk) is dropped too: the
try's log handler, writing to the same file, reports it (see task_runner).
"""

from __future__ import annotations

import _thread
import contextlib
import os

from sparkflow.logs import write_capped
from sparkflow.runtime import spare_threads

# How long close() waits for the pipe's last bytes: what a try left holding the pipe open is killed before.
DRAIN_SECONDS = 5.0


class OutputPump:
    """Descriptors 1 and 2 of this process write into a pipe; a thread appends what arrives to ``log_fd``."""

    def __init__(self, log_fd: int, max_bytes: int) -> None:
        self.log_fd, self.max_bytes = log_fd, max_bytes
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._read_end = read_end
        self._pumping = _thread.allocate_lock()  # held while a spare thread copies this pipe
        self._pumping.acquire()
        spare_threads.start(self._pump)

    def _pump(self) -> None:
        try:
            self._copy()
        finally:
            self._pumping.release()

    def _copy(self) -> None:
        dropping = False
        while True:
            try:
                chunk = os.read(self._read_end, 1 << 16)
            except InterruptedError:
                continue
            if not chunk:
                return
            if dropping:
                continue
            try:
                dropping = not write_capped(self.log_fd, chunk, self.max_bytes)
            except OSError:
                pass  # a full disk: dropped, as the log handler reports

    def close(self, null_fd: int) -> bool:
        """Point 1 and 2 at ``null_fd`` and let the thread write what is left in the pipe. False when it is
        still running after DRAIN_SECONDS (a process the try started holds the pipe open): the process must then
        not be reused."""
        os.dup2(null_fd, 1)
        os.dup2(null_fd, 2)
        if not self._pumping.acquire(timeout=DRAIN_SECONDS):
            return False
        with contextlib.suppress(OSError):
            os.close(self._read_end)
        os.close(self.log_fd)
        return True
