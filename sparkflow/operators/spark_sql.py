"""SparkSqlOperator: runs SQL with spark-sql (the Airflow provider's interface: sql text or a .sql/.hql file)."""

from __future__ import annotations

import os
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
        self._process: GroupProcess | None = None

    def execute(self, context: Context) -> Any:
        conn = lookup_connection(self.conn_id)
        masker.add(*conn.secrets())
        target = resolve_target(conn, SparkSubmitSpec(application=""))
        conf = self.conf if not isinstance(self.conf, dict) else {str(k): str(v) for k, v in self.conf.items()}
        ti = context["ti"]
        event_dir = ti.artifact_dir("spark-events")
        if not isinstance(conf, str):  # a dict (or nothing): add the per-try event log for metrics
            conf = with_event_log(SparkSubmitSpec(application="", conf=conf or {}), event_dir).conf
        argv = build_spark_sql_argv(
            self.sql, self.master or master_url(conn), conf, self.total_executor_cores, self.executor_cores,
            self.executor_memory, self.keytab, self.principal, self.num_executors, self.name, self.verbose,
            self.yarn_queue or conn.extra_dejson.get("queue"), binary=locate_binary("spark-sql"),
        )
        # spark-sql starts a Hive client: keep its metastore_db/ and spark-warehouse/ in the try's own directory.
        workdir = ti.artifact_dir("spark-sql")
        self.log.info("Running: %s", mask_sensitive_settings(" ".join(argv)))
        tracker = SparkRunTracker(ti, 1.0, self.log)
        self._process = GroupProcess(argv, env=submit_environment(target, {}, os.environ), cwd=workdir)
        try:
            result = self._process.run(tracker.on_line)
        finally:
            tracker.stop()
            tracker.record_metrics(event_dir)
        if result.returncode != 0:
            tail = "\n".join(masker.mask(line) for line in result.last_lines[-10:])
            raise SparkSubmitFailed(f"spark-sql exited with code {result.returncode}; last output:\n{tail}")
        return None

    def on_kill(self) -> None:
        if self._process is not None:
            self._process.kill()
