"""SparkSqlOperator: runs SQL with spark-sql (the Airflow provider's interface: sql text or a .sql/.hql file)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, lookup_connection
from sparkflow.exceptions import SparkSubmitFailed
from sparkflow.logs import mask_sensitive_settings, masker
from sparkflow.operators.spark_submit import SparkRunTracker, with_event_log
from sparkflow.process import GroupProcess
from sparkflow.spark.command import build_spark_sql_argv
from sparkflow.spark.spec import SparkSubmitSpec, master_url, resolve_target
from sparkflow.spark.submit import locate_binary, submit_environment


class SparkSqlHook:
    """The provider's SparkSqlHook: builds the spark-sql command from a connection and runs it, streaming output."""

    def __init__(
        self,
        sql: str,
        conf: dict[str, Any] | str | None = None,
        conn_id: str = "spark_sql_default",
        total_executor_cores: int | None = None,
        executor_cores: int | None = None,
        executor_memory: str | None = None,
        keytab: str | None = None,
        principal: str | None = None,
        master: str | None = None,
        name: str = "default-name",
        num_executors: int | None = None,
        verbose: bool = True,
        yarn_queue: str | None = None,
    ) -> None:
        self.sql = sql
        self.conf = conf
        self.conn_id = conn_id
        self.total_executor_cores = total_executor_cores
        self.executor_cores = executor_cores
        self.executor_memory = executor_memory
        self.keytab = keytab
        self.principal = principal
        self.master = master
        self.name = name
        self.num_executors = num_executors
        self.verbose = verbose
        self.yarn_queue = yarn_queue
        self._process: GroupProcess | None = None
        self.log = logging.getLogger("sparkflow.task.SparkSqlHook")

    def _prepare_command(self, cmd: str | list[str] = "") -> list[str]:
        conn = lookup_connection(self.conn_id)
        masker.add(*conn.secrets())
        conf = self.conf if not isinstance(self.conf, dict) else {str(k): str(v) for k, v in self.conf.items()}
        argv = build_spark_sql_argv(
            self.sql, self.master or master_url(conn), conf, self.total_executor_cores, self.executor_cores,
            self.executor_memory, self.keytab, self.principal, self.num_executors, self.name, self.verbose,
            self.yarn_queue or conn.extra_dejson.get("queue"), binary=locate_binary("spark-sql"),
        )
        return argv + (cmd.split() if isinstance(cmd, str) else list(cmd))

    def run_query(self, cmd: str | list[str] = "", on_line: Callable[[str], None] | None = None,
                  cwd: Path | None = None) -> None:
        argv = self._prepare_command(cmd)
        target = resolve_target(lookup_connection(self.conn_id), SparkSubmitSpec(application=""))
        self.log.info("Running: %s", mask_sensitive_settings(" ".join(argv)))
        self._process = GroupProcess(argv, env=submit_environment(target, {}, os.environ), cwd=cwd)
        result = self._process.run(on_line or (lambda line: self.log.info("%s", mask_sensitive_settings(line))))
        if result.returncode != 0:
            tail = "\n".join(masker.mask(mask_sensitive_settings(line)) for line in result.last_lines[-10:])
            raise SparkSubmitFailed(f"spark-sql exited with code {result.returncode}; last output:\n{tail}")

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()


class SparkSqlOperator(BaseOperator):
    template_fields = ("sql",)
    template_ext = (".sql", ".hql")
    ui_color = "#ff7f50"

    def __init__(
        self,
        *,
        sql: str,
        conf: dict[str, Any] | str | None = None,
        conn_id: str = "spark_sql_default",
        total_executor_cores: int | None = None,
        executor_cores: int | None = None,
        executor_memory: str | None = None,
        keytab: str | None = None,
        principal: str | None = None,
        master: str | None = None,
        name: str = "default-name",
        num_executors: int | None = None,
        verbose: bool = True,
        yarn_queue: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(sql, str) or not sql.strip():
            raise self._error("sql must be SQL text or the path of a .sql/.hql file")
        self.sql = sql
        self.conf = conf
        self.conn_id = conn_id
        self.total_executor_cores = total_executor_cores
        self.executor_cores = executor_cores
        self.executor_memory = executor_memory
        self.keytab = keytab
        self.principal = principal
        self.master = master
        self.name = name
        self.num_executors = num_executors
        self.verbose = verbose
        self.yarn_queue = yarn_queue
        self._hook: SparkSqlHook | None = None

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        event_dir = ti.artifact_dir("spark-events")
        conf = self.conf
        if not isinstance(conf, str):  # a dict (or nothing): add the per-try event log, for metrics
            plain = {str(k): str(v) for k, v in (conf or {}).items()}
            conf = with_event_log(SparkSubmitSpec(application="", conf=plain), event_dir).conf
        self._hook = SparkSqlHook(
            self.sql, conf, self.conn_id, self.total_executor_cores, self.executor_cores, self.executor_memory,
            self.keytab, self.principal, self.master, self.name, self.num_executors, self.verbose, self.yarn_queue,
        )
        tracker = SparkRunTracker(ti, 1.0, self.log, event_dir)
        with tracker.following():
            # spark-sql starts a Hive client: keep its metastore_db/ and derby.log in the try's own directory.
            self._hook.run_query(on_line=tracker.on_line, cwd=ti.artifact_dir("spark-sql"))
        return None

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.kill()
