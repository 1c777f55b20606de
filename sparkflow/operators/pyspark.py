"""PySparkOperator and ``@task.pyspark`` (the Airflow provider's interface): a Python callable that gets a Spark
session.

- A ``spark_connect`` connection: the try gets a Spark Connect session of its own (``sc`` is None; no JVM in the
  task process), tagged with the try's identity. With ``managed`` extras sparkflow finds, starts (or restarts,
  when dead or unhealthy) and leases the server (connect_server); a server that dies during the try fails the try
  (ConnectServerLost), and its retry, a new try, gets a new server.
  Live progress and metrics of the try come from the server's REST API, filtered by the session
  (connect_tracking). An exception, time-out or kill interrupts the try's operations (``interruptTag``) and the
  session is released, so temporary views, SQL conf and UDFs never outlive the try.
- A ``spark`` connection (local or standalone master) or none: a classic SparkSession (and ``sc``) in the task
  process, with the try's own event log for metrics and progress, as for spark-submit tasks.
"""

from __future__ import annotations

import contextlib
import getpass
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sparkflow.connections import Connection
from sparkflow.definitions.context import Context, TaskInstanceHandle, lookup_connection
from sparkflow.exceptions import TaskFailure, TaskTimeout
from sparkflow.logs import masker
from sparkflow.operators.python import DecoratedPythonOperator, PythonOperator, call_python
from sparkflow.settings import load_settings
from sparkflow.spark.connect_config import CONN_TYPE, ConnectTarget, resolve_connect
from sparkflow.spark.connect_server import (
    ServerDirectory,
    ServerRecord,
    acquire_server,
    health_problem,
)
from sparkflow.spark.connect_tracking import SessionTracker, find_ui, session_marker, ui_candidates
from sparkflow.spark.eventlog import EVENT_LOG_CONF, EventLogTail, read_metrics
from sparkflow.spark.spec import master_url
from sparkflow.spark.tracking import DriverProgressPoller, SparkProgress, get_json

SPARK_CONTEXT_KEYS = ("spark", "sc")
# A dead server must fail the call in seconds, not after pyspark's default retries (15, backing off to a minute).
CLIENT_MAX_RETRIES = 3
CLIENT_MAX_BACKOFF_MS = 1000
UI_PROBE_SECONDS = 5.0  # an unmanaged server's UI: a closed port answers at once, a filtered one costs this


class ConnectServerLost(TaskFailure):
    """The managed Spark Connect server died (or was replaced) while a try used it: the try fails, its retries
    apply."""


def servers_root() -> Path:
    """Where managed Spark Connect servers are recorded (setting spark_connect_dir), read when a try needs one."""
    return load_settings().resolved_spark_connect_dir


def try_tag(ti: TaskInstanceHandle) -> str:
    """The tag of one try's Spark Connect operations (no commas: Spark refuses them in tags)."""
    return f"sparkflow:{ti.dag_id}:{ti.task_id}:{ti.run_id}:try{ti.try_number}".replace(",", "_")


