"""SparkJDBCOperator: the provider's transfer operator between a JDBC database and a Spark (metastore) table.

It submits sparkflow's own JDBC application (sparkflow/spark/jdbc_app.py) like any SparkSubmitOperator task, so
it gets the same live progress, metrics and kill. Unlike the provider, the database credentials never appear on
the command line: they reach the driver through its environment (sparkflow.spark.jdbc).
"""

from __future__ import annotations

import inspect
from typing import Any

from sparkflow.definitions.context import Context, lookup_connection
from sparkflow.logs import masker
from sparkflow.operators.spark_submit import (
    EXTRA_ARGUMENTS,
    OPERATOR_OPTIONS,
    SparkSubmitOperator,
    operator_signature,
)
from sparkflow.spark.jdbc import JDBC_APP, JDBC_FIELDS, SPARK_ALIASES, JdbcTransfer, jdbc_default
from sparkflow.spark.spec import SparkSubmitSpec, classify_master, master_url
from sparkflow.spark.submission import SparkSubmission

# The SparkSubmit options a JDBC operator takes under its own name (the spark_* aliases replace these).
_ALIASED = {option for option, _ in SPARK_ALIASES.values()}


class SparkJDBCOperator(SparkSubmitOperator):
    template_fields = (*SparkSubmitOperator.template_fields, "jdbc_table", "metastore_table")
    jdbc_conn_id: str  # set from JDBC_FIELDS in __init__

    def __init__(self, **kwargs: Any) -> None:
        transfer = {name: kwargs.pop(name, jdbc_default(name)) for name in JDBC_FIELDS}
        for alias, (option, default) in SPARK_ALIASES.items():
            kwargs[option] = kwargs.pop(alias, default)
        kwargs.setdefault("application", JDBC_APP)
        super().__init__(**kwargs)
        for name, value in transfer.items():
            setattr(self, name, value)
        self.spark_conn_id = self.conn_id
        problem = JdbcTransfer(**transfer).problem()
        if problem:
            raise self._error(problem)

    __init__.__signature__ = operator_signature(  # type: ignore[attr-defined]
        [inspect.Parameter(alias, inspect.Parameter.KEYWORD_ONLY, default=default)
         for alias, (_, default) in SPARK_ALIASES.items()]
        + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=jdbc_default(n)) for n in JDBC_FIELDS]
        + [inspect.Parameter("application", inspect.Parameter.KEYWORD_ONLY, default=JDBC_APP)],
        [o for o in OPERATOR_OPTIONS if o not in _ALIASED], {}, EXTRA_ARGUMENTS,
    )

    def execute(self, context: Context) -> Any:
        jdbc = lookup_connection(self.jdbc_conn_id)
        masker.add(*jdbc.secrets())
        spark_conn = lookup_connection(self.conn_id)
        transfer = JdbcTransfer(**{name: getattr(self, name) for name in JDBC_FIELDS})
        values = transfer.submit_values(jdbc, classify_master(master_url(spark_conn)), self.spec_values())
        self.application_args = values["application_args"]
        self._submission = SparkSubmission(SparkSubmitSpec.from_values(values), spark_conn, context["ti"], self.log,
                                           durable=self.durable)
        return self._submission.run()
