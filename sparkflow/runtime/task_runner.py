"""One try of one task instance, stage by stage: claim (queued -> running) -> prepare (the context) -> execute
(the task's code, under the guards of runtime.guards) -> record (the outcome's state, then its callback) ->
clean up (the try's log handler; a reused worker process puts itself back in runtime.forkserver). A try that
ends without recording (its process died) is runtime.lost_try's.

Every function here runs in the task process, or in the caller's own process for the sequential executor,
`dags test` and `tasks test`.

The outcome table (the one place exceptions become states):

    returns normally                 -> success (return value pushed as XCom 'return_value')
    SkipTask                         -> skipped
    RescheduleTask (sensor)          -> up_for_reschedule, poked again after its delay in the same try
    FailTaskNoRetry                  -> failed (retries not used)
    any other exception / TaskTimeout -> up_for_retry while tries are left, else failed
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import os
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.assets import AssetAlias, OutletEventAccessors
from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import XCOM_RETURN_KEY, Context, task_clock, task_environment
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import load_dag_file
from sparkflow.definitions.mappedoperator import MappedOperator
from sparkflow.exceptions import (
    FailTaskNoRetry,
    NotFound,
    RescheduleTask,
    SkipTask,
    SparkflowError,
    TaskTimeout,
    UserError,
)
from sparkflow.logs import CappedFileHandler, mask_sensitive_settings, masker, open_task_log_handler, task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.asset_store import AssetUpdate
from sparkflow.metastore.bootstrap import Metastore, open_metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.parse_log import output_to, parse_log_path
from sparkflow.runtime.context import (
    InMemoryTaskInstance,
    RuntimeTaskInstance,
    build_context,
    call_callbacks,
    metastore_environment,
)
from sparkflow.runtime.guards import (
    TASK_LOGGER,
    KillSwitch,
    TaskKilled,
    heartbeat,
    owns_group,
    sigterm_raises,
    stop_time_limit,
    time_limit,
)
from sparkflow.runtime.leftovers import describe, kill_leftovers
from sparkflow.runtime.lost_try import fail_unstartable_try
from sparkflow.settings import Settings
from sparkflow.state import RunState, TaskState

__all__ = ["TASK_LOGGER", "RenderedFields", "TryOutcome", "capture_task_logging", "claim_try", "execute_task",
           "exit_code_of_try", "load_task_dag", "prepare_try", "record_outcome", "run_try", "test_task"]

ACTOR = "task_runner"
log = logging.getLogger(TASK_LOGGER)


def utcnow() -> datetime:
    return datetime.now(UTC)


def load_task_dag(metastore: Metastore, dag_id: str, timeout: float | None = None) -> DAG:
    """Re-import the DAG file recorded for dag_id (a task process starts from the file, as in Airflow), within
    ``timeout`` seconds (dagbag_import_timeout): a file that takes longer fails the try, naming the time-out."""
    record = queries.get_dag(metastore.db, dag_id)
    with metastore_environment(metastore):
        dags, errors = load_dag_file(Path(record.fileloc), airflow_finders(), timeout=timeout)
    for found in dags:
        if found.dag_id == dag_id:
            return found
    reason = "; ".join(str(e) for e in errors) or "the DAG is no longer defined in it"
    raise UserError(f"DAG '{dag_id}' cannot be loaded from {record.fileloc}: {reason}")


@dataclass(frozen=True)
class TryOutcome:
    """How a try ended. From execute_task: SUCCESS, SKIPPED, FAILED or UP_FOR_RESCHEDULE, the reason, whether a
    failure may be retried, and ``killed`` when SIGTERM ended it. From record_outcome and run_try: the state the
    task instance now has, and ``recorded`` when this runner recorded it. Not recorded: the try was not queued
    (any more), or its state was set from outside while it ran (marked failed, say), and whoever did that may
    still signal this process."""

    state: TaskState
    error: str | None = None
    retryable: bool = True
    reschedule_delay: float | None = None  # UP_FOR_RESCHEDULE: seconds until the next poke
    killed: bool = False
    recorded: bool = False

    @property
    def process_reusable(self) -> bool:
        """May the process run another try: it recorded this one's outcome itself and was not killed."""
        return self.recorded and not self.killed


