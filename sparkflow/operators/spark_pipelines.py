"""SparkPipelinesOperator (the provider's name and arguments): runs a Spark Declarative Pipeline spec.

On a ``spark`` connection (local or standalone master) the ``spark-pipelines`` launcher runs as one
SparkSubmission (sparkflow.spark.submission, what SparkSubmitOperator runs): its own process group, every output
line into the task log with secrets masked, and a kill of the group. The pipeline's driver is a JVM that the
launcher's pipelines CLI starts and that prints no ids, so the try's conf (its event log, a UI port of its own)
reaches it through PYSPARK_SUBMIT_ARGS (sparkflow.spark.pipelines) and the try follows it as a spark-submit try
follows its driver: app id and progress from the event log (then the UI's REST API), metrics at the end. On a
``spark_connect`` connection the Connect-native CLI runs against the server (a managed one is found or started and
leased for the run) under a Connect user id of the try's own, so that the server's jobs of this run, and only
those, make its progress and metrics.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from sparkflow.connections import Connection
from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, TaskInstanceHandle, lookup_connection
from sparkflow.exceptions import SparkSubmitFailed, TaskFailure
from sparkflow.logs import mask_sensitive_settings, masker
from sparkflow.operators.pyspark import servers_root
from sparkflow.process import GroupProcess
from sparkflow.spark.connect_config import CONN_TYPE, ConnectTarget, resolve_connect
from sparkflow.spark.connect_server import ServerDirectory, ServerRecord, use_server
from sparkflow.spark.connect_supervisor import free_port
from sparkflow.spark.connect_tracking import SessionTracker, user_marker
from sparkflow.spark.pipelines import (
    DRIVER_SUBMIT_ARGS,
    PIPELINE_COMMANDS,
    PIPELINES_BINARY,
    PIPELINES_ENV,
    build_connect_pipelines_argv,
    build_pipelines_argv,
    driver_conf,
    driver_submit_args,
    pipelines_submit_flags,
    run_user_id,
    with_user_id,
)
from sparkflow.spark.spec import SparkSubmitSpec
from sparkflow.spark.submission import SparkSubmission
from sparkflow.spark.submit import locate_binary


class SparkPipelinesException(TaskFailure):
    """The pipeline command failed (the provider's name)."""


class SparkPipelinesOperator(BaseOperator):
    template_fields: ClassVar[tuple[str, ...]] = ("pipeline_spec", "conf", "env_vars", "keytab", "principal")
    ui_color = "#e8a54b"

    def __init__(
        self,
        *,
        pipeline_spec: str | None = None,
        pipeline_command: str = "run",
        conf: dict[Any, Any] | None = None,
        conn_id: str = "spark_default",
        num_executors: int | None = None,
        executor_cores: int | None = None,
        executor_memory: str | None = None,
        driver_memory: str | None = None,
        verbose: bool = False,
        env_vars: dict[str, Any] | None = None,
        deploy_mode: str | None = None,
        yarn_queue: str | None = None,
        keytab: str | None = None,
        principal: str | None = None,
        openlineage_inject_parent_job_info: bool = False,
        openlineage_inject_transport_info: bool = False,
        status_poll_interval: float = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline_spec = pipeline_spec
        self.pipeline_command = pipeline_command
        self.conf = conf
        self.conn_id = conn_id
        self.num_executors = num_executors
        self.executor_cores = executor_cores
        self.executor_memory = executor_memory
        self.driver_memory = driver_memory
        self.verbose = verbose
        self.env_vars = env_vars
        self.deploy_mode = deploy_mode
        self.yarn_queue = yarn_queue
        self.keytab = keytab
        self.principal = principal
        self.openlineage_inject_parent_job_info = openlineage_inject_parent_job_info  # no OpenLineage here
        self.openlineage_inject_transport_info = openlineage_inject_transport_info
        self.status_poll_interval = status_poll_interval
        self._process: GroupProcess | None = None
        self._submission: SparkSubmission | None = None
        if pipeline_command not in PIPELINE_COMMANDS:
            raise self._error(f"pipeline_command has bad value {pipeline_command!r}; use run or dry-run")
        if conf is not None and not isinstance(conf, dict):
            raise self._error(f"conf must be a dict of Spark properties, got {type(conf).__name__}")

    def execute(self, context: Context) -> Any:
        conn = lookup_connection(self.conn_id)
        masker.add(*conn.secrets())
        env = {str(k): str(v) for k, v in (self.env_vars or {}).items()}
        if conn.conn_type == CONN_TYPE:
            return self._run_connect(resolve_connect(conn), env, context["ti"])
        return self._run_classic(conn, env, context["ti"])

    def _submit_spec(self, env_vars: dict[str, str]) -> SparkSubmitSpec:
        return SparkSubmitSpec.from_values({
            "conf": self.conf, "conn_id": self.conn_id, "num_executors": self.num_executors,
            "executor_cores": self.executor_cores, "executor_memory": self.executor_memory,
            "driver_memory": self.driver_memory, "keytab": self.keytab, "principal": self.principal,
            "verbose": self.verbose, "env_vars": env_vars, "yarn_queue": self.yarn_queue,
            "deploy_mode": self.deploy_mode, "status_poll_interval": self.status_poll_interval,
        })

    def _run_classic(self, conn: Connection, env_vars: dict[str, str], ti: TaskInstanceHandle) -> Any:
        submission = SparkSubmission(self._submit_spec({**PIPELINES_ENV, **env_vars}), conn, ti, self.log,
                                     durable=False, program=PIPELINES_BINARY)
        self._submission = submission
        event_log = submission.event_log_conf()  # the try's event log, for progress and metrics
        spec = submission.spec.with_conf(**event_log)
        added, ui_url = driver_conf(spec.conf, free_port("127.0.0.1"), submission.env.get("SPARK_LOCAL_IP") or
                                    "127.0.0.1")
        spec = spec.with_conf(**added)
        argv = build_pipelines_argv(self.pipeline_command, self.pipeline_spec, spec, submission.target,
                                    locate_binary(PIPELINES_BINARY))
        submission.env[DRIVER_SUBMIT_ARGS] = driver_submit_args(pipelines_submit_flags(spec, submission.target),
                                                                env_vars.get(DRIVER_SUBMIT_ARGS))
        if ui_url is not None:
            written = bool(event_log) and all(spec.conf.get(k) == v for k, v in event_log.items())
            submission.tracker.expect_driver(ui_url, event_log_written=written)
        try:
            return submission.run(argv)
        except SparkSubmitFailed as exc:
            raise SparkPipelinesException(f"spark-pipelines {self.pipeline_command}: {exc}") from None

    def _run_connect(self, target: ConnectTarget, env_vars: dict[str, str], ti: TaskInstanceHandle) -> Any:
        user = run_user_id(ti.dag_id, ti.task_id, ti.try_number)
        env = {**os.environ, **env_vars}
        env.setdefault("SPARK_REMOTE", with_user_id(target.url, user))  # an env_vars SPARK_REMOTE wins (provider)
        argv = build_connect_pipelines_argv(self.pipeline_command, self.pipeline_spec)
        if target.managed is None:
            return self._run_connect_cli(argv, env, ti, None, user)
        directory = ServerDirectory(servers_root(), target.conn_id)
        holder = f"{ti.dag_id}.{ti.task_id} {ti.run_id} try {ti.try_number} (pipeline)"
        with use_server(directory, target.managed, holder, holder, self.log) as (record, _):
            return self._run_connect_cli(argv, env, ti, record, user)

    def _run_connect_cli(self, argv: list[str], env: dict[str, str], ti: TaskInstanceHandle,
                         server: ServerRecord | None, user: str) -> Any:
        self.log.info("Running the pipeline on Spark Connect as user %s: %s", user, " ".join(argv))
        tracker = None
        if server is not None and server.app_id is not None:
            ti.record_external_ids(spark_app_id=server.app_id, spark_ui_url=server.ui_url)
            tracker = SessionTracker(server.ui_url, server.app_id, user_marker(user), float(self.status_poll_interval),
                                     lambda progress: self._on_progress(ti, progress), self.log)
            tracker.start()
        started = time.monotonic()
        self._process = GroupProcess(argv, env=env)
        try:
            result = self._process.run(lambda line: self.log.info("%s", mask_sensitive_settings(line)))
        finally:
            if tracker is not None:
                final = tracker.final(int((time.monotonic() - started) * 1000))
                if final is not None:
                    ti.record_spark_progress(final[0].to_dict())
                    ti.record_spark_metrics(final[1].to_dict())
                    self.log.info("Spark metrics of this pipeline run: %s jobs, %s tasks, duration %s ms",
                                  final[1].jobs, final[1].tasks, final[1].duration_ms)
        self._check(result.returncode, result.last_lines)
        return server.app_id if server is not None else None

    def _on_progress(self, ti: TaskInstanceHandle, progress: Any) -> None:
        ti.record_spark_progress(progress.to_dict())
        self.log.info("Spark progress %s", progress.describe())

    def _check(self, returncode: int, last_lines: tuple[str, ...]) -> None:
        if returncode != 0:
            tail = "\n".join(masker.mask(mask_sensitive_settings(line)) for line in last_lines[-10:])
            raise SparkPipelinesException(
                f"spark-pipelines {self.pipeline_command} exited with code {returncode}; last output:\n{tail}")
        self.log.info("spark-pipelines %s finished with code 0", self.pipeline_command)

    def on_kill(self) -> None:
        if self._submission is not None:
            self._submission.kill()
        if self._process is not None:
            self._process.kill()
