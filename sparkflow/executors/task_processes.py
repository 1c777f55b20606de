"""Warm task processes for a multi-threaded caller: the Celery worker's threads each hand a try over and wait for
its end, while one thread talks to the fork server.

Why: the Celery worker started every try in a fresh process from a second, separate fork server (multiprocessing's),
about 30x slower than the local path on a fan-out (issue 23). Here the tries run in the fork server the local
executor uses (runtime/forkserver.py), with the same warm-process rules (reuse up to ``max_tasks_per_child``, the
replacement rules, the current user code of the try's DAG only), through the LocalExecutor that already speaks its
protocol; this class only makes it usable from many threads. The fork server is ``bound``: its task processes get
SIGTERM when it ends, and it ends when this process does (even by kill -9), so a try never outlives its worker
(the runner records the try as failed on SIGTERM and kills its Spark application).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from concurrent.futures import Future
from functools import partial

from sparkflow.executors.base import ExecutorEvent, Workload
from sparkflow.executors.local import LocalExecutor
from sparkflow.metastore.records import TIKey

# How long the dispatching thread waits when nothing happens (it is woken at once by a new try or a try's end).
_IDLE_SECONDS = 60.0
# The exit code reported for a try whose fork server ended under it (its process got SIGTERM: see above).
SERVER_GONE_EXIT = 1


class SharedTaskProcesses:
    """Runs tries in warm task processes on behalf of many threads. Start it while this process has a single
    thread (the fork server is then forked from it, with every import it made, and ready in milliseconds)."""

    def __init__(self, concurrency: int, env: dict[str, str] | None = None) -> None:
        self._executor = LocalExecutor(concurrency, env, bound=True)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._executor.wake_fd = self._wake_r
        self._handed: queue.SimpleQueue[tuple[Workload, Future[ExecutorEvent]]] = queue.SimpleQueue()
        self._waiting: dict[tuple[TIKey, int], Future[ExecutorEvent]] = {}
        self._stopping = False
        self._executor.start()
        self._thread = threading.Thread(target=self._dispatch, name="sparkflow-task-processes", daemon=True)
        self._thread.start()

    def run(self, key: TIKey, try_number: int) -> ExecutorEvent:
        """Run the try in a warm process and return once its outcome is recorded (exit code 0, ``recorded`` when
        the runner said so) or its process ended without one (the exit code; negative: killed by that signal)."""
        future: Future[ExecutorEvent] = Future()
        self._handed.put((Workload(key, try_number), future))
        self._wake()
        return future.result()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe already wakes the thread
            os.write(self._wake_w, b"x")

    def _dispatch(self) -> None:
        while not self._stopping:
            self._take_handed()
            for event in self._executor.sync():  # launches what was taken
                waiting = self._waiting.pop((event.workload.key, event.workload.try_number), None)
                if waiting is not None:
                    waiting.set_result(event)
            running = self._executor.running()
            for tried in [t for t in self._waiting if t[0] not in running]:  # the fork server ended under them
                self._waiting.pop(tried).set_result(ExecutorEvent(Workload(*tried), SERVER_GONE_EXIT))
            if not self._take_handed():  # handed over meanwhile: launch at once, its wake-up may be used up
                self._executor.wait(_IDLE_SECONDS)

    def _take_handed(self) -> bool:
        """Queue the tries other threads handed over; True if there were any."""
        took = False
        while True:
            try:
                workload, future = self._handed.get_nowait()
            except queue.Empty:
                return took
            took = True
            tried = (workload.key, workload.try_number)
            if tried in self._waiting:  # the same try delivered twice at once: its runner starts it once
                self._waiting[tried].add_done_callback(partial(_pass_on, future))
                continue
            self._waiting[tried] = future
            self._executor.queue(workload)

    def close(self) -> None:
        """Stop (tries still running get SIGTERM with the fork server: call once no thread waits in run())."""
        self._stopping = True
        self._wake()
        self._thread.join(timeout=5)
        self._executor.end(kill=True, grace=0)


def _pass_on(to: Future[ExecutorEvent], done: Future[ExecutorEvent]) -> None:
    to.set_result(done.result())