def run_try(
    settings: Settings, metastore: Metastore, key: TIKey, try_number: int, dag: DAG | None = None,
    clock: Callable[[], datetime] = utcnow, on_recorded: Callable[[], None] | None = None,
) -> TryOutcome:
    """The queued try ``try_number`` of ``key``, through its stages: claim -> prepare -> execute -> record ->
    clean up. Runs in the task process (a fork-server worker, a Celery task process), or in the caller's own
    process for the sequential executor and `dags test`.

    Two write transactions: claim_try moves the try to running and returns the records the other stages use;
    record_outcome compares against that record instead of reading the row again. When the caller hands over the
    parsed DAG (the fork server), the queued check happens inside the claim; otherwise it is read first, so a try
    that is no longer queued does not load its DAG file. ``on_recorded`` is called once the outcome is recorded,
    before the clean-up (a fork-server worker tells the scheduler there, so the clean-up is off a chain's
    critical path)."""
    if dag is None:
        ti = queries.get_task_instance(metastore.db, key)
        if ti.state is not TaskState.QUEUED or ti.try_number != try_number:
            return _not_claimed(key, try_number, ti)
    log_path = task_log_path(settings.resolved_log_folder, key.dag_id, key.run_id, key.task_id, try_number,
                             key.map_index)
    with _try_log(log_path, settings.max_task_log_bytes) as log_file:
        try:
            if dag is None:
                fileloc = Path(queries.get_dag(metastore.db, key.dag_id).fileloc)
                with output_to(parse_log_path(settings.resolved_log_folder, settings.resolved_dags_folder, fileloc)):
                    dag = load_task_dag(metastore, key.dag_id, settings.dagbag_import_timeout)
            task = dag.get_task(key.task_id)
        except (UserError, NotFound) as exc:
            log.error("%s", exc)
            fail_unstartable_try(metastore, key, str(exc), ACTOR)
            return TryOutcome(TaskState.FAILED, str(exc), recorded=True)
        claimed = claim_try(metastore, key, try_number, log_path, clock)
        if isinstance(claimed, TryOutcome):
            return claimed
        ti, run = claimed
        switch = KillSwitch()
        rendered = RenderedFields(metastore, ti, clock)
        with heartbeat(metastore, key, try_number, settings.heartbeat_interval, switch, on_beat=rendered.store):
            context = prepare_try(metastore, dag, task, ti, run, clock, settings.resolved_log_folder)
            with metastore_environment(metastore, context), task_clock(clock):
                outcome = execute_task(dag, task, context, switch, rendered.keep)
            outcome = _unless_log_failed(outcome, log_file.failure())
            recorded = record_outcome(metastore, ti, task, context, outcome, clock(), rendered)
        if on_recorded is not None:
            on_recorded()
        if owns_group():
            killed = kill_leftovers()
            if killed:
                log.warning("Killed %d process(es) the try left running: %s", len(killed), describe(killed))
        return recorded


class _TaskLogFilter(logging.Filter):
    """Lets through what a task logs (any logger) but not sparkflow's own internals, which go to sparkflow.log."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return not (name == "sparkflow" or name.startswith("sparkflow.")) or name.startswith(TASK_LOGGER)


@contextlib.contextmanager
def _try_log(path: Path, max_bytes: int) -> Iterator[CappedFileHandler]:
    """The try's log file receives its lines while the try runs (up to ``max_bytes``); closed at clean-up."""
    handler = open_task_log_handler(path, max_bytes)
    with capture_task_logging(handler):
        yield handler


def _unless_log_failed(outcome: TryOutcome, failure: str | None) -> TryOutcome:
    """A try whose log could not be written (a full disk) fails, retryably, naming the file: nobody could see
    what it did; the reason is kept with the try (the metastore), where the CLI and the web show it."""
    if failure is None:
        return outcome
    error = failure if outcome.error is None else f"{failure}; the task itself: {outcome.error}"
    return dataclasses.replace(outcome, state=TaskState.FAILED, error=error, retryable=True)


@contextlib.contextmanager
def capture_task_logging(handler: logging.Handler) -> Iterator[None]:
    """While a try runs, INFO and above of every logger land in ``handler``, as in Airflow: ``self.log``, the
    task logger, and the root's (``logging.info``, ``logging.getLogger(__name__)``, libraries). Closed at the end."""
    root = logging.getLogger()
    handler.addFilter(_TaskLogFilter())
    log.addHandler(handler)
    root.addHandler(handler)
    if log.level != logging.INFO:
        log.setLevel(logging.INFO)  # not every time: setLevel clears the cache of every logger in the process
    log.propagate = False  # the task logger writes here once, not again through the root
    root_level = root.level
    if root_level > logging.INFO or root_level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        if root.level != root_level:
            root.setLevel(root_level)
        root.removeHandler(handler)
        log.removeHandler(handler)
        handler.close()


