"""One try of one task instance: QUEUED -> RUNNING -> outcome.

The outcome table (the one place exceptions become states):

    returns normally                 -> success (return value pushed as XCom 'return_value')
    SkipTask                         -> skipped
    RescheduleTask (sensor)          -> up_for_reschedule, poked again after its delay in the same try
    FailTaskNoRetry                  -> failed (retries not used)
    any other exception / TaskTimeout -> up_for_retry while tries are left, else failed
"""

from __future__ import annotations

import _thread
import contextlib
import copy
import io
import logging
import os
import signal
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import XCOM_RETURN_KEY, Context, task_environment
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import load_dag_file
from sparkflow.definitions.templating import TemplateEnvironment
from sparkflow.exceptions import FailTaskNoRetry, NotFound, RescheduleTask, SkipTask, TaskTimeout, UserError
from sparkflow.logs import masker, open_task_log_handler, task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.runtime.context import (
    InMemoryTaskInstance,
    RuntimeTaskInstance,
    build_context,
    metastore_environment,
)
from sparkflow.settings import Settings
from sparkflow.state import RunState, TaskState

TASK_LOGGER = "sparkflow.task"
ACTOR = "task_runner"
log = logging.getLogger(TASK_LOGGER)


class TaskKilled(BaseException):
    """SIGTERM reached the task process (killed, marked failed, scheduler shutdown of a lost task)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def load_task_dag(metastore: Metastore, dag_id: str) -> DAG:
    """Re-import the DAG file recorded for dag_id (a task process starts from the file, as in Airflow)."""
    record = queries.get_dag(metastore.db, dag_id)
    with metastore_environment(metastore):
        dags, errors = load_dag_file(Path(record.fileloc), airflow_finders())
    for found in dags:
        if found.dag_id == dag_id:
            return found
    reason = "; ".join(str(e) for e in errors) or "the DAG is no longer defined in it"
    raise UserError(f"DAG '{dag_id}' cannot be loaded from {record.fileloc}: {reason}")


class TryOutcome(NamedTuple):
    """How a try ended: the task instance's state, and whether this runner recorded it. Not recorded: the try
    was not queued (any more), or its state was set from outside while it ran (marked failed, say), and whoever
    did that may still signal this process. ``killed``: the try ended because the process got SIGTERM."""

    state: TaskState
    recorded: bool
    killed: bool = False


def run_task_instance(
    settings: Settings, metastore: Metastore, key: TIKey, try_number: int, dag: DAG | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> TaskState:
    """Run the queued try ``try_number`` of ``key`` and record its outcome; returns the resulting state."""
    return run_try(settings, metastore, key, try_number, dag, clock).state


def run_try(
    settings: Settings, metastore: Metastore, key: TIKey, try_number: int, dag: DAG | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> TryOutcome:
    """Run the queued try ``try_number`` of ``key`` and record its outcome.

    Speed (issue 4): a try costs the runner two write transactions. The first (Store.start_try) checks that the
    try is still queued, moves it to running (compare-and-set, try history, audit event), clears the try's XComs
    and reads the run; the second records the outcome, comparing against the record the first one returned
    instead of reading the row again. When the caller hands over the parsed DAG (the fork server), the queued
    check happens inside the first transaction; otherwise it is read first, so a try that is no longer queued
    does not load its DAG file."""
    if dag is None:
        ti = queries.get_task_instance(metastore.db, key)
        if ti.state is not TaskState.QUEUED or ti.try_number != try_number:
            return _not_queued(key, try_number, ti)
    log_path = task_log_path(settings.resolved_log_folder, key.dag_id, key.run_id, key.task_id, try_number)
    handler = open_task_log_handler(log_path)
    log.addHandler(handler)
    if log.level != logging.INFO:
        log.setLevel(logging.INFO)  # not every time: setLevel clears the cache of every logger in the process
    log.propagate = False
    try:
        try:
            dag = dag or load_task_dag(metastore, key.dag_id)
            task = dag.get_task(key.task_id)
        except (UserError, NotFound) as exc:
            log.error("%s", exc)
            _finish_lost(metastore, key, str(exc))
            return TryOutcome(TaskState.FAILED, True)
        ti, run = metastore.store.start_try(
            key, try_number, ACTOR, now=clock(), hostname=socket.gethostname(), pid=os.getpid(),
            log_path=str(log_path),
        )
        if run is None:  # not this queued try (any more): someone else moved it first
            return _not_queued(key, try_number, ti)
        switch = KillSwitch()
        with _heartbeat(metastore, key, try_number, settings.heartbeat_interval, switch):
            return _run_try(metastore, dag, task, ti, run, clock, settings.resolved_log_folder, switch)
    finally:
        log.removeHandler(handler)
        handler.close()


def _not_queued(key: TIKey, try_number: int, ti: TaskInstanceRecord) -> TryOutcome:
    log.warning("%s try %s is %s (try %s), not queued: not running it", key, try_number, ti.state, ti.try_number)
    return TryOutcome(ti.state, False)


def _run_try(
    metastore: Metastore, dag: DAG, task: BaseOperator, ti: TaskInstanceRecord, run: DagRunRecord,
    clock: Callable[[], datetime], log_folder: Path, switch: KillSwitch,
) -> TryOutcome:
    handle = RuntimeTaskInstance(metastore, ti, run, dag, log_folder, clock)
    context = build_context(dag, task, run, handle)
    log.info("Starting attempt %s of %s: %s", ti.try_number, ti.max_tries + 1, ti.key)

    with metastore_environment(metastore, context):
        outcome = execute_task(dag, task, context, switch)
    state = outcome.state
    if state is TaskState.FAILED and outcome.retryable and ti.try_number <= ti.max_tries:
        state = TaskState.UP_FOR_RETRY
    ended = _finish(metastore, ti, task, context, state, outcome.error, clock(), outcome.reschedule_delay)
    return ended._replace(killed=outcome.killed)


@dataclass(frozen=True)
class Outcome:
    """How one try ended: SUCCESS, SKIPPED or FAILED, the reason, and whether a failure may be retried."""

    state: TaskState
    error: str | None = None
    retryable: bool = True
    reschedule_delay: float | None = None  # UP_FOR_RESCHEDULE: seconds until the next poke
    killed: bool = False  # SIGTERM ended it


def execute_task(dag: DAG, task: BaseOperator, context: Context, switch: KillSwitch | None = None) -> Outcome:
    """Render and execute the task on a copy; exceptions become an Outcome here and nowhere else. ``switch`` is
    armed while the task's code runs (see KillSwitch)."""
    work = copy.copy(task)  # render on a copy: the DAG object stays pristine for the next try or run
    context["task"] = work
    searchpath = [str(Path(dag.fileloc).parent)] if dag.fileloc else []
    env = TemplateEnvironment(dag.render_template_as_native_obj, searchpath + dag.template_searchpath,
                              dag.user_defined_macros, dag.user_defined_filters)
    try:
        with _capture_output(), _timeout(work, task.execution_timeout), _sigterm_raises(switch):
            try:
                work.render_template_fields(context, env)
                _call_callback(work.on_execute_callback, context, "on_execute_callback")
                work.pre_execute(context)
                result = work.execute(context)
            except (TaskTimeout, TaskKilled):
                work.on_kill()  # still inside _sigterm_raises: a second SIGTERM cannot cut the kill short
                raise
            if result is not None and work.do_xcom_push:
                context["ti"].xcom_push(XCOM_RETURN_KEY, result)
            work.post_execute(context, result)
    except SkipTask as exc:
        log.info("Task skipped: %s", exc)
        return Outcome(TaskState.SKIPPED, str(exc))
    except RescheduleTask as exc:
        return Outcome(TaskState.UP_FOR_RESCHEDULE, reschedule_delay=exc.delay)
    except (Exception, TaskKilled) as exc:  # the user-code boundary: any exception is this try's failure
        context["exception"] = exc
        reason = masker.mask(f"{type(exc).__name__}: {exc}")
        log.error("Task failed with exception\n%s", masker.mask(traceback.format_exc()))
        return Outcome(TaskState.FAILED, reason, retryable=not isinstance(exc, FailTaskNoRetry),
                       killed=isinstance(exc, TaskKilled))
    return Outcome(TaskState.SUCCESS)


