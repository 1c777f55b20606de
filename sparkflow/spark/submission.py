"""One Spark submission, whatever the cluster manager: submit, follow the output, track the driver to its final
state, poll progress, kill, reattach on retry, record metrics, and fail with the masked tail of the output.

SparkSubmitOperator, SparkSqlOperator, SparkJDBCOperator and the compat hooks drive this object; they only say
what to submit. Where the driver runs decides how it is followed:

- local, client mode (any manager): spark-submit's exit code;
- standalone cluster mode (any application type): the master's REST submission API (create, status, kill);
- YARN cluster mode: the ResourceManager REST API (``yarn_track_via_rm_api``) or ``yarn application -status``;
  killed with the RM API or ``yarn application -kill``;
- Kubernetes cluster mode: the driver pod's phase through the Kubernetes API (``track_driver_via_k8s_api``) or
  spark-submit's own output (``pod name:``, ``Exit code: N``); the pod is deleted on kill.

A retry (``durable``, the default) first looks at the previous try's driver (standalone driver id, YARN
application id, Kubernetes pod) and follows it while it still runs instead of submitting a duplicate.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sparkflow.connections import Connection
from sparkflow.definitions.context import TaskInstanceHandle
from sparkflow.exceptions import SparkSubmitFailed, UserError
from sparkflow.logs import mask_sensitive_settings, masker
from sparkflow.process import GroupProcess
from sparkflow.spark.command import YARN_WAIT_APP_COMPLETION, build_spark_submit_argv
from sparkflow.spark.eventlog import EVENT_LOG_CONF
from sparkflow.spark.kubernetes import MIN_POLL_SECONDS as K8S_MIN_POLL_SECONDS
from sparkflow.spark.kubernetes import KubernetesClient, PodStatus, api_server
from sparkflow.spark.rest_submission import (
    DRIVER_FAILED,
    DRIVER_RUNNING,
    DriverLogTail,
    RestSubmissionClient,
    submission_request,
)
from sparkflow.spark.run_tracker import SparkRunTracker
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget, resolve_target, rest_urls, write_private_keytab
from sparkflow.spark.submit import locate_binary, submit_environment
from sparkflow.spark.yarn import MIN_RM_POLL_SECONDS, YarnClient, YarnCliMissing, YarnReport

# What spark-submit prints about a Kubernetes driver (two formats across Spark versions) and its end.
_K8S_POD = re.compile(r"\s*pod name: ((.+?)-([a-z0-9]+)-driver)\s*$")
_K8S_SUBMISSION = re.compile(r"submission ID [^:\s]+:(\S+?-driver)\b")  # NAMESPACE:POD
_K8S_EXIT_CODE = re.compile(r"\s*[eE]xit code: (\d+)")
_JVM_EXCEPTION = re.compile(r'Exception in thread "[^"]*"')
TAIL_LINES = 20
MAX_MISSED_STATUS_REPORTS = 10
POST_SUBMIT_TIMEOUT_SECONDS = 30


def parse_k8s_line(line: str) -> tuple[str | None, int | None]:
    """(driver pod name, exit code) that one line of spark-submit's Kubernetes output tells (pure)."""
    pod = _K8S_POD.search(line) or _K8S_SUBMISSION.search(line)
    code = _K8S_EXIT_CODE.search(line)
    return (pod.group(1) if pod else None), (int(code.group(1)) if code else None)


class OutputTail:
    """The last lines of the output, plus the JVM's ``Exception in thread "main"`` line and the lines right after
    it once seen (a long stack trace would push the line that says what went wrong out of a plain tail)."""

    def __init__(self, size: int = TAIL_LINES) -> None:
        self.last: collections.deque[str] = collections.deque(maxlen=size)
        self.exception: list[str] = []
        self.exception_at = -1  # index of the exception line among all lines
        self.count = 0

    def add(self, line: str) -> None:
        if self.exception_at < 0 and _JVM_EXCEPTION.search(line):
            self.exception_at = self.count
        if self.exception_at >= 0 and len(self.exception) < self.last.maxlen // 2:  # type: ignore[operator]
            self.exception.append(line)
        self.last.append(line)
        self.count += 1

    def text(self) -> str:
        lines = list(self.last)
        first_kept = self.count - len(lines)
        if 0 <= self.exception_at < first_kept:
            head = self.exception[: first_kept - self.exception_at]
            gap = first_kept - self.exception_at - len(head)
            lines = head + ([f"... ({gap} more lines)"] if gap else []) + lines
        return "\n".join(masker.mask(mask_sensitive_settings(line)) for line in lines)