def claim_try(
    metastore: Metastore, key: TIKey, try_number: int, log_path: Path, clock: Callable[[], datetime],
) -> tuple[TaskInstanceRecord, DagRunRecord] | TryOutcome:
    """Claim: queued -> running for this try, with this host and pid (compare-and-set, try history, audit
    event), in one transaction that also clears the try's XComs and reads its run. The unrecorded outcome when
    the try is not queued (any more): someone else moved it first."""
    ti, run = metastore.store.start_try(
        key, try_number, ACTOR, now=clock(), hostname=socket.gethostname(), pid=os.getpid(), log_path=str(log_path),
    )
    if run is None:
        return _not_claimed(key, try_number, ti)
    return ti, run


def _not_claimed(key: TIKey, try_number: int, ti: TaskInstanceRecord) -> TryOutcome:
    log.warning("%s try %s is %s (try %s), not queued: not running it", key, try_number, ti.state, ti.try_number)
    return TryOutcome(ti.state)


def prepare_try(
    metastore: Metastore, dag: DAG, task: BaseOperator, ti: TaskInstanceRecord, run: DagRunRecord,
    clock: Callable[[], datetime], log_folder: Path,
) -> Context:
    """Prepare: the context the task's code and callbacks get (``ti`` writes through the store)."""
    handle = RuntimeTaskInstance(metastore, ti, run, dag, log_folder, clock)
    context = build_context(dag, task, run, handle)
    if run.run_type == "asset_triggered":
        events: dict[str, list[dict[str, Any]]] = {}
        for event in reversed(queries.list_asset_events(metastore.db, dag_run_id=run.id, limit=10_000)):
            events.setdefault(event.uri, []).append(event.as_dict())
        context["triggering_asset_events"] = context["triggering_dataset_events"] = events  # Airflow 3 and 2
    log.info("Starting attempt %s of %s: %s", ti.try_number, ti.max_tries + 1, ti.key)
    return context


class RenderedFields:
    """Airflow's rendered task instance fields: the try stores its rendered template fields (secrets masked),
    which the task page shows, so no page view ever renders a template (runs DAG code). Stored once, without a
    transaction of their own on a short try's path: with the outcome (record_outcome), or by the first
    heartbeat when the try still runs then, so the page shows them while a long task runs. The heartbeat's
    thread and the try's may both ask: the lock gives them to one."""

    def __init__(self, metastore: Metastore, ti: TaskInstanceRecord, clock: Callable[[], datetime]) -> None:
        self._metastore, self._ti, self._clock = metastore, ti, clock
        self._lock = threading.Lock()
        self._pending: tuple[dict[str, str], str | None] | None = None

    def keep(self, work: BaseOperator, error: str | None) -> None:
        """execute_task's ``on_rendered``: the rendered copy of the task (and why rendering failed, if it did)."""
        fields = {name: rendered_text(getattr(work, name, None)) for name in work.template_fields}
        with self._lock:
            self._pending = (fields, masker.mask(error) if error else None)

    def take(self) -> tuple[dict[str, str], str | None] | None:
        """The fields not stored yet (None: none, or already stored); whoever takes them stores them."""
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def store(self) -> None:
        """Store them now, in a transaction of their own, if they are still to be stored."""
        pending = self.take()
        if pending is None:
            return
        try:
            self._metastore.dags.store_rendered_fields(self._ti.key, self._ti.try_number, *pending, now=self._clock())
        except Exception:  # noqa: BLE001 - the page shows less; the task runs on
            log.exception("the rendered template fields could not be stored")


