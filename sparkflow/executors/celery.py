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
from dataclasses import dataclass
from typing import Any

from sparkflow.exceptions import NotFound
from sparkflow.executors.base import ExecutorEvent, Workload
from sparkflow.executors.task_processes import SharedTaskProcesses
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import TIKey
from sparkflow.settings import Settings, load_settings
from sparkflow.state import TaskState

TASK_NAME = "sparkflow.execute_task_instance"
POLL_SECONDS = 0.1  # how often wait() asks the result backend whether a sent task ended
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
        task_track_started=True, worker_prefetch_multiplier=1,
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
    code = processes.run(TIKey(dag_id, run_id, task_id, map_index), try_number)
    return {"exit_code": code, "worker": worker}


# -- scheduler side --------------------------------------------------------------------------------------------
@dataclass
class _Sent:
    workload: Workload
    result: Any  # celery.result.AsyncResult
    started: bool = False


class CeleryExecutor:
    """Sends workloads to Celery and turns their results into events. ``running()`` is only what waits in the
    broker: once a worker has taken a task, liveness is judged by the task's heartbeat in the metastore (a worker
    can die without any result ever arriving)."""

    name = "celery"

    def __init__(self, settings: Settings, metastore: Metastore | None = None, app: Any | None = None) -> None:
        self.settings = settings
        self.metastore = metastore
        self.parallelism = settings.parallelism
        self.app = app if app is not None else make_celery_app(settings)
        self._sent: dict[TIKey, _Sent] = {}
        self._next_check = 0.0

    def start(self) -> None:
        pass

    def open_slots(self) -> int:
        return max(self.parallelism - len(self._sent), 0)

    def _forget_lost(self) -> None:
        """A worker that died never reports: stop counting its started tasks once the metastore shows their try
        ended or was superseded (the scheduler failed or retried it by heartbeat), so their slots free up."""
        if self.metastore is None or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + max(self.settings.heartbeat_interval, 1.0)
        for key, sent in list(self._sent.items()):
            if not sent.started:
                continue
            try:
                ti = queries.get_task_instance(self.metastore.db, key)
            except NotFound:
                ti = None
            if ti is None or ti.try_number != sent.workload.try_number or ti.state not in (
                    TaskState.QUEUED, TaskState.RUNNING):
                del self._sent[key]

    def queue(self, workload: Workload) -> None:
        key = workload.key
        queue = self.settings.celery_default_queue if workload.queue in ("", "default") else workload.queue
        args = [key.dag_id, key.run_id, key.task_id, workload.try_number, key.map_index]
        result = self.app.send_task(TASK_NAME, args=args, queue=queue)
        self._sent[key] = _Sent(workload, result)

    def _poll(self) -> list[ExecutorEvent]:
        events = []
        for key, sent in list(self._sent.items()):
            state = sent.result.state
            if state == "STARTED":
                sent.started = True
            elif state == "SUCCESS":
                value = sent.result.result or {}
                code = int(value.get("exit_code", 1)) if isinstance(value, dict) else 1
                reason = None if code == 0 else (
                    f"task process exited with code {code} on worker {value.get('worker', '?')}")
                events.append(ExecutorEvent(sent.workload, code, reason))
            elif state in ("FAILURE", "REVOKED"):
                events.append(ExecutorEvent(sent.workload, 1, f"Celery task {state.lower()}: {sent.result.result!r}"))
            else:
                continue
            if state != "STARTED":
                del self._sent[key]
                sent.result.forget()
        return events

    def sync(self) -> list[ExecutorEvent]:
        events = self._poll()
        self._forget_lost()
        return events

    def running(self) -> set[TIKey]:
        return {key for key, sent in self._sent.items() if not sent.started}

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for sent in self._sent.values():
                if sent.result.state in ("SUCCESS", "FAILURE", "REVOKED"):
                    return
            left = deadline - time.monotonic()
            if left <= 0 or not self._sent:
                return
            time.sleep(min(POLL_SECONDS, left))

    def end(self, kill: bool = False, grace: float | None = None) -> None:
        """Stop tracking. Tasks already sent stay with the workers (they record their own outcome); nothing is
        killed from here (a task is stopped by marking it failed, which its runner notices)."""
        self._sent.clear()
        with contextlib.suppress(Exception):
            self.app.close()
