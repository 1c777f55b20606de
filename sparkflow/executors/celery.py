"""CeleryExecutor: the scheduler sends task-instance keys to a Celery broker (Redis); `sparkflow worker` processes on
any number of machines take them and run each try with the same task runner, in the same warm, reused task
processes, as the local executor (the fork server of runtime/forkserver.py, bound to the worker: see
executors/task_processes.py), with the same rules: put back between tries, replaced after a killed try, leftover
threads or children, ``max_tasks_per_child`` or ``max_memory_per_child_mb``, and only the current user code of
the try's DAG loaded.

Delivery guarantees (with the metastore as the single source of truth):

* Late acknowledgement (``acks_late``, ``reject_on_worker_lost``, prefetch 1): a message is acknowledged only
  once its try's outcome is recorded (or its process ended without one), so a worker that dies before or while
  running a task never loses it.
* A try dies with its worker: the fork server ends when the worker dies, even by kill -9 (its socket closes), and
  each task process gets SIGTERM when the fork server ends (``PR_SET_PDEATHSIG``). On SIGTERM the runner records
  the try as failed (retried when tries are left) and kills its Spark application. If the whole machine is gone,
  the task's heartbeat stops and the scheduler fails or retries it after ``heartbeat_timeout``.
* Never twice at once: the runner starts a try only by the compare-and-set queued -> running on (key, try). A message
  delivered again (redelivery after a lost worker, or a second scheduler's adoption) finds the try already started,
  finished or superseded and exits without running anything.

Task logs: the runner writes them under the ``log_folder`` setting on the worker, exactly where the local executor
does, so ``log_folder`` must be storage shared by workers, schedulers, the web server and CLI users (an NFS mount, a
Docker/Kubernetes volume; docker-compose.spark.yml mounts one volume on every service). ``sparkflow logs`` and the
web server then read a worker's log live while the task runs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sparkflow.executors.base import ExecutorEvent, Workload, exit_reason
from sparkflow.executors.task_processes import SharedTaskProcesses
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import TIKey
from sparkflow.settings import Settings, load_settings
from sparkflow.state import TaskState

TASK_NAME = "sparkflow.execute_task_instance"
POLL_SECONDS = 0.1  # how often results are read from a backend that cannot notify (not Redis)
WORKER_ENV = "SPARKFLOW_WORKER"  # the worker's name, in the environment of the task processes it starts


def make_celery_app(settings: Settings) -> Any:
    """The Celery application of scheduler and workers alike: JSON only, late acknowledgement, one message
    prefetched per worker slot, tasks routed by their ``queue``."""
    from celery import Celery  # optional dependency: pip install 'sparkflow[celery]'

    app = Celery("sparkflow", broker=settings.celery_broker_url, backend=settings.celery_result_backend,
                 set_as_current=False)
    app.conf.update(
        task_default_queue=settings.celery_default_queue,
        task_serializer="json", result_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, task_acks_on_failure_or_timeout=True,
        task_track_started=False, worker_prefetch_multiplier=1,  # started: seen in the metastore (_check_sent)
        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
        result_expires=24 * 3600, worker_send_task_events=False,
    )
    app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)(_execute_task_instance)
    return app


# -- worker side -----------------------------------------------------------------------------------------------
_PROCESSES: SharedTaskProcesses | None = None
_PROCESSES_LOCK = threading.Lock()


def start_task_processes(concurrency: int, worker_name: str) -> SharedTaskProcesses:
    """The worker's warm task processes (executors/task_processes.py: the local executor's fork server, bound to
    this process). `sparkflow worker` starts them before Celery starts its threads, so the fork server is forked
    from it with every import made; a Celery worker started otherwise gets them on its first task."""
    global _PROCESSES
    with _PROCESSES_LOCK:
        if _PROCESSES is None:
            _PROCESSES = SharedTaskProcesses(concurrency, {**os.environ, WORKER_ENV: worker_name})
        return _PROCESSES


def _execute_task_instance(task: Any, dag_id: str, run_id: str, task_id: str, try_number: int,
                           map_index: int = -1) -> dict[str, Any]:
    worker = getattr(task.request, "hostname", None) or socket.gethostname()
    processes = _PROCESSES
    if processes is None:
        processes = start_task_processes(load_settings().celery_worker_concurrency, worker)
    ended = processes.run(TIKey(dag_id, run_id, task_id, map_index), try_number)
    # recorded: the runner said it recorded the outcome, so the scheduler need not read the task instance back.
    return {"exit_code": ended.exit_code, "worker": worker, "recorded": ended.recorded}


# -- scheduler side --------------------------------------------------------------------------------------------
@dataclass
class _Sent:
    workload: Workload
    task_id: str  # the Celery task id: its result is stored under it
    started: bool = False


class _Results:
    """The results of the tasks this scheduler sent, read in batches: the Redis result backend publishes each
    stored result on a channel named after its key, so one pattern subscription brings every result the moment it
    is stored, and a sweep (one MGET for all tasks in flight) catches what a dropped subscription missed.

    Why: asking the backend for each task's state on every scheduler iteration cost one round trip per task in
    flight per iteration (200 for a fan-out), and polling every 0.1 s put up to 100 ms on each step of a chain."""

    SWEEP_SECONDS = 2.0

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.arrived: dict[str, dict[str, Any]] = {}  # Celery task id -> its latest result (status, result)
        self._next_sweep = 0.0
        self._read_results: list[str] = []  # results handled here, deleted from the backend at the next sweep
        self._listener: Any = None
        client = getattr(backend, "client", None)
        if client is not None and hasattr(client, "pubsub"):  # Redis (any other backend: sweeps only)
            self._prefix = bytes(backend.task_keyprefix)
            self._listener = client.pubsub(ignore_subscribe_messages=True)
            self._listener.psubscribe(self._prefix + b"*")

    def take_in(self, timeout: float, tracked: set[str]) -> bool:
        """Read the notifications that arrived (waiting up to ``timeout`` for one); sweep when it is time. True if
        a tracked task's result is ready."""
        ready = False
        if self._listener is not None:
            deadline = time.monotonic() + timeout
            while True:
                message = self._listener.get_message(timeout=0 if ready else max(deadline - time.monotonic(), 0))
                if message is None:
                    break
                task_id = bytes(message["channel"])[len(self._prefix):].decode()
                if task_id in tracked:
                    ready |= self._note(task_id, message["data"])
        elif timeout > 0:
            time.sleep(min(timeout, POLL_SECONDS))
            self._next_sweep = 0.0
        if time.monotonic() >= self._next_sweep and (tracked or self._read_results):
            self._next_sweep = time.monotonic() + (self.SWEEP_SECONDS if self._listener is not None else POLL_SECONDS)
            self._delete_read()
            ids = sorted(tracked)
            for task_id, value in zip(ids, self.backend.mget([self.backend.get_key_for_task(i) for i in ids]),
                                      strict=True):
                if value is not None:
                    ready |= self._note(task_id, value)
        return ready

    def _note(self, task_id: str, payload: Any) -> bool:
        meta = self.backend.decode_result(payload)
        self.arrived[task_id] = meta
        return meta.get("status") in ("SUCCESS", "FAILURE", "REVOKED")

    def forget(self, task_ids: list[str]) -> None:
        """Delete these results from the backend, with the others handled since, at the next sweep (one call,
        off the path from a task's end to its successor's start)."""
        self._read_results += task_ids

    def _delete_read(self) -> None:
        task_ids, self._read_results = self._read_results, []
        if not task_ids:
            return
        client = getattr(self.backend, "client", None)
        with contextlib.suppress(Exception):  # they expire anyway (result_expires)
            if client is not None:
                client.delete(*[self.backend.get_key_for_task(i) for i in task_ids])
            else:
                for task_id in task_ids:
                    self.backend.forget(task_id)

    def close(self) -> None:
        self._delete_read()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                self._listener.close()