def _finish(
    metastore: Metastore, ti: TaskInstanceRecord, task: BaseOperator, context: Context, state: TaskState,
    error: str | None, now: datetime, reschedule_delay: float | None = None,
) -> TryOutcome:
    fields: dict[str, Any] = {"error": error}
    if state is TaskState.UP_FOR_RETRY:
        delay = task.retry_delay_for(ti.try_number)
        fields["next_try_at"] = now + delay
        log.info("Marking for retry in %s (attempt %s of %s)", delay, ti.try_number, ti.max_tries + 1)
    if state is TaskState.UP_FOR_RESCHEDULE:
        fields["next_try_at"] = now + timedelta(seconds=reschedule_delay or 0)
        log.info("Rescheduling: next poke at %s (the slot is free until then)", fields["next_try_at"].isoformat())
    # ``known``: the record start_try returned; no need to read the row again (the compare-and-set on running
    # and this try still refuses if someone moved it meanwhile).
    moved = metastore.store.set_task_state(ti.key, TaskState.RUNNING, state, ACTOR, detail=error, now=now,
                                           expected_try=ti.try_number, known=ti, **fields)
    if not moved:
        current = queries.get_task_instance(metastore.db, ti.key).state
        log.warning("Task was set to %s from outside while running; keeping that (not %s)", current, state)
        return TryOutcome(current, False)
    log.info("Marking task as %s", state.value.upper())
    callback = {
        TaskState.SUCCESS: task.on_success_callback,
        TaskState.FAILED: task.on_failure_callback,
        TaskState.UP_FOR_RETRY: task.on_retry_callback,
    }.get(state)
    _call_callback(callback, context, f"{state.value} callback")
    return TryOutcome(state, True)