def rendered_text(value: Any) -> str:
    """A rendered template field as the task page shows it: text, secrets masked."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, indent=1)
    return mask_sensitive_settings(masker.mask(text))


def execute_task(dag: DAG, task: BaseOperator, context: Context, switch: KillSwitch | None = None,
                 on_rendered: Callable[[BaseOperator, str | None], None] | None = None) -> TryOutcome:
    """Execute: render and execute the task on a copy, under the guards (time limit, SIGTERM, ``switch`` armed
    while the task's code runs); exceptions become the (unrecorded) outcome here and nowhere else.
    ``on_rendered`` gets the rendered copy (and why rendering failed, if it did) before the task runs."""
    if isinstance(task, MappedOperator):
        try:  # the real operator of this instance, its mapped arguments resolved
            task = task.unmap(context, context["ti"].map_index)
        except Exception as exc:  # the user-code boundary: a bad mapped input fails this instance's try
            reason = masker.mask(f"{type(exc).__name__}: {exc}")
            log.error("Could not build mapped instance %s of task '%s': %s", context["ti"].map_index,
                      task.task_id, reason)
            return TryOutcome(TaskState.FAILED, reason)
    work = copy.copy(task)  # render on a copy: the DAG object stays pristine for the next try or run
    context["task"] = work
    env = dag.get_template_env()
    try:
        with _capture_output(), time_limit(work.task_id, task.execution_timeout), sigterm_raises(switch):
            try:
                try:
                    work.render_template_fields(context, env)
                except Exception as exc:
                    if on_rendered is not None:
                        on_rendered(work, str(exc))
                    raise
                if on_rendered is not None:
                    on_rendered(work, None)
                call_callbacks(work.on_execute_callback, context, "on_execute_callback")
                work.pre_execute(context)
                result = work.execute(context)
            except (TaskTimeout, TaskKilled):
                stop_time_limit()  # the repeating time-out alarm must not cut on_kill() short either
                work.on_kill()  # still inside sigterm_raises: a second SIGTERM cannot cut the kill short
                raise
            if result is not None and work.do_xcom_push:
                context["ti"].push_return_value(result)
            work.post_execute(context, result)
    except SkipTask as exc:
        log.info("Task skipped: %s", exc)
        return TryOutcome(TaskState.SKIPPED, str(exc))
    except RescheduleTask as exc:
        return TryOutcome(TaskState.UP_FOR_RESCHEDULE, reschedule_delay=exc.delay)
    except (Exception, TaskKilled) as exc:  # the user-code boundary: any exception is this try's failure
        context["exception"] = exc
        reason = masker.mask(f"{type(exc).__name__}: {exc}")
        log.error("Task failed with exception\n%s", masker.mask(traceback.format_exc()))
        return TryOutcome(TaskState.FAILED, reason, retryable=not isinstance(exc, FailTaskNoRetry),
                          killed=isinstance(exc, TaskKilled))
    return TryOutcome(TaskState.SUCCESS)


def record_outcome(
    metastore: Metastore, ti: TaskInstanceRecord, task: BaseOperator, context: Context, outcome: TryOutcome,
    now: datetime, rendered: RenderedFields | None = None,
) -> TryOutcome:
    """Record: running -> the outcome's state (up_for_retry for a retryable failure with tries left), then the
    task's callback for it. Compare-and-set against ``ti``, the record claim_try returned (no re-read: the
    compare on running and this try still refuses if someone moved it meanwhile), in one transaction with the
    try's ``rendered`` fields when they are not stored yet and its return value."""
    state, error = outcome.state, outcome.error
    if state is TaskState.FAILED and outcome.retryable and ti.try_number <= ti.max_tries:
        state = TaskState.UP_FOR_RETRY
    fields: dict[str, Any] = {"error": error}
    if state is TaskState.UP_FOR_RETRY:
        delay = task.retry_delay_for(ti.try_number)
        fields["next_try_at"] = now + delay
        log.info("Marking for retry in %s (attempt %s of %s)", delay, ti.try_number, ti.max_tries + 1)
    if state is TaskState.UP_FOR_RESCHEDULE:
        fields["next_try_at"] = now + timedelta(seconds=outcome.reschedule_delay or 0)
        log.info("Rescheduling: next poke at %s (the slot is free until then)", fields["next_try_at"].isoformat())
    updates = asset_updates(metastore, ti, task, context) if state is TaskState.SUCCESS and task.outlets else []
    pending = rendered.take() if rendered is not None else None
    returned = context["ti"].return_value
    moved = metastore.store.set_task_state(ti.key, TaskState.RUNNING, state, ACTOR, detail=error, now=now,
                                           expected_try=ti.try_number, known=ti, asset_updates=updates,
                                           rendered=pending, return_value=returned, **fields)
    if not moved:  # the try's own fields and return value all the same, as when they were made
        if pending is not None:
            metastore.dags.store_rendered_fields(ti.key, ti.try_number, *pending, now=now)
        if returned is not None:
            metastore.xcoms.set_xcom(ti, XCOM_RETURN_KEY, json.loads(returned), now)
        current = queries.get_task_instance(metastore.db, ti.key).state
        log.warning("Task was set to %s from outside while running; keeping that (not %s)", current, state)
        return dataclasses.replace(outcome, state=current, recorded=False)
    log.info("Marking task as %s", state.value.upper())
    if updates:
        log.info("Asset events: %s", ", ".join(u.uri + (f" (through alias {u.alias})" if u.alias else "")
                                                for u in updates))
    callback = {
        TaskState.SUCCESS: task.on_success_callback,
        TaskState.FAILED: task.on_failure_callback,
        TaskState.UP_FOR_RETRY: task.on_retry_callback,
    }.get(state)
    call_callbacks(callback, context, f"{state.value} callback")
    return dataclasses.replace(outcome, state=state, recorded=True)


