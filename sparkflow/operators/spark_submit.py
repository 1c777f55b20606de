"""SparkSubmitOperator with the Airflow provider's constructor (same names and defaults), validated at load time."""

from __future__ import annotations

import os
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, lookup_connection
from sparkflow.exceptions import SparkSubmitFailed
from sparkflow.logs import masker
from sparkflow.process import GroupProcess
from sparkflow.spark.command import build_spark_submit_argv
from sparkflow.spark.spec import SparkSubmitSpec, resolve_target
from sparkflow.spark.submit import locate_binary, parse_ids, submit_environment

_INT_FIELDS = ("total_executor_cores", "executor_cores", "num_executors")
_DEPLOY_MODES = ("client", "cluster")


class SparkSubmitOperator(BaseOperator):
    template_fields = (
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
        self._validate()

    def _validate(self) -> None:
        """Reject a bad task when the DAG file is loaded, not when it runs at 3 a.m."""
        if not isinstance(self.application, str) or not self.application.strip():
            raise self._error("application must be the path of a .py, .jar or .R file to submit")
        if self.conf is not None and not isinstance(self.conf, dict):
            raise self._error(f"conf must be a dict of Spark properties, got {type(self.conf).__name__}")
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
        spec = self.spec()
        target = resolve_target(conn, spec)
        argv = build_spark_submit_argv(spec, target, locate_binary(target.spark_binary), os.environ)
        env = submit_environment(target, spec.env_vars, os.environ)
        self.log.info("Submitting to %s (%s): %s", target.master, target.cluster_manager, " ".join(argv))
        ti = context["ti"]
        found: dict[str, str] = {}

        def on_line(line: str) -> None:
            self.log.info("%s", line)
            ids = parse_ids(line)
            new = {k: v for k, v in vars(ids).items() if v and found.get(k) != v}
            if new:
                found.update(new)
                ti.record_external_ids(**{f"spark_{k}": v for k, v in new.items()})

        self._process = GroupProcess(argv, env=env)
        result = self._process.run(on_line)
        if result.returncode != 0:
            tail = "\n".join(masker.mask(line) for line in result.last_lines[-10:])
            raise SparkSubmitFailed(f"spark-submit exited with code {result.returncode}; last output:\n{tail}")
        self.log.info("spark-submit finished with code 0 (application %s)", found.get("app_id", "unknown"))
        return found.get("app_id")

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()
