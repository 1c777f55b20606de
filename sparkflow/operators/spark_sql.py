"""SparkSqlOperator and SparkSqlHook: run SQL with spark-sql (the provider's interface: sql text or a .sql/.hql
file), through the same SparkSubmission as spark-submit (ids, progress, metrics, kill, masked failure tail)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from sparkflow.connections import Connection
from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, TaskInstanceHandle, lookup_connection
from sparkflow.exceptions import AirflowException, NotFound
from sparkflow.spark.command import build_spark_sql_argv
from sparkflow.spark.spec import SQL_FIELDS, SparkSqlSpec, SparkSubmitSpec, classify_master, master_url, sql_default
from sparkflow.spark.submission import SparkSubmission
from sparkflow.spark.submit import locate_binary


class SparkSqlHook:
    """The provider's SparkSqlHook: the spark-sql command from a connection, run with its output streamed.

    Unlike the provider, the connection is looked up when the query runs (so an unknown ``conn_id`` is an error
    then, not a silent fall-back to YARN)."""

    conn_name_attr = "conn_id"
    default_conn_name = "spark_sql_default"
    conn_type = "spark_sql"
    hook_name = "Spark SQL"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = _SQL_SIGNATURE.bind(None, *args, **kwargs)
        bound.apply_defaults()
        self._spec = SparkSqlSpec(**{k: v for k, v in bound.arguments.items() if k != "self"})
        for name in SQL_FIELDS:  # also under the provider's attribute names: _sql, _conf, _master ...
            setattr(self, f"_{name}", getattr(self._spec, name))
        self._sp: SparkSubmission | None = None
        self._ti: TaskInstanceHandle | None = None  # set by SparkSqlOperator: ids, progress and metrics
        self._cwd: Path | None = None
        self.log = logging.getLogger("sparkflow.task.SparkSqlHook")

    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                             **({} if n == "sql" else {"default": sql_default(n)})) for n in SQL_FIELDS]
    )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["schema", "login", "password", "extra"], "relabeling": {}}

    def get_conn(self) -> Any:
        return None

    def _connection(self) -> Connection:
        """As in the provider, the connection is optional when ``master`` is given: the operator's arguments stand
        in for it. Without either, a missing connection is an error (not the provider's fall-back to yarn)."""
        try:
            return lookup_connection(self._spec.conn_id)
        except NotFound:
            if not self._spec.master:
                raise
            return Connection(self._spec.conn_id, "spark", host=self._spec.master)

    def _prepare_command(self, cmd: str | list[str] = "", extra_conf: dict[str, str] | None = None) -> list[str]:
        """The spark-sql argv in the provider's order; ``--queue default`` on YARN unless a queue is given."""
        if not isinstance(cmd, (str, list)):
            raise AirflowException(f"Invalid additional command: {cmd}")
        spec, conn = self._spec, self._connection()
        master = spec.master or master_url(conn)
        queue = spec.yarn_queue or conn.extra_dejson.get("queue")
        if queue is None and classify_master(master) == "yarn":
            queue = "default"  # the provider's default queue
        conf = spec.conf
        if isinstance(conf, Mapping) or (conf is None and extra_conf):
            conf = {**(extra_conf or {}), **{str(k): str(v) for k, v in (conf or {}).items()}}
        argv = build_spark_sql_argv(
            spec.sql, master, conf, spec.total_executor_cores, spec.executor_cores, spec.executor_memory,
            spec.keytab, spec.principal, spec.num_executors, spec.name, spec.verbose, queue,
            binary=locate_binary("spark-sql"),
        )
        return argv + (cmd.split() if isinstance(cmd, str) else list(cmd))

    def run_query(self, cmd: str | list[str] = "", **kwargs: Any) -> None:
        """Run spark-sql to its end; raises SparkSubmitFailed (an AirflowException) on a non-zero exit.
        ``kwargs`` (Popen arguments in the provider) are not used."""
        conn = self._connection()
        spec = SparkSubmitSpec(conn_id=conn.conn_id, name=self._spec.name or "default-name")
        self._sp = SparkSubmission(spec, conn, self._ti, self.log, program="spark-sql", cwd=self._cwd)
        self._sp.run(self._prepare_command(cmd, self._sp.event_log_conf()))

    def kill(self) -> None:
        if self._sp is not None:
            self._sp.kill()


_SQL_SIGNATURE = inspect.signature(SparkSqlHook.__init__)


class SparkSqlOperator(BaseOperator):
    template_fields: ClassVar[tuple[str, ...]] = ("sql",)
    template_ext: ClassVar[tuple[str, ...]] = (".sql", ".hql")
    ui_color = "#ff7f50"
    sql: str

    def __init__(self, *, sql: str, **kwargs: Any) -> None:
        options = {n: kwargs.pop(n, sql_default(n)) for n in SQL_FIELDS if n != "sql"}
        super().__init__(**kwargs)
        if not isinstance(sql, str) or not sql.strip():
            raise self._error("sql must be SQL text or the path of a .sql/.hql file")
        self.sql = sql
        for name, value in options.items():
            setattr(self, name, value)
        self._hook: SparkSqlHook | None = None

    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("sql", inspect.Parameter.KEYWORD_ONLY)]
        + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=sql_default(n)) for n in SQL_FIELDS[1:]]
        + [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    )

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        self._hook = SparkSqlHook(**{n: getattr(self, n) for n in SQL_FIELDS})
        self._hook._ti = ti
        # spark-sql starts a Hive client: keep its metastore_db/ and derby.log in the try's own directory.
        self._hook._cwd = ti.artifact_dir("spark-sql")
        self._hook.run_query()
        return None

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.kill()
