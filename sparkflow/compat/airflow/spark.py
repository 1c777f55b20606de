"""``SparkSubmitHook`` and ``SparkJDBCHook`` with the Airflow provider 6.3.4 constructors and public methods, for DAG
code that submits from its own callables.

Thin shells over sparkflow.spark.submission.SparkSubmission (the operators' lifecycle): ``submit()`` runs it inside
the running task, so the command, the connection handling, the cluster-mode tracking, the kill and the recording
of ids on the task instance are the operators', not a second copy. (``SparkSqlHook`` lives with its operator in
sparkflow.operators.spark_sql.)
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from sparkflow.compat.airflow.models import BaseHook
from sparkflow.definitions.context import get_current_context, lookup_connection
from sparkflow.exceptions import SparkflowError, UserError
from sparkflow.logs import masker
from sparkflow.spark.jdbc import HOOK_SPARK_OPTIONS, JDBC_FIELDS, SPARK_ALIASES, JdbcTransfer, jdbc_default
from sparkflow.spark.spec import (
    HOOK_KEYWORD_ONLY,
    HOOK_POSITIONAL,
    SparkSubmitSpec,
    classify_master,
    master_url,
    spec_parameters,
)
from sparkflow.spark.submission import SparkSubmission

_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KEYWORD = inspect.Parameter.KEYWORD_ONLY
HOOK_SIGNATURE = inspect.Signature(
    [inspect.Parameter("self", _POSITIONAL), *spec_parameters(HOOK_POSITIONAL, _POSITIONAL),
     *spec_parameters(HOOK_KEYWORD_ONLY, _KEYWORD)]
)


class SparkSubmitHook(BaseHook):
    """The provider's SparkSubmitHook: ``submit(application)``, ``on_kill()``, ``get_conn()``,
    ``query_yarn_application_status(app_id)``; the options as in the provider (positional up to
    ``deploy_mode``)."""

    conn_name_attr = "conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark"
    hook_name = "Spark"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = HOOK_SIGNATURE.bind(self, *args, **kwargs)
        self._options: dict[str, Any] = {k: v for k, v in bound.arguments.items() if k != "self"}
        self.conn_id = self._options.get("conn_id", "spark_default")
        self._conn_id = self.conn_id
        self._submission: SparkSubmission | None = None
        self.log = logging.getLogger("sparkflow.task.SparkSubmitHook")

    __init__.__signature__ = HOOK_SIGNATURE  # type: ignore[attr-defined]

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {"hidden_fields": ["schema", "login", "password", "extra"], "relabeling": {},
                "placeholders": {"keytab": "<base64 encoded Keytab Content>"}}

    def get_conn(self) -> Any:
        return None

    def _new_submission(self, values: dict[str, Any]) -> SparkSubmission:
        """A submission inside the running task (ids, progress and metrics recorded on it), or, outside one,
        with nothing recorded."""
        try:
            ti = get_current_context()["ti"]
        except SparkflowError:  # outside a running task
            ti = None
        spec = SparkSubmitSpec.from_values(values)
        return SparkSubmission(spec, lookup_connection(spec.conn_id), ti, self.log)

    def submit(self, application: str = "", **kwargs: Any) -> str | None:
        """Run ``application`` to its end (following a cluster-mode driver to its final state); raises
        SparkSubmitFailed, an AirflowException, when it failed. Returns the Spark application id when known.
        ``kwargs`` (Popen arguments in the provider) are not used."""
        self._submission = self._new_submission({**self._options, "application": application})
        return self._submission.run()

    def on_kill(self) -> None:
        if self._submission is not None:
            self._submission.kill()

    def query_yarn_application_status(self, application_id: str) -> str:
        """The provider's normalized YARN status: an active state as is, else SUCCEEDED or FAILED."""
        submission = self._submission or self._new_submission(dict(self._options))
        return submission.yarn_client().report(application_id).normalized()


class SparkJDBCHook(SparkSubmitHook):
    """The provider's SparkJDBCHook: ``submit_jdbc_job()`` runs the JDBC transfer inside the current task (same
    command, credential handling and tracking as SparkJDBCOperator); ``submit()`` is SparkSubmitHook's."""

    conn_name_attr = "spark_conn_id"
    default_conn_name = "spark_default"
    conn_type = "spark_jdbc"
    hook_name = "Spark JDBC"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        bound = JDBC_HOOK_SIGNATURE.bind(self, *args, **kwargs)
        values = {k: v for k, v in bound.arguments.items() if k not in ("self", "args", "kwargs")}
        values.update(bound.arguments.get("kwargs", {}))
        transfer = {n: values.pop(n, jdbc_default(n)) for n in JDBC_FIELDS}
        spark = {option: values.pop(alias, "spark_default" if alias == "spark_conn_id" else default)
                 for alias, (option, default) in SPARK_ALIASES.items()}
        super().__init__(*bound.arguments.get("args", ()), **{**values, **spark})
        self._transfer = JdbcTransfer(**transfer)
        self.spark_conn_id = self.conn_id
        self.jdbc_conn_id = self._transfer.jdbc_conn_id
        self._jdbc_conn_id = self.jdbc_conn_id

    def submit_jdbc_job(self) -> str | None:
        """Run the JDBC transfer inside the current task; raises on failure. Returns the Spark application id."""
        problem = self._transfer.problem()
        if problem:
            raise UserError(f"SparkJDBCHook: {problem}")
        jdbc = lookup_connection(self.jdbc_conn_id)
        masker.add(*jdbc.secrets())
        manager = classify_master(master_url(lookup_connection(self.conn_id)))
        self._submission = self._new_submission(self._transfer.submit_values(jdbc, manager, dict(self._options)))
        return self._submission.run()


JDBC_HOOK_SIGNATURE = inspect.Signature(
    [inspect.Parameter("self", _POSITIONAL)]
    + [inspect.Parameter(alias, _POSITIONAL, default="spark_default" if alias == "spark_conn_id" else default)
       for alias, (_, default) in SPARK_ALIASES.items()]
    + spec_parameters(HOOK_SPARK_OPTIONS, _POSITIONAL)
    + [inspect.Parameter(n, _POSITIONAL, default=jdbc_default(n)) for n in JDBC_FIELDS]
    + [inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
       inspect.Parameter("use_krb5ccache", _KEYWORD, default=False),
       inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
)
SparkJDBCHook.__init__.__signature__ = JDBC_HOOK_SIGNATURE  # type: ignore[attr-defined]
