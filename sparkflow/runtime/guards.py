"""The guards around a try's user code, all in the task process: SIGTERM -> TaskKilled, execution_timeout ->
TaskTimeout, the heartbeat thread, and the KillSwitch through which a heartbeat ends a try changed from outside.

Signal handlers can only be installed in the main thread; a try run elsewhere (a test's thread) runs unguarded,
and says so in its log when it had a time limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import FrameType

from sparkflow.exceptions import NotFound, TaskTimeout
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import TIKey
from sparkflow.runtime import spare_threads
from sparkflow.runtime.leftovers import become_subreaper

TASK_LOGGER = "sparkflow.task"
log = logging.getLogger(TASK_LOGGER)


class TaskKilled(BaseException):
    """SIGTERM reached the task process (killed, marked failed, scheduler shutdown of a lost task)."""


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_own_group = False  # this process leads its own session and process group, made to run tries (start_own_session)


def start_own_session() -> None:
    """Runs in a task process (a fork-server worker, a Celery task process) before its first try: a new session
    and process group, so that killing the group takes whatever its try started (spark-submit, the driver), and a
    try's KillSwitch may signal the group. Not so for a process that runs tries inside itself (the sequential
    executor's scheduler, `dags test`): its group may be the user's shell job, or the whole container (pid 1)."""
    global _own_group
    os.setsid()
    become_subreaper()  # what the try leaves behind stays this process's to kill (runtime.leftovers)
    _own_group = True


def owns_group() -> bool:
    """Whether this is a task process of its own (start_own_session), whose children are all its tries'."""
    return _own_group


class KillSwitch:
    """Lets a try's heartbeat end the try from its own thread: a try whose state was changed from outside (marked
    failed or success, cleared, its run timed out) must stop, also when no one can signal its process because it
    runs on another host (a Celery worker). One per try. It fires only while the task's code runs (armed by
    sigterm_raises) and then does what a kill from this host does: SIGTERM to the task's process group where
    the process is a task process of its own (start_own_session), else to the main thread alone. TaskKilled then
    rises in the task's code and the operator's on_kill() kills what it started (spark-submit, the Spark
    application). Outside that window the try is recording its own outcome or has (the compare-and-set refuses
    it anyway), and a signal would hit that instead; a later try of the same process has its own switch.

    Firing checks ``armed`` and signals under the lock, and disarming clears it under the lock, so no signal is
    sent once disarmed. A signal handler may raise out of the wait for the lock (TaskKilled from a SIGTERM sent
    just before); the switch is then cleared all the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._armed = False

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = True
        try:
            yield
        finally:
            try:
                with self._lock:
                    self._armed = False
            finally:
                self._armed = False

    def fire(self, why: str) -> bool:
        """Runs in the heartbeat thread: log ``why`` into the try's log and SIGTERM the try, if the task's code is
        running (True)."""
        with self._lock:
            if not self._armed:
                return False
            log.warning("%s; ending this try", why)
            if _own_group:
                os.killpg(os.getpid(), signal.SIGTERM)
            else:
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
            return True


@contextlib.contextmanager
def time_limit(task_id: str, limit: timedelta | None) -> Iterator[None]:
    """TaskTimeout rises in the task's code once it has run ``limit`` (its execution_timeout)."""
    if limit is None:
        yield
        return
    if not in_main_thread():
        log.warning("execution_timeout %s cannot be enforced outside the main thread", limit)
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeout(f"task '{task_id}' exceeded its execution_timeout of {limit}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    # Again every second until the try ends: a TaskTimeout raised while the interpreter runs code whose exceptions
    # it discards (a __del__ or a callback, as in the gRPC client of Spark Connect) would let the try run on.
    signal.setitimer(signal.ITIMER_REAL, limit.total_seconds(), 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def stop_time_limit() -> None:
    """Stop time_limit's repeating alarm once its TaskTimeout has been caught (before on_kill() runs)."""
    if in_main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def sigterm_raises(switch: KillSwitch | None = None) -> Iterator[None]:
    """SIGTERM raises TaskKilled in the task's code, once; ``switch`` is armed meanwhile."""
    if not in_main_thread():
        yield
        return

    def on_term(signum: int, frame: FrameType | None) -> None:
        # Once: whoever kills a task may signal it again (a run's time-out, then `trigger --wait` ending), and a
        # second TaskKilled raised inside on_kill() would stop it killing the Spark application.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise TaskKilled("task received SIGTERM")

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with switch.armed() if switch is not None else contextlib.nullcontext():
            yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def heartbeat(
    metastore: Metastore, key: TIKey, try_number: int, interval: float, switch: KillSwitch,
    on_beat: Callable[[], None] | None = None,
) -> Iterator[None]:
    """Beat every ``interval`` seconds, from a thread of the task process, while the try runs: a bare one (see
    runtime/spare_threads.py), kept for the next try in a warm worker. It is not joined: once told to stop it
    writes nothing more (a late beat would not match anyway: it compares the running state and this try).

    A beat that finds the try no longer running (its state was changed from outside) ends the try through
    ``switch``, as Airflow's task heartbeat does: on this host whoever changed it has usually sent SIGTERM
    already; on another host nothing else would stop it. ``on_beat`` runs after each beat that found the try
    running, in the beat's thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                running = metastore.store.heartbeat(key, try_number)
                if running and on_beat is not None and not stop.is_set():
                    on_beat()
                if running or stop.is_set():
                    continue
                current = queries.get_task_instance(metastore.db, key)
                change = f"set to {current.state.value} (try {current.try_number})"
            except NotFound:
                change = "deleted"
            except Exception:  # a missed beat is retried next interval; the scheduler tolerates a few
                logging.getLogger("sparkflow.runtime").exception("heartbeat of %s failed", key)
                continue
            # Not armed: the task's code has not started yet (it is caught at the next beat) or is over (the
            # runner is recording the try's own outcome, which is what this beat saw; stop is set next).
            if switch.fire(f"This task instance was {change} from outside while it ran"):
                return

    spare_threads.start(beat)
    try:
        yield
    finally:
        stop.set()