class SparkSubmission:
    """One submission of ``spec`` to the Spark of ``conn``, followed to its end for the task instance ``ti``
    (None outside a task: nothing is recorded). ``run()`` returns the application id; ``kill()`` may come from
    another thread or a signal handler while ``run()`` is under way."""

    def __init__(
        self, spec: SparkSubmitSpec, conn: Connection, ti: TaskInstanceHandle | None, log: logging.Logger, *,
        durable: bool = True, program: str = "spark-submit", cwd: Path | None = None,
    ) -> None:
        self.conn = conn
        self.target: SparkTarget = resolve_target(conn, spec)
        self.mode = self.target.cluster_mode  # standalone, yarn, k8s (deploy mode cluster) or None
        self.ti = ti
        self.log = log
        self.durable = durable
        self.program = program
        self.cwd = cwd
        # A driver on a YARN or Kubernetes node cannot write to a directory of this machine.
        remote_driver = self.mode in ("yarn", "k8s")
        self.event_dir = ti.artifact_dir("spark-events") if ti is not None and not remote_driver else None
        self.spec = spec.with_conf(**self.event_log_conf()) if program == "spark-submit" else spec
        self.tracker = SparkRunTracker(ti, float(spec.status_poll_interval), log, self.event_dir)
        self.output = OutputTail()
        self.env = submit_environment(self.target, self.spec.env_vars, os.environ)
        self.k8s_pod: str | None = None
        self.k8s_exit_code: int | None = None
        self._process: GroupProcess | None = None
        self._standalone: tuple[RestSubmissionClient, str] | None = None
        self._yarn: tuple[YarnClient, str] | None = None
        self._k8s: KubernetesClient | None = None
        self._finished = False
        self._post_submit_done = False

    def event_log_conf(self) -> dict[str, str]:
        """The per-try event log settings (for metrics); empty when there is no readable place for it."""
        if self.event_dir is None:
            return {}
        return {**EVENT_LOG_CONF, "spark.eventLog.dir": self.event_dir.resolve().as_uri()}

    # -- running -----------------------------------------------------------------------------------------------
    def run(self, argv: list[str] | None = None) -> str | None:
        """Submit and follow to the end; raises SparkSubmitFailed (an AirflowException) when the application
        failed. ``argv`` replaces the spark-submit command (spark-sql: always client mode)."""
        masker.add(*self.conn.secrets())
        try:
            with self.tracker.following(), self._keytab_file() as keytab:
                mode = self.mode if argv is None else None
                if mode == "standalone":
                    self._run_standalone()
                else:
                    if argv is None:
                        argv = build_spark_submit_argv(self.spec, self.target, locate_binary(self.target.spark_binary),
                                                       os.environ, keytab)
                    if mode == "yarn":
                        self._run_yarn(argv)
                    elif mode == "k8s":
                        self._run_k8s(argv)
                    else:
                        self._submit(argv)
            self._finished = True
        finally:
            self.run_post_submit_commands()
        return self.tracker.ids.get("app_id")

    @contextlib.contextmanager
    def _keytab_file(self) -> Iterator[str | None]:
        """The connection's base64 keytab as a private file (mode 600) for this run only."""
        if not self.target.keytab_base64:
            yield None
            return
        path = write_private_keytab(self.target.keytab_base64)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _submit(self, argv: list[str]) -> None:
        """Run spark-submit (or spark-sql) to its end, streaming its output; non-zero exit -> failure."""
        self.log.info("Submitting to %s (%s): %s", self.target.master, self.target.cluster_manager,
                      mask_sensitive_settings(" ".join(argv)))
        self._process = GroupProcess(argv, env=self.env, cwd=self.cwd)
        result = self._process.run(self._on_line)
        self._process.end_group()  # what it started (a pipeline's driver JVM) ends before the metrics are read
        if result.returncode != 0:
            k8s = ""
            if self.mode == "k8s":
                k8s = f"; Kubernetes spark exit code is: {self.k8s_exit_code}"
            raise SparkSubmitFailed(
                f"{self.program} exited with code {result.returncode}{k8s}; last output:\n{self.output.text()}"
            )
        self.log.info("%s finished with code 0 (application %s)", self.program,
                      self.tracker.ids.get("app_id", "unknown"))

    def _on_line(self, line: str) -> None:
        self.output.add(line)
        self.tracker.on_line(line)
        if self.mode == "k8s":
            pod, code = parse_k8s_line(line)
            if pod and pod != self.k8s_pod:
                self.k8s_pod = pod
                self.log.info("Identified the Spark driver pod: %s", pod)
                self.tracker.record(driver_id=pod)
            if code is not None:
                self.k8s_exit_code = code

    def _previous(self, key: str, accept: Callable[[str], bool]) -> str | None:
        if not self.durable or self.ti is None:
            return None
        value = self.ti.previous_try_ids().get(key)
        return value if value and accept(value) else None

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # -- standalone cluster mode --------------------------------------------------------------------------------
    def _run_standalone(self) -> None:
        spec, target = self.spec, self.target
        client = RestSubmissionClient(rest_urls(target))
        driver_id = self._previous("spark_driver_id", lambda d: d.startswith("driver-"))
        if driver_id and client.status(driver_id).state in DRIVER_RUNNING:
            self.log.info("Reattaching to driver %s of the previous try, which is still running", driver_id)
        else:
            request = submission_request(spec, target, _spark_version(), self.env)
            self.log.info("Submitting %s to %s (standalone cluster mode, REST)", spec.application, client.base_url)
            driver_id = client.create(request)
        self._standalone = (client, driver_id)
        self.tracker.on_line(f"Driver {driver_id} submitted")  # records the driver id at once
        logs = DriverLogTail(target.master_web_ui) if target.master_web_ui else None
        state, missed = None, 0
        while True:
            try:
                status = client.status(driver_id)
                missed = 0
            except UserError:
                missed += 1  # a busy or failing-over master: the provider tolerates 10 missed reports too
                if missed > MAX_MISSED_STATUS_REPORTS:
                    raise
                self._sleep(spec.status_poll_interval)
                continue
            if status.state != state:
                state = status.state
                self.log.info("Driver %s is %s", driver_id, state)
            if logs is not None:
                for log_type in ("stdout", "stderr"):
                    for line in logs.read(driver_id, status.worker_id, log_type).splitlines():
                        self.output.add(line)
                        self.tracker.on_line(line)
            if state == "FINISHED":
                return
            if state in DRIVER_FAILED or state is None:
                raise SparkSubmitFailed(
                    f"Spark driver {driver_id} ended {state or 'unknown to the master'}"
                    + (f": {status.message}" if status.message else "")
                    + (f"; last output:\n{self.output.text()}" if self.output.last else "")
                )
            self._sleep(spec.status_poll_interval)

    # -- YARN cluster mode ----------------------------------------------------------------------------------------
    def yarn_client(self) -> YarnClient:
        via_rm = self.spec.yarn_track_via_rm_api
        if via_rm and not self.target.yarn_rm_url:
            raise UserError(
                f"yarn_track_via_rm_api=True needs the connection '{self.conn.conn_id}' extra "
                "yarn_resourcemanager_webapp_address (e.g. http://rm:8088)"
            )
        return YarnClient(self.target.yarn_rm_url if via_rm else None, self.spec.yarn_rm_auth,
                          env={**os.environ, **self.spec.env_vars})

    def _run_yarn(self, argv: list[str]) -> None:
        yarn = self.yarn_client()
        app_id = self._previous("spark_app_id", lambda a: a.startswith("application_"))
        if app_id and self._yarn_report_or_none(yarn, app_id, active_only=True):
            self.log.info("Reattaching to YARN application %s of the previous try, which is still running", app_id)
            self.tracker.record(app_id=app_id)
        else:
            self._submit(argv)
            app_id = self.tracker.ids.get("app_id")
            if not app_id or not app_id.startswith("application_"):
                raise SparkSubmitFailed(
                    f"spark-submit did not print a YARN application id; last output:\n{self.output.text()}"
                )
        self._yarn = (yarn, app_id)
        waited = self.spec.conf.get(YARN_WAIT_APP_COMPLETION, "true").strip().lower() != "false" and not (
            self.spec.yarn_track_via_rm_api)
        self._follow_yarn(yarn, app_id, spark_submit_waited=waited)

    def _yarn_report_or_none(self, yarn: YarnClient, app_id: str, active_only: bool) -> YarnReport | None:
        try:
            report = yarn.report(app_id)
        except SparkSubmitFailed as exc:
            self.log.warning("Cannot ask YARN about %s: %s", app_id, exc)
            return None
        return report if report.active or not active_only else None

    def _follow_yarn(self, yarn: YarnClient, app_id: str, spark_submit_waited: bool) -> None:
        interval = max(float(self.spec.status_poll_interval), MIN_RM_POLL_SECONDS if yarn.rm_url else 0.0)
        state, missed = None, 0
        while True:
            try:
                report = yarn.report(app_id)
                missed = 0
            except YarnCliMissing as exc:
                if spark_submit_waited:
                    # No yarn CLI here: spark-submit waited for the end and its exit code 0 says it succeeded.
                    self.log.warning("%s; spark-submit's exit code 0 decides", exc)
                    return
                raise
            except SparkSubmitFailed as exc:
                missed += 1
                if missed > MAX_MISSED_STATUS_REPORTS:
                    raise SparkSubmitFailed(f"gave up following YARN application {app_id}: {exc}") from None
                self.log.warning("Transient failure following YARN application %s (%d/%d): %s", app_id, missed,
                                 MAX_MISSED_STATUS_REPORTS, exc)
                self._sleep(interval)
                continue
            if report.state != state:
                state = report.state
                self.log.info("YARN application %s is %s (final status %s)", app_id, state, report.final_status)
            if not report.active:
                if report.succeeded:
                    return
                raise SparkSubmitFailed(report.failure())
            self._sleep(interval)

    # -- Kubernetes cluster mode --------------------------------------------------------------------------------
    def k8s_client(self) -> KubernetesClient:
        if self._k8s is None:
            self._k8s = KubernetesClient(api_server(self.target.master), self.spec.conf)
        return self._k8s

    @property
    def namespace(self) -> str:
        return self.target.namespace or "default"

    def _run_k8s(self, argv: list[str]) -> None:
        if self.spec.track_driver_via_k8s_api and str(
            self.spec.conf.get("spark.kubernetes.submission.waitAppCompletion", "")
        ).lower() == "true":
            raise UserError("track_driver_via_k8s_api=True is incompatible with "
                            "spark.kubernetes.submission.waitAppCompletion=true; remove it from conf")
        pod = self._previous("spark_driver_id", lambda p: p.endswith("-driver"))
        if pod:
            try:
                status = self.k8s_client().pod_status(self.namespace, pod)
            except SparkSubmitFailed as exc:
                self.log.warning("Cannot ask Kubernetes about the previous try's driver pod %s: %s", pod, exc)
                status = PodStatus(pod, "Unknown")
            if status.active:
                self.log.info("Reattaching to driver pod %s of the previous try, which is still running", pod)
                self.k8s_pod = pod
                self.tracker.record(driver_id=pod)
                self._follow_pod(pod)
                return
        self._submit(argv)
        if self.spec.track_driver_via_k8s_api:
            if not self.k8s_pod:
                raise SparkSubmitFailed(f"spark-submit did not print the driver pod name; last output:\n"
                                        f"{self.output.text()}")
            self._follow_pod(self.k8s_pod)
        elif self.k8s_exit_code != 0:
            raise SparkSubmitFailed(
                f"the Spark driver on Kubernetes failed: Kubernetes spark exit code is: {self.k8s_exit_code}; "
                f"last output:\n{self.output.text()}"
            )

    def _follow_pod(self, pod: str) -> None:
        api = self.k8s_client()
        interval = max(float(self.spec.status_poll_interval), K8S_MIN_POLL_SECONDS)
        phase, errors, unknown = None, 0, 0
        while True:
            try:
                status = api.pod_status(self.namespace, pod)
                errors = 0
            except SparkSubmitFailed:
                errors += 1
                if errors >= 3:
                    raise
                self._sleep(interval)
                continue
            if status.phase != phase:
                phase = status.phase
                self.log.info("Driver pod %s is %s", pod, phase)
            if status.phase == "Succeeded":
                self.log.info("Deleting the finished driver pod %s: %s", pod, api.delete_pod(self.namespace, pod))
                return
            if status.phase in ("Failed", "NotFound"):
                raise SparkSubmitFailed(status.failure())
            unknown = unknown + 1 if status.phase == "Unknown" else 0
            if unknown >= 3:
                raise SparkSubmitFailed(f"driver pod {pod} was in phase Unknown 3 times in a row; giving up")
            self._sleep(interval)

    # -- ending ---------------------------------------------------------------------------------------------
    def kill(self) -> None:
        """Stop the application wherever it runs (bounded in time; never raises), then the post-submit
        commands."""
        if self._standalone is not None and not self._finished:
            client, driver_id = self._standalone
            try:
                killed = client.kill(driver_id)
            except (UserError, SparkSubmitFailed) as exc:
                self.log.warning("Could not ask the master to kill driver %s: %s", driver_id, exc)
            else:
                self.log.info("Asked the master to kill driver %s: %s", driver_id, "accepted" if killed else "refused")
        if self._process is not None:
            self._process.kill()
        if not self._finished:
            self._kill_yarn()
            self._kill_k8s()
        self.run_post_submit_commands()

    def _kill_yarn(self) -> None:
        app_id = self._yarn[1] if self._yarn else self.tracker.ids.get("app_id")
        if self.mode != "yarn" or not app_id or not app_id.startswith("application_"):
            return
        yarn = self._yarn[0] if self._yarn else self.yarn_client()
        self.log.info("Killing YARN application %s: %s", app_id, yarn.kill(app_id))

    def _kill_k8s(self) -> None:
        if self.mode != "k8s" or not self.k8s_pod:
            return
        self.log.info("Deleting driver pod %s: %s", self.k8s_pod,
                      self.k8s_client().delete_pod(self.namespace, self.k8s_pod))

    def run_post_submit_commands(self) -> None:
        """The provider's post_submit_commands (e.g. stopping a service-mesh sidecar): once, after the
        application ended (also when it failed or was killed); each split like a shell would but run without
        one, 30 s at most, failures only logged."""
        if self._post_submit_done:
            return
        self._post_submit_done = True
        for command in self.spec.post_submit_commands:
            try:
                done = subprocess.run(shlex.split(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, check=False, timeout=POST_SUBMIT_TIMEOUT_SECONDS,
                                      stdin=subprocess.DEVNULL)
                self.log.info("post_submit_command %r exited with %s: %s", command, done.returncode,
                              done.stdout.strip()[-500:])
            except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
                self.log.warning("post_submit_command %r failed: %s", command, exc)


def _spark_version() -> str:
    import importlib.metadata  # ~20 ms, for cluster-mode REST submissions only

    try:
        return importlib.metadata.version("pyspark")
    except importlib.metadata.PackageNotFoundError:
        return "4.0.0"
