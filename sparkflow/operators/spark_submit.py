"""SparkSubmitOperator with the Airflow provider's constructor (same names and defaults), validated at load time."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, TaskInstanceHandle, lookup_connection
from sparkflow.exceptions import SparkSubmitFailed
from sparkflow.logs import mask_sensitive_settings, masker
from sparkflow.process import GroupProcess
from sparkflow.spark.command import build_spark_submit_argv
from sparkflow.spark.eventlog import EVENT_LOG_CONF, EventLogTail, read_metrics
from sparkflow.spark.rest_submission import (
    DRIVER_FAILED,
    DRIVER_RUNNING,
    DriverLogTail,
    RestSubmissionClient,
    python_submission,
    rest_url,
)
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget, resolve_target
from sparkflow.spark.submit import locate_binary, parse_ids, submit_environment
from sparkflow.spark.tracking import DriverProgressPoller, SparkProgress

_INT_FIELDS = ("total_executor_cores", "executor_cores", "num_executors")
_DEPLOY_MODES = ("client", "cluster")


class SparkSubmitOperator(BaseOperator):
    template_fields: ClassVar[Sequence[str]] = (
        "application", "conf", "files", "py_files", "jars", "driver_class_path", "packages", "exclude_packages",
        "keytab", "principal", "proxy_user", "name", "application_args", "env_vars", "post_submit_commands",
        "properties_file",
    )
    ui_color = "#ff7f50"

    def __init__(
        self,
        *,
        application: str = "",
        conf: dict[Any, Any] | None = None,
        conn_id: str = "spark_default",
        files: str | None = None,
        py_files: str | None = None,
        archives: str | None = None,
        driver_class_path: str | None = None,
        jars: str | None = None,
        java_class: str | None = None,
        packages: str | None = None,
        exclude_packages: str | None = None,
        repositories: str | None = None,
        total_executor_cores: int | None = None,
        executor_cores: int | None = None,
        executor_memory: str | None = None,
        driver_memory: str | None = None,
        keytab: str | None = None,
        principal: str | None = None,
        proxy_user: str | None = None,
        name: str = "arrow-spark",
        num_executors: int | None = None,
        status_poll_interval: int = 1,
        application_args: list[Any] | None = None,
        env_vars: dict[str, Any] | None = None,
        verbose: bool = False,
        spark_binary: str | None = None,
        properties_file: str | None = None,
        yarn_queue: str | None = None,
        deploy_mode: str | None = None,
        use_krb5ccache: bool = False,
        post_submit_commands: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.application = application
        self.conf = conf
        self.conn_id = conn_id
        self.files = files
        self.py_files = py_files
        self.archives = archives
        self.driver_class_path = driver_class_path
        self.jars = jars
        self.java_class = java_class
        self.packages = packages
        self.exclude_packages = exclude_packages
        self.repositories = repositories
        self.total_executor_cores = total_executor_cores
        self.executor_cores = executor_cores
        self.executor_memory = executor_memory
        self.driver_memory = driver_memory
        self.keytab = keytab
        self.principal = principal
        self.proxy_user = proxy_user
        self.name = name
        self.num_executors = num_executors
        self.status_poll_interval = status_poll_interval
        self.application_args = application_args
        self.env_vars = env_vars
        self.verbose = verbose
        self.spark_binary = spark_binary
        self.properties_file = properties_file
        self.yarn_queue = yarn_queue
        self.deploy_mode = deploy_mode
        self.use_krb5ccache = use_krb5ccache
        self.post_submit_commands = post_submit_commands
        self._process: GroupProcess | None = None
        self._rest_driver: tuple[RestSubmissionClient, str] | None = None
        self._validate()

    def _validate(self) -> None:
        """Reject a bad task when the DAG file is loaded, not when it runs at 3 a.m."""
        if not isinstance(self.application, str) or not self.application.strip():
            raise self._error("application must be the path of a .py, .jar or .R file to submit")
        if self.conf is not None and not isinstance(self.conf, dict):
            raise self._error(f"conf must be a dict of Spark properties, got {type(self.conf).__name__}")
        if not isinstance(self.status_poll_interval, (int, float)) or self.status_poll_interval <= 0:
            raise self._error(
                f"status_poll_interval must be a positive number of seconds, got {self.status_poll_interval!r}"
            )
        for field in _INT_FIELDS:
            value = getattr(self, field)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise self._error(f"{field} must be a positive integer, got {value!r}")
        if self.deploy_mode is not None and self.deploy_mode not in _DEPLOY_MODES:
            raise self._error(f"deploy_mode has bad value {self.deploy_mode!r}; use client or cluster")
        if self.application_args is not None and not isinstance(self.application_args, (list, tuple)):
            raise self._error("application_args must be a list of arguments")
        if not isinstance(self.conn_id, str) or not self.conn_id:
            raise self._error(f"conn_id must name a Spark connection, got {self.conn_id!r}")

    def spec(self) -> SparkSubmitSpec:
        return SparkSubmitSpec(
            application=self.application,
            conf={str(k): str(v) for k, v in (self.conf or {}).items()},
            files=self.files,
            py_files=self.py_files,
            archives=self.archives,
            driver_class_path=self.driver_class_path,
            jars=self.jars,
            java_class=self.java_class,
            packages=self.packages,
            exclude_packages=self.exclude_packages,
            repositories=self.repositories,
            total_executor_cores=self.total_executor_cores,
            executor_cores=self.executor_cores,
            executor_memory=self.executor_memory,
            driver_memory=self.driver_memory,
            keytab=self.keytab,
            principal=self.principal,
            proxy_user=self.proxy_user,
            name=self.name,
            num_executors=self.num_executors,
            application_args=tuple(str(a) for a in (self.application_args or ())),
            env_vars={str(k): str(v) for k, v in (self.env_vars or {}).items()},
            verbose=self.verbose,
            spark_binary=self.spark_binary,
            properties_file=self.properties_file,
            yarn_queue=self.yarn_queue,
            deploy_mode=self.deploy_mode,
            use_krb5ccache=self.use_krb5ccache,
        )

    def execute(self, context: Context) -> Any:
        conn = lookup_connection(self.conn_id)
        masker.add(*conn.secrets())
        ti = context["ti"]
        event_dir = ti.artifact_dir("spark-events")
        spec = with_event_log(self.spec(), event_dir)
        target = resolve_target(conn, spec)
        env = submit_environment(target, spec.env_vars, os.environ)
        tracker = SparkRunTracker(ti, self.status_poll_interval, self.log, event_dir)
        if is_rest_python_submission(spec, target):
            with tracker.following(), self._post_submit():
                self._run_rest(spec, target, env, ti, tracker)
            return tracker.ids.get("app_id")
        argv = build_spark_submit_argv(spec, target, locate_binary(target.spark_binary), os.environ)
        self.log.info("Submitting to %s (%s): %s", target.master, target.cluster_manager,
                      mask_sensitive_settings(" ".join(argv)))
        self._process = GroupProcess(argv, env=env)
        with tracker.following(), self._post_submit():
            result = self._process.run(tracker.on_line)
        if result.returncode != 0:
            tail = "\n".join(masker.mask(mask_sensitive_settings(line)) for line in result.last_lines[-10:])
            raise SparkSubmitFailed(f"spark-submit exited with code {result.returncode}; last output:\n{tail}")
        self.log.info("spark-submit finished with code 0 (application %s)", tracker.ids.get("app_id", "unknown"))
        return tracker.ids.get("app_id")

    def _run_rest(
        self, spec: SparkSubmitSpec, target: SparkTarget, env: dict[str, str], ti: TaskInstanceHandle,
        tracker: SparkRunTracker,
    ) -> None:
        """Standalone cluster mode for a Python application, through the master's REST server; reattaches to the
        previous try's driver when it is still running instead of submitting a duplicate."""
        client = RestSubmissionClient(rest_url(target))
        driver_id = ti.previous_try_ids().get("spark_driver_id")
        if driver_id and client.status(driver_id).state in DRIVER_RUNNING:
            self.log.info("Reattaching to driver %s of the previous try, which is still running", driver_id)
        else:
            request = python_submission(spec, target, _spark_version(), env)
            self.log.info("Submitting %s to %s (standalone cluster mode, REST)", spec.application, client.base_url)
            driver_id = client.create(request)
        self._rest_driver = (client, driver_id)
        tracker.on_line(f"Driver {driver_id} submitted")  # records the driver id at once
        logs = DriverLogTail(target.master_web_ui) if target.master_web_ui else None
        state = None
        while True:
            status = client.status(driver_id)
            if status.state != state:
                state = status.state
                self.log.info("Driver %s is %s", driver_id, state)
            if logs is not None:
                for log_type in ("stdout", "stderr"):
                    for line in logs.read(driver_id, status.worker_id, log_type).splitlines():
                        tracker.on_line(line)
            if state == "FINISHED":
                return
            if state in DRIVER_FAILED or state is None:
                raise SparkSubmitFailed(
                    f"Spark driver {driver_id} ended {state or 'unknown to the master'}"
                    + (f": {status.message}" if status.message else "")
                )
            time.sleep(self.status_poll_interval)

    @contextlib.contextmanager
    def _post_submit(self) -> Iterator[None]:
        """The provider's post_submit_commands (e.g. stopping a service-mesh sidecar): after the submission, also
        when it failed; each split like a shell would but run without one, 30 s at most, failures only logged."""
        try:
            yield
        finally:
            self._run_post_submit_commands()

    def _run_post_submit_commands(self) -> None:
        for command in self.post_submit_commands or []:
            try:
                done = subprocess.run(shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, check=False, timeout=30, stdin=subprocess.DEVNULL)
                self.log.info("post_submit_command %r exited with %s: %s", command, done.returncode,
                              done.stdout.strip()[-500:])
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                self.log.warning("post_submit_command %r failed: %s", command, exc)

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()
        if self._rest_driver is not None:
            client, driver_id = self._rest_driver
            killed = client.kill(driver_id)
            self.log.info("Asked the master to kill driver %s: %s", driver_id, "accepted" if killed else "refused")