def call_lost_try_callback(
    metastore: Metastore, dag: DAG, ti: TaskInstanceRecord, state: TaskState, reason: str, log_folder: Path,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """A try whose process died without recording an outcome (killed -9, OOM-killed, its host lost), which the
    scheduler then set to ``state``: call the task's on_failure_callback (FAILED) or on_retry_callback
    (UP_FOR_RETRY) here, with the try's context and the reason as ``exception``, as Airflow does for zombie
    tasks: an alert on failure must not depend on how the process died."""
    task = dag.task_dict.get(ti.task_id)
    if task is None:
        return
    callback = {TaskState.FAILED: task.on_failure_callback, TaskState.UP_FOR_RETRY: task.on_retry_callback}.get(state)
    if callback is None:
        return
    run = queries.get_run(metastore.db, ti.dag_id, ti.run_id)
    context = build_context(dag, task, run, RuntimeTaskInstance(metastore, ti, run, dag, log_folder, clock))
    context["exception"] = reason
    with metastore_environment(metastore, context):
        _call_callback(callback, context, f"{state.value} callback")


def _finish_lost(metastore: Metastore, key: TIKey, reason: str) -> None:
    """A queued try that cannot even start (its DAG or task vanished) fails rather than staying queued."""
    metastore.store.set_task_state(key, TaskState.QUEUED, TaskState.FAILED, ACTOR, detail=reason, error=reason)


def _call_callback(callback: Callable[[Context], Any] | None, context: Context, what: str) -> None:
    if callback is None:
        return
    for func in callback if isinstance(callback, list) else [callback]:
        try:
            func(context)
        except Exception:  # a broken callback must not change the task's outcome
            log.exception("%s raised; the task outcome is unchanged", what)


class _LogWriter(io.TextIOBase):
    """print() inside a task goes to the task log, line by line."""

    def __init__(self, level: int) -> None:
        self._level = level
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            log.log(self._level, "%s", line)
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            log.log(self._level, "%s", self._buffer)
            self._buffer = ""


@contextlib.contextmanager
def _capture_output() -> Iterator[None]:
    out, err = _LogWriter(logging.INFO), _LogWriter(logging.WARNING)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            yield
        finally:
            out.flush()
            err.flush()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _timeout(task: BaseOperator, limit: timedelta | None) -> Iterator[None]:
    if limit is None:
        yield
        return
    if not _in_main_thread():
        log.warning("execution_timeout %s cannot be enforced outside the main thread", limit)
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeout(f"task '{task.task_id}' exceeded its execution_timeout of {limit}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, limit.total_seconds())
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


_own_group = False  # this process leads its own session and process group, made to run tries (start_own_session)


def start_own_session() -> None:
    """Make this process a task process of its own (a fork-server worker, a Celery task process): a new session
    and process group, so that killing the group takes whatever its try started (spark-submit, the driver), and a
    try's KillSwitch may signal the group. Not so for a process that runs tries inside itself (the sequential
    executor's scheduler, `dags test`): its group may be the user's shell job, or the whole container (pid 1)."""
    global _own_group
    os.setsid()
    _own_group = True


class KillSwitch:
    """Lets a try's heartbeat end the try from its own thread: a try whose state was changed from outside (marked
    failed or success, cleared, its run timed out) must stop, also when no one can signal its process because it
    runs on another host (a Celery worker). One per try. It fires only while the task's code runs (armed by
    _sigterm_raises) and then does what a kill from this host does: SIGTERM to the task's process group where
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
        """Log ``why`` into the try's log and SIGTERM the try, if the task's code is running (True)."""
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
def _sigterm_raises(switch: KillSwitch | None = None) -> Iterator[None]:
    if not _in_main_thread():
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
def _heartbeat(
    metastore: Metastore, key: TIKey, try_number: int, interval: float, switch: KillSwitch
) -> Iterator[None]:
    """Beat every ``interval`` seconds while the try runs. A bare thread (``_thread``): ``threading.Thread.start``
    waits until the new thread has run, ~2 ms of a no-op task's critical path on a busy 2-core machine (issue
    4's benchmark), and the thread is not joined either: once told to stop it writes nothing more (a late beat
    would not match anyway: it compares the running state and this try).

    A beat that finds the try no longer running (its state was changed from outside) ends the try through
    ``switch``, as Airflow's task heartbeat does: on this host whoever changed it has usually sent SIGTERM
    already; on another host nothing else would stop it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                if metastore.store.heartbeat(key, try_number) or stop.is_set():
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

    _thread.start_new_thread(beat, ())
    try:
        yield
    finally:
        stop.set()


def test_task(dag: DAG, task_id: str, run_id: str, logical_date: datetime, connections: Any, variables: Any,
              conf: dict[str, Any] | None = None) -> tuple[Outcome, dict[str, Any]]:
    """`sparkflow tasks test`: run one task now, in this process, recording nothing."""
    task = dag.get_task(task_id)
    interval = dag.infer_manual_data_interval(logical_date)
    run = DagRunRecord(
        id=0, dag_id=dag.dag_id, run_id=run_id, run_type="manual", logical_date=logical_date,
        data_interval_start=interval.start, data_interval_end=interval.end, conf=conf or {},
        state=RunState.RUNNING, queued_at=None, start_date=None, end_date=None, external_trigger=True,
    )
    handle = InMemoryTaskInstance(dag, task_id, run_id)
    context = build_context(dag, task, run, handle, test_mode=True)
    with task_environment(context, connections, variables):
        outcome = execute_task(dag, task, context)
    return outcome, handle.xcoms