def asset_updates(metastore: Metastore, ti: TaskInstanceRecord, task: BaseOperator, context: Context
                  ) -> list[AssetUpdate]:
    """The asset events of a success, recorded with it: one per asset outlet and per asset added through an alias
    outlet (``outlet_events``); ``extra`` is the asset's, the task's (``outlet_events[asset].extra``) and, for a
    Spark task, the application id and the rows and bytes written by this try (from its metrics)."""
    current = queries.get_task_instance(metastore.db, ti.key)
    spark: dict[str, Any] = {}
    if current.spark_app_id:
        metrics = current.spark_metrics or {}
        spark = {"spark_app_id": current.spark_app_id, "output_records": metrics.get("output_records"),
                 "output_bytes": metrics.get("output_bytes")}
    accessors = context.get("outlet_events")
    updates = []
    for outlet in task.outlets:
        accessor = accessors.get(outlet) if isinstance(accessors, OutletEventAccessors) else None
        if isinstance(outlet, AssetAlias):
            for asset, extra in accessor.asset_alias_events if accessor is not None else []:
                updates.append(AssetUpdate(asset.uri, {**asset.extra, **extra, **spark}, alias=outlet.name))
        else:
            updates.append(AssetUpdate(outlet.uri, {**outlet.extra, **(accessor.extra if accessor else {}), **spark}))
    return updates


def exit_code_of_try(
    settings: Settings, metastore: Metastore | None, key: TIKey, try_number: int, dag: DAG | None = None,
    on_recorded: Callable[[], None] | None = None,
) -> tuple[int, TryOutcome | None]:
    """The body of a task process (a fork-server worker, ``python -m sparkflow.runtime``): run_try, and the exit
    code that tells the executor whether the runner got to record an outcome (0), or a sparkflow error (an
    uninitialised metastore, say) stopped it first (1, the error on stderr, no outcome). Anything else
    propagates."""
    try:
        return 0, run_try(settings, metastore or open_metastore(settings), key, try_number, dag=dag,
                          on_recorded=on_recorded)
    except SparkflowError as exc:
        print(f"sparkflow task runner: {exc}", file=sys.stderr)
        return 1, None
    except Exception:
        logging.getLogger("sparkflow.runtime").exception("task runner crashed")
        raise


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


def test_task(dag: DAG, task_id: str, run_id: str, logical_date: datetime, connections: Any, variables: Any,
              conf: dict[str, Any] | None = None, map_index: int = -1) -> tuple[TryOutcome, dict[str, Any]]:
    """`sparkflow tasks test`, in the CLI's process: execute one task now, recording nothing."""
    task = dag.get_task(task_id)
    interval = dag.infer_manual_data_interval(logical_date)
    run = DagRunRecord(
        id=0, dag_id=dag.dag_id, run_id=run_id, run_type="manual", logical_date=logical_date,
        data_interval_start=interval.start, data_interval_end=interval.end, conf=conf or {},
        state=RunState.RUNNING, queued_at=None, start_date=None, end_date=None, external_trigger=True,
    )
    if task.is_mapped and map_index < 0:
        raise UserError(f"task '{task_id}' is mapped; choose an instance with --map-index N")
    handle = InMemoryTaskInstance(dag, task_id, run_id, map_index)
    context = build_context(dag, task, run, handle, test_mode=True)
    with task_environment(context, connections, variables):
        outcome = execute_task(dag, task, context)
    return outcome, handle.xcoms