class PySparkOperator(PythonOperator):
    template_fields = ("conn_id", "config_kwargs", *PythonOperator.template_fields)  # type: ignore[assignment]
    ui_color = "#fdb55c"

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        conn_id: str | None = None,
        config_kwargs: dict[str, Any] | None = None,
        status_poll_interval: float = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(python_callable=python_callable, **kwargs)
        self.conn_id = conn_id
        self.config_kwargs = dict(config_kwargs or {})
        self.status_poll_interval = status_poll_interval
        if conn_id is not None and (not isinstance(conn_id, str) or not conn_id):
            raise self._error(f"conn_id must name a spark or spark_connect connection, got {conn_id!r}")
        if config_kwargs is not None and not isinstance(config_kwargs, Mapping):
            raise self._error(f"config_kwargs must be a dict of Spark properties, got {type(config_kwargs).__name__}")
        self._interrupt: Callable[[], None] | None = None

    # -- calling the user's function -------------------------------------------------------------------------

    def _call(self, context: Context, spark: Any, sc: Any) -> Any:
        """Call with ``spark``/``sc`` by name (when the signature asks), op_args bound to the other parameters,
        op_kwargs and the context entries the signature names (PythonOperator's rule)."""
        args, kwargs = bind_around_spark(self.python_callable, self.op_args)
        result = call_python(self.python_callable, args, {**kwargs, **self.op_kwargs}, self.templates_dict,
                             {**context, "spark": spark, "sc": sc})
        if self.show_return_value_in_logs:
            self.log.info("Done. Returned value was: %s", result)
        return result

    def execute(self, context: Context) -> Any:
        conn = lookup_connection(self.conn_id) if self.conn_id else None
        if conn is not None:
            masker.add(*conn.secrets())
        if conn is not None and conn.conn_type == CONN_TYPE:
            return self._run_connect(resolve_connect(conn), context)
        return self._run_classic(conn, context)

    def on_kill(self) -> None:
        if self._interrupt is not None:
            self._interrupt()

    @classmethod
    def warm_imports(cls) -> None:
        """The Spark Connect client (pandas, pyarrow, grpc: seconds to import); importing starts no thread of
        Python's or gRPC's (a channel would), so a process forked afterwards is sound."""
        import pyspark.sql.connect.client.reattach  # noqa: F401
        import pyspark.sql.connect.client.retries  # noqa: F401
        import pyspark.sql.connect.session  # noqa: F401

    # -- Spark Connect ----------------------------------------------------------------------------------------

    def _run_connect(self, target: ConnectTarget, context: Context) -> Any:
        ti = context["ti"]
        if target.managed is None:
            return self._in_connect_session(target, None, context)
        directory = ServerDirectory(servers_root(), target.conn_id)
        holder = f"{ti.dag_id}.{ti.task_id} {ti.run_id} try {ti.try_number}"
        owner = f"{getpass.getuser()}@{socket.gethostname()} ({holder})"
        record, _, lease = acquire_server(directory, target.managed, owner, holder, self.log)
        try:
            return self._in_connect_session(target, record, context)
        except TaskTimeout:
            raise
        except Exception as exc:
            problem = health_problem(record) or (
                "it was replaced" if directory.read_record() not in (None, record) else None)
            if problem is None:
                raise
            # The session and everything it held died with the server: this try failed (Airflow's semantics: its
            # retries apply, and the retry, a new try, finds the server restarted by whoever needs it first).
            raise ConnectServerLost(
                f"the Spark Connect server of '{target.conn_id}' failed during this try ({problem}; the call raised "
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); the next try of "
                "a task on this connection restarts it") from exc
        finally:
            lease.unlink(missing_ok=True)

    def _in_connect_session(self, target: ConnectTarget, server: ServerRecord | None, context: Context) -> Any:
        from pyspark.sql import SparkSession  # the Connect client (grpc, pyarrow, pandas): only in such tasks

        ti = context["ti"]
        builder = SparkSession.builder.remote(target.url)
        for key, value in {**target.session_conf, **self.config_kwargs}.items():
            builder = builder.config(str(key), str(value))
        spark = builder.create()  # never getOrCreate: a warm worker's previous session must not be reused
        bound_client_retries(spark)
        tag = try_tag(ti)
        spark.addTag(tag)
        session_id = str(spark.session_id)  # type: ignore[attr-defined]  # a Connect session's
        self.log.info("Spark Connect session %s on %s, operations tagged %r", session_id,
                      server.address if server else target.url.split("/;")[0], tag)

        def interrupt() -> None:
            try:
                ids = spark.interruptTag(tag)
                # 0 when the client already released the operation it was waiting on (which ends it too)
                self.log.warning("Interrupted %s Spark Connect operation(s) of this try (tag %r)", len(ids), tag)
            except Exception as exc:  # the server may be gone: nothing left to interrupt there
                self.log.warning("Could not interrupt this try's Spark Connect operations: %s", exc)

        tracker = self._track_session(ti, server, session_id, spark, target)
        self._interrupt = interrupt
        started = time.monotonic()
        try:
            return self._call(context, spark, None)
        except BaseException as exc:
            ending(exc)
            self._shielded("interrupting this try's operations", interrupt)
            raise
        finally:
            self._interrupt = None
            if tracker is not None:
                final = tracker
                self._shielded("recording this session's metrics", lambda: self._record_final(
                    ti, final, int((time.monotonic() - started) * 1000)))
            # releasing the server-side session takes its views, conf and UDFs (and any operation left) with it
            self._shielded("releasing the Spark Connect session", spark.stop)
            self._shielded("ending the client's threads", join_client_threads)

    def _shielded(self, what: str, step: Callable[[], Any]) -> None:
        """One step of a try's clean-up, which a late signal (the time-out alarm, a SIGTERM) or a failure must not
        skip: it is held back meanwhile, and what still escapes is logged, not raised."""
        try:
            with signals_held():
                step()
        except BaseException as exc:  # noqa: B036 - the clean-up goes on; the try's own outcome is decided already
            self.log.warning("%s failed: %s: %s", what.capitalize(), type(exc).__name__, exc)

    def _track_session(self, ti: TaskInstanceHandle, server: ServerRecord | None, session_id: str, spark: Any,
                       target: ConnectTarget) -> SessionTracker | None:
        if server is not None and server.app_id is not None:
            app_id, ui_url = server.app_id, server.ui_url
        else:
            found = self._unmanaged_ui(spark, target)
            if found is None:
                return None
            app_id, ui_url = found
        ti.record_external_ids(spark_app_id=app_id, spark_ui_url=ui_url)
        tracker = SessionTracker(ui_url, app_id, session_marker(session_id), float(self.status_poll_interval),
                                 lambda progress: self._on_progress(ti, progress), self.log)
        tracker.start()
        return tracker

    def _unmanaged_ui(self, spark: Any, target: ConnectTarget) -> tuple[str, str] | None:
        """The application id and Spark UI of a server sparkflow did not start, from the session's view of the
        server's conf (or the connection's ui_url); None, with a note in the log, when its REST API does not
        answer here."""
        try:
            app_id = spark.conf.get("spark.app.id", None)
            enabled = str(spark.conf.get("spark.ui.enabled", "true")).lower() != "false"
            candidates = [target.ui_url] if target.ui_url else ui_candidates(
                target.host, spark.conf.get("spark.driver.host", None), spark.conf.get("spark.ui.port", None))
        except Exception as exc:  # a server may refuse to show its conf: the try goes on without progress
            app_id, enabled, candidates = None, True, []
            self.log.debug("Reading the Spark Connect server's conf failed: %s", exc)
        found = find_ui(candidates, app_id, lambda url: get_json(url, timeout=UI_PROBE_SECONDS)) if (
            app_id and enabled) else None
        if found is None:
            why = ("its Spark UI is disabled (spark.ui.enabled=false)" if not enabled else
                   f"its Spark UI did not answer at {', '.join(candidates)}" if candidates and app_id else
                   "it does not tell its application id")
            self.log.info("No live Spark progress or metrics for this try: the Spark Connect server at %s is not "
                          "managed by sparkflow and %s; set the connection's extra ui_url to the server's Spark UI "
                          "address (http://HOST:PORT) to have them", target.url.split("/;")[0], why)
            return None
        return str(app_id), found

    def _on_progress(self, ti: TaskInstanceHandle, progress: SparkProgress) -> None:
        ti.record_spark_progress(progress.to_dict())
        self.log.info("Spark progress %s", progress.describe())

    def _record_final(self, ti: TaskInstanceHandle, tracker: SessionTracker, duration_ms: int) -> None:
        final = tracker.final(duration_ms)
        if final is None:
            return
        progress, metrics = final
        ti.record_spark_progress(progress.to_dict())
        ti.record_spark_metrics(metrics.to_dict())
        self.log.info("Spark metrics of this session: %s jobs, %s stages, %s tasks (%s failed), input %s B, "
                      "shuffle read %s B / write %s B, duration %s ms", metrics.jobs, metrics.stages, metrics.tasks,
                      metrics.tasks_failed, metrics.input_bytes, metrics.shuffle_read_bytes,
                      metrics.shuffle_write_bytes, metrics.duration_ms)

    # -- classic SparkSession ---------------------------------------------------------------------------------

    def _run_classic(self, conn: Connection | None, context: Context) -> Any:
        from pyspark.sql import SparkSession  # starts a JVM through py4j: only in such tasks

        ti = context["ti"]
        master = master_url(conn) if conn is not None else "local[*]"
        event_dir = ti.artifact_dir("spark-events")
        conf = {**EVENT_LOG_CONF, "spark.eventLog.dir": event_dir.resolve().as_uri(),
                "spark.app.name": f"{ti.dag_id}-{ti.task_id}"}
        if conn is not None:  # the provider sets a connection's extras as Spark conf; sparkflow's own extras are not
            conf.update({k: str(v) for k, v in conn.extra_dejson.items() if str(k).startswith("spark.")})
        conf.update({str(k): str(v) for k, v in self.config_kwargs.items()})
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        if master.startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = SparkSession.builder.master(master)
        for key, value in conf.items():
            builder = builder.config(key, value)
        self.log.info("Starting a classic SparkSession on %s in this process", master)
        spark = builder.getOrCreate()
        sc = spark.sparkContext
        ti.record_external_ids(spark_app_id=sc.applicationId, spark_ui_url=sc.uiWebUrl)
        poller = None
        if sc.uiWebUrl:
            poller = DriverProgressPoller(sc.uiWebUrl, float(self.status_poll_interval),
                                          lambda progress: self._on_progress(ti, progress), lambda _id: None,
                                          app_id=sc.applicationId, event_log=EventLogTail(event_dir), log=self.log)
            poller.start()
        self._interrupt = sc.cancelAllJobs
        try:
            return self._call(context, spark, sc)
        except BaseException as exc:
            ending(exc)
            self._shielded("cancelling this try's Spark jobs", sc.cancelAllJobs)
            raise
        finally:
            self._interrupt = None
            if poller is not None:
                self._shielded("stopping the progress poller", poller.stop)
            self._shielded("stopping the SparkSession", spark.stop)
            self._shielded("recording the Spark metrics", lambda: self._record_classic_metrics(ti, event_dir))

    def _record_classic_metrics(self, ti: TaskInstanceHandle, event_dir: Path) -> None:
        metrics = read_metrics(event_dir)
        if metrics is not None:
            ti.record_spark_metrics(metrics.to_dict())
            self.log.info("Spark metrics: %s jobs, %s tasks, duration %s ms", metrics.jobs, metrics.tasks,
                          metrics.duration_ms)