def is_rest_python_submission(spec: SparkSubmitSpec, target: SparkTarget) -> bool:
    """spark-submit cannot run Python apps in standalone cluster mode; the master's REST server can."""
    return target.cluster_manager == "standalone" and target.deploy_mode == "cluster" and spec.application.endswith(
        ".py"
    )


def _spark_version() -> str:
    import importlib.metadata  # ~20 ms, for cluster-mode REST submissions only

    try:
        return importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        return "4.0.0"


def with_event_log(spec: SparkSubmitSpec, directory: Path) -> SparkSubmitSpec:
    """Give the try its own readable event log, for metrics; a user's own eventLog settings win."""
    conf = {**EVENT_LOG_CONF, "spark.eventLog.dir": directory.resolve().as_uri(), **spec.conf}
    return replace(spec, conf=conf)


class SparkRunTracker:
    """Follows one submission: ids from the output (recorded at once), live progress from the try's event log and
    the driver's REST API (sparkflow.spark.tracking), metrics from the event log at the end."""

    def __init__(self, ti: TaskInstanceHandle, interval: float, log: logging.Logger, event_dir: Path) -> None:
        self.ti = ti
        self.interval = float(interval)
        self.log = log
        self.event_dir = event_dir
        self.ids: dict[str, str] = {}
        self.ui_host = "127.0.0.1"  # a client-mode driver runs here; Spark's "Start Jetty HOST:PORT" line may say more
        self.poller: DriverProgressPoller | None = None

    def on_line(self, line: str) -> None:
        self.log.info("%s", mask_sensitive_settings(line))
        seen = parse_ids(line)
        if not seen.any():
            return
        if seen.ui_host:
            self.ui_host = seen.ui_host
        ui_url = seen.ui_url or (f"http://{self.ui_host}:{seen.ui_port}" if seen.ui_port else None)
        found = {k: v for k, v in (("app_id", seen.app_id), ("driver_id", seen.driver_id), ("ui_url", ui_url))
                 if v and self.ids.get(k) != v}
        if not found:
            return
        self.ids.update(found)
        self.ti.record_external_ids(**{f"spark_{k}": v for k, v in found.items()})
        if "app_id" in found and self.poller is not None and self.poller.app_id is None:
            self.poller.app_id = found["app_id"]  # Spark prints the UI port first: spares the /applications call
        if "ui_url" in found and self.poller is None:
            self.poller = DriverProgressPoller(
                found["ui_url"], self.interval, self.on_progress, self.on_app_id, app_id=self.ids.get("app_id"),
                event_log=EventLogTail(self.event_dir), log=self.log,
            )
            self.poller.start()

    def on_app_id(self, app_id: str) -> None:
        """The id the driver's REST API reports; what the output or event log said wins (it is this app's)."""
        if "app_id" not in self.ids:
            self.ids["app_id"] = app_id
            self.ti.record_external_ids(spark_app_id=app_id)

    def on_progress(self, progress: SparkProgress) -> None:
        self.ti.record_spark_progress(progress.to_dict())
        self.log.info("Spark progress %s", progress.describe())

    @contextlib.contextmanager
    def following(self) -> Iterator[None]:
        """While the application runs; afterwards (also when it failed or was killed) stop polling and record
        the metrics from its event log."""
        try:
            yield
        finally:
            if self.poller is not None:
                self.poller.stop()
            self.record_metrics()

    def record_metrics(self) -> None:
        metrics = read_metrics(self.event_dir)
        if metrics is None:
            return
        if metrics.app_id and self.ids.get("app_id") != metrics.app_id:  # the event log is the authority
            self.ids["app_id"] = metrics.app_id
            self.ti.record_external_ids(spark_app_id=metrics.app_id)
        self.ti.record_spark_metrics(metrics.to_dict())
        if metrics.jobs:
            final = SparkProgress(jobs_total=metrics.jobs, jobs_done=metrics.jobs - metrics.jobs_failed,
                                  jobs_failed=metrics.jobs_failed, tasks_total=metrics.tasks,
                                  tasks_done=metrics.tasks - metrics.tasks_failed - metrics.tasks_killed,
                                  tasks_failed=metrics.tasks_failed)
            self.ti.record_spark_progress(final.to_dict())
        self.log.info(
            "Spark metrics: %s jobs, %s stages, %s tasks (%s failed), input %s B, shuffle read %s B / write %s B, "
            "spill %s B, GC %s ms, duration %s ms",
            metrics.jobs, metrics.stages, metrics.tasks, metrics.tasks_failed, metrics.input_bytes,
            metrics.shuffle_read_bytes, metrics.shuffle_write_bytes,
            metrics.memory_spilled_bytes + metrics.disk_spilled_bytes, metrics.jvm_gc_time_ms, metrics.duration_ms,
        )