def _batch(producer: Any) -> Any:
    """The producer's publish batch (sent when the block ends), or publishing at once where kombu has none."""
    batch = getattr(producer, "batch", None)
    return batch() if batch is not None else contextlib.nullcontext()


def _no_result_consumer(producer: Any, task_id: str) -> None:
    """The backend's on_task_call for the scheduler's sends: no subscription of Celery's result consumer."""


class CeleryExecutor:
    """Sends workloads to Celery and turns their results into events. ``running()`` is only what has not started:
    once the metastore shows a task's try running, liveness is judged by its heartbeat there (a worker can die
    without any result ever arriving).

    Batched: the workloads of a scheduler iteration are sent through one producer connection, and results come
    from one subscription and a periodic single MGET (see _Results), never a round trip per task and iteration."""

    name = "celery"

    def __init__(self, settings: Settings, metastore: Metastore | None = None, app: Any | None = None) -> None:
        self.settings = settings
        self.metastore = metastore
        self.parallelism = settings.parallelism
        self.app = app if app is not None else make_celery_app(settings)
        self._sent: dict[TIKey, _Sent] = {}
        self._unsent: list[_Sent] = []
        self._results: _Results | None = None
        self._next_check = 0.0

    def start(self) -> None:
        self._listen()

    def _listen(self) -> _Results:
        """Subscribe to results before the first task is sent, so none is stored unseen."""
        if self._results is None:
            self._results = _Results(self.app.backend)
        return self._results

    def open_slots(self) -> int:
        return max(self.parallelism - len(self._sent), 0)

    def _check_sent(self) -> None:
        """Once every heartbeat interval, from the metastore: a task whose try a worker has started is no longer
        this executor's to watch (its heartbeat is; see running()); and a worker that died never reports, so a task
        whose try ended or was superseded (the scheduler failed or retried it by heartbeat) stops being counted
        and its slot frees up. Why not Celery's STARTED state: it cost each task one more result-backend write on
        the worker before the try began, and the scheduler one more message to read."""
        if self.metastore is None or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + max(self.settings.heartbeat_interval, 1.0)
        if not self._sent:
            return
        by_run: dict[tuple[str, str], list[TIKey]] = {}
        for key in self._sent:
            by_run.setdefault((key.dag_id, key.run_id), []).append(key)
        found = {TIKey(dag_id, run_id, slot.task_id, slot.map_index): slot for (dag_id, run_id), keys in by_run.items()
                 for slot in queries.task_slots_of(self.metastore.db, keys)}
        for key, sent in list(self._sent.items()):
            slot = found.get(key)
            if slot is not None and slot.try_number == sent.workload.try_number and slot.state is TaskState.RUNNING:
                sent.started = True
            elif slot is None or slot.try_number != sent.workload.try_number or slot.state is not TaskState.QUEUED:
                del self._sent[key]

    def queue(self, workload: Workload) -> None:
        sent = _Sent(workload, str(uuid.uuid4()))
        self._sent[workload.key] = sent
        self._unsent.append(sent)

    def _send(self) -> None:
        """Send what was queued since the last call, through one producer (one connection from the pool), as one
        batch where kombu can (5.7+ on Redis: one pipeline, one round trip for all the messages)."""
        if not self._unsent:
            return
        self._listen()
        unsent, self._unsent = self._unsent, []
        # send_task subscribes Celery's own result consumer to each task (for AsyncResult.get(), unused here: the
        # results come from _Results' one pattern subscription): a round trip per task to Redis, and another to
        # unsubscribe. This thread's backend (app.backend is per thread) skips it.
        vars(self.app.backend)["on_task_call"] = _no_result_consumer
        declared: set[str] = set()
        with self.app.producer_or_acquire() as producer, _batch(producer):
            for sent in unsent:
                key, queue = sent.workload.key, sent.workload.queue
                queue = self.settings.celery_default_queue if queue in ("", "default") else queue
                if queue not in declared:
                    # Declared once per batch (kombu caches it per connection): send_task would bind a copy of the
                    # queue to the channel for every message only to find it declared already.
                    producer.maybe_declare(self.app.amqp.queues[queue], retry=True)
                    declared.add(queue)
                args = [key.dag_id, key.run_id, key.task_id, sent.workload.try_number, key.map_index]
                # argsrepr: the message's display form (Flower, the worker's log), here a short list of ids; Celery's
                # own saferepr of it cost more than the rest of building the message.
                self.app.send_task(TASK_NAME, args=args, queue=queue, task_id=sent.task_id, producer=producer,
                                   declare=[], argsrepr=repr(args), kwargsrepr="{}")

    def _tracked(self) -> set[str]:
        return {sent.task_id for sent in self._sent.values()}

    def _events(self) -> list[ExecutorEvent]:
        if self._results is None:
            return []
        by_id = {sent.task_id: (key, sent) for key, sent in self._sent.items()}
        events, done = [], []
        for task_id, meta in list(self._results.arrived.items()):
            del self._results.arrived[task_id]
            if task_id not in by_id:
                continue
            key, sent = by_id[task_id]
            state, value = meta.get("status"), meta.get("result")
            if state == "SUCCESS":
                outcome = value if isinstance(value, dict) else {}
                code = int(outcome.get("exit_code", 1))
                reason = None if code == 0 else f"{exit_reason(code)} on worker {outcome.get('worker', '?')}"
                events.append(ExecutorEvent(sent.workload, code, reason, code == 0 and outcome.get("recorded") is True))
            elif state in ("FAILURE", "REVOKED"):
                events.append(ExecutorEvent(sent.workload, 1, f"Celery task {state.lower()}: {value!r}"))
            else:
                continue
            del self._sent[key]
            done.append(task_id)
        self._results.forget(done)
        return events

    def sync(self) -> list[ExecutorEvent]:
        self._send()
        if self._sent:
            self._listen().take_in(0, self._tracked())
        events = self._events()
        self._check_sent()
        return events

    def running(self) -> set[TIKey]:
        return {key for key, sent in self._sent.items() if not sent.started}

    def in_flight(self) -> bool:
        return bool(self._sent)

    def cleanup_stuck_queued_tasks(self, keys: set[TIKey]) -> None:
        """Revoke their messages (a worker that already holds one, or comes up later, drops it) and stop following
        them. A revoke a worker never hears of is harmless: the runner finds the try no longer queued."""
        for key in keys:
            sent = self._sent.pop(key, None)
            if sent is None:
                continue
            self._unsent = [s for s in self._unsent if s is not sent]
            with contextlib.suppress(Exception):  # the broker is down: the compare-and-set above still holds
                self.app.control.revoke(sent.task_id)

    def wait(self, timeout: float) -> None:
        """Return as soon as a result of a task sent from here is stored (the subscription wakes it), else after
        ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._sent:
            left = deadline - time.monotonic()
            if left <= 0 or self._listen().take_in(left, self._tracked()):
                return

    def end(self, kill: bool = False, grace: float | None = None) -> None:
        """Stop tracking. Tasks already sent stay with the workers (they record their own outcome); nothing is
        killed from here (a task is stopped by marking it failed, which its runner notices)."""
        self._send()
        self._sent.clear()
        if self._results is not None:
            self._results.close()
            self._results = None
        with contextlib.suppress(Exception):
            self.app.close()