def ending(exc: BaseException) -> None:
    """The try's time-out alarm repeats until the try ends (the gRPC client can swallow one TaskTimeout); once a
    TaskTimeout has reached the operator it has done its job, and must not cut the clean-up short."""
    if isinstance(exc, TaskTimeout) and threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGALRM (the time-out, which repeats) and SIGTERM (a kill) back while a try interrupts and releases its
    Spark work, so that work is not cut short; they are delivered when the block ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def join_client_threads() -> None:
    """End the Connect client's release thread pool once no execution uses it (the client only asks it to stop),
    so a warm worker process is left without threads and can run the next try (and keep its imports)."""
    try:
        from pyspark.sql.connect.client.reattach import ExecutePlanResponseReattachableIterator as Executions
    except ImportError:
        return
    pool = Executions._release_thread_pool_instance  # private, but the only handle on the pool's threads
    Executions.shutdown_threadpool_if_idle()
    if pool is not None and Executions._release_thread_pool_instance is None:
        pool.shutdown(wait=True)


def bind_around_spark(func: Callable[..., Any], op_args: Iterable[Any]) -> tuple[list[Any], dict[str, Any]]:
    """op_args go to the callable's positional parameters other than ``spark``/``sc`` (which come by name), so
    ``def f(spark, path)`` called as ``f("/data")`` gets path="/data"; what is left over stays positional."""
    args = list(op_args)
    params = inspect.signature(func).parameters.values()
    free = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in SPARK_CONTEXT_KEYS]
    if not any(p.name in SPARK_CONTEXT_KEYS and p.kind is p.POSITIONAL_OR_KEYWORD for p in params):
        return args, {}
    bound = dict(zip(free, args, strict=False))
    return args[len(bound):], bound


def bound_client_retries(spark: Any) -> None:
    """Cap the Connect client's retries of an unreachable server (see CLIENT_MAX_RETRIES)."""
    try:
        from pyspark.sql.connect.client.retries import DefaultPolicy
    except ImportError:
        return
    client = getattr(spark, "client", None)
    if client is not None and hasattr(client, "set_retry_policies"):
        client.set_retry_policies([DefaultPolicy(max_retries=CLIENT_MAX_RETRIES, max_backoff=CLIENT_MAX_BACKOFF_MS)])


class PySparkDecoratedOperator(DecoratedPythonOperator, PySparkOperator):
    """The operator behind ``@task.pyspark``."""


logging.getLogger("py4j").setLevel(logging.WARNING)  # py4j logs every gateway call at INFO into the task log
