"""User callbacks the scheduler calls (a DAG's on_success/on_failure_callback, a lost try's task callback), run
off the scheduler loop so that a slow or hanging one never stalls scheduling.

They run in the scheduler process, one at a time in submission order, each in a daemon thread of its own that is
waited for at most ``time_limit`` seconds: a callback still running then is logged and left to finish on its own
(a thread cannot be killed), and the next one starts. An exception in a callback is logged; it changes nothing.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

log = logging.getLogger("sparkflow.scheduler")


class CallbackRunner:
    def __init__(self, time_limit: float) -> None:
        self.time_limit = time_limit
        self._pending: collections.deque[tuple[str, Callable[[], None]]] = collections.deque()
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._dispatching = False

    def submit(self, what: str, callback: Callable[[], None]) -> None:
        """Called from the loop: queue ``callback`` (named ``what`` in the log) and return at once."""
        with self._lock:
            self._pending.append((what, callback))
            self._idle.clear()
            if not self._dispatching:
                self._dispatching = True
                threading.Thread(target=self._dispatch, name="sparkflow-callbacks", daemon=True).start()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every submitted callback has ended or outrun its time limit (a drive that is over, a
        scheduler stopping); False when ``timeout`` passed first."""
        return self._idle.wait(timeout)

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._dispatching = False
                    self._idle.set()
                    return
                what, callback = self._pending.popleft()
            worker = threading.Thread(target=_call, args=(what, callback), name=f"sparkflow-callback {what}",
                                      daemon=True)
            worker.start()
            worker.join(self.time_limit)
            if worker.is_alive():
                log.warning("%s still runs after %s s (callback_time_limit); not waiting for it any longer",
                            what, self.time_limit)


def _call(what: str, callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # a user's callback: whatever it raises is its own problem, logged
        log.exception("%s raised", what)
