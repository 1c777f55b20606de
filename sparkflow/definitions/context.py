"""The task execution context (Airflow's ``context`` dict) and the handles a running task talks through.

Operators never see the metastore. The runtime hands them a :class:`TaskInstanceHandle` (``context["ti"]``) and
resolvers for connections and variables; this module only declares their shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sparkflow.connections import Connection, connection_from_env, missing_connection_hint
from sparkflow.exceptions import NotFound, SparkflowError
from sparkflow.logs import is_sensitive_name, masker

Context = dict[str, Any]

XCOM_RETURN_KEY = "return_value"


@dataclass(frozen=True)
class TriggeredRun:
    """What triggering another DAG did: the run (``run_id``, ``logical_date``), and whether it was created now
    (``created``) or existed already and was cleared to run again (``reset``); neither: it existed, untouched."""

    run_id: str
    logical_date: datetime
    created: bool
    reset: bool = False


class TaskInstanceHandle(Protocol):
    """What a running task may ask of its task instance (``context["ti"]``)."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    max_tries: int

    def xcom_push(self, key: str, value: Any) -> None: ...

    def push_return_value(self, value: Any) -> None:
        """The task's return value as its ``return_value`` XCom (the runner stores it with the try's outcome)."""

    def xcom_pull(
        self,
        task_ids: str | list[str] | None = None,
        key: str = XCOM_RETURN_KEY,
        dag_id: str | None = None,
        run_id: str | None = None,
        default: Any = None,
    ) -> Any: ...

    def skip(self, task_ids: list[str]) -> None:
        """Mark these (downstream) tasks of the same run skipped: branching and short-circuit."""

    def record_external_ids(self, **ids: str | None) -> None:
        """Store ids of remote work (Spark app id, driver id, UI URL) on the task instance at once."""

    def get_external_states(
        self, dag_id: str, logical_date: datetime, task_ids: list[str] | None = None
    ) -> list[str]:
        """States of ``task_ids`` in the runs of ``dag_id`` at ``logical_date`` (of those runs themselves when
        task_ids is None): what ExternalTaskSensor waits on, read without operators touching the metastore."""

    def trigger_dag_run(
        self, dag_id: str, run_id: str, logical_date: datetime, conf: dict[str, Any] | None, reset_dag_run: bool
    ) -> TriggeredRun:
        """Create a manual run of another DAG (TriggerDagRunOperator); an existing run with that id or logical
        date is cleared to run again with ``reset_dag_run``, else left as it is."""

    def dag_run_state(self, dag_id: str, run_id: str) -> str:
        """The state of a run of any DAG (TriggerDagRunOperator's wait_for_completion)."""

    def try_elapsed_seconds(self) -> float:
        """Seconds since this try started; a sensor in reschedule mode keeps one try across all its pokes."""

    def record_spark_progress(self, progress: dict[str, Any]) -> None:
        """Store the latest live progress (jobs/stages/tasks) of the try's Spark application."""

    def record_spark_metrics(self, metrics: dict[str, Any]) -> None:
        """Store the metrics of the try's Spark application once it ended."""

    def artifact_dir(self, name: str) -> Path:
        """A directory of this try's own (created), e.g. for its Spark event log."""

    def previous_try_ids(self) -> dict[str, str | None]:
        """External ids (spark_app_id, spark_driver_id, spark_ui_url) of the previous try, to reattach to."""


class ConnectionLookup(Protocol):
    def __call__(self, conn_id: str) -> Connection: ...


class VariableLookup(Protocol):
    def __call__(self, key: str) -> str | None: ...


class VariableWriter(Protocol):
    """Store a variable's text value (encrypted), or delete it when ``value`` is None."""

    def __call__(self, key: str, value: str | None, description: str | None = None) -> None: ...


# Set by the runtime (or the CLI for `tasks test`) for the duration of a task; read by hooks and by
# get_current_context(). A ContextVar keeps threads and nested runs apart.
_current_context: ContextVar[Context | None] = ContextVar("sparkflow_current_context", default=None)
_connection_lookup: ContextVar[ConnectionLookup | None] = ContextVar("sparkflow_connection_lookup", default=None)
_variable_lookup: ContextVar[VariableLookup | None] = ContextVar("sparkflow_variable_lookup", default=None)
_variable_writer: ContextVar[VariableWriter | None] = ContextVar("sparkflow_variable_writer", default=None)


_clock: ContextVar[Callable[[], datetime] | None] = ContextVar("sparkflow_clock", default=None)


def utcnow() -> datetime:
    """Now, for operators that decide by the time of day (sensors, date branches, latest-only): the runtime's
    clock inside a task, so the scheduler's injected clock drives them in tests."""
    clock = _clock.get()
    return clock() if clock is not None else datetime.now(UTC)


@contextmanager
def task_clock(clock: Callable[[], datetime]) -> Iterator[None]:
    token = _clock.set(clock)
    try:
        yield
    finally:
        _clock.reset(token)


def get_current_context() -> Context:
    context = _current_context.get()
    if context is None:
        raise SparkflowError("get_current_context() was called outside a running task")
    return context


@contextmanager
def task_environment(
    context: Context | None, connections: ConnectionLookup | None, variables: VariableLookup | None,
    variable_writer: VariableWriter | None = None,
) -> Iterator[None]:
    """Resolvers for a running task (``context`` set) or for DAG-file parsing (``context`` None)."""
    tokens = (
        _current_context.set(context),
        _connection_lookup.set(connections),
        _variable_lookup.set(variables),
        _variable_writer.set(variable_writer),
    )
    try:
        yield
    finally:
        _current_context.reset(tokens[0])
        _connection_lookup.reset(tokens[1])
        _variable_lookup.reset(tokens[2])
        _variable_writer.reset(tokens[3])


def lookup_connection(conn_id: str) -> Connection:
    """Resolve a connection for a hook or operator: SPARKFLOW_CONN_<ID> first, then the store the runtime set."""
    conn = connection_from_env(conn_id)
    if conn is None:
        resolver = _connection_lookup.get()
        if resolver is None:
            raise NotFound(
                f"connection '{conn_id}' is not defined: no SPARKFLOW_CONN_{conn_id.upper()} variable and no "
                f"metastore available here; {missing_connection_hint(conn_id)}"
            )
        conn = resolver(conn_id)
    masker.add(*conn.secrets())  # from here on, logs and rendered fields show them as ***
    return conn


def lookup_variable(key: str) -> str | None:
    """A Variable's value; the value of a sensitive key (``db_password``), and sensitive parts of a JSON value,
    are masked from then on, as in Airflow."""
    resolver = _variable_lookup.get()
    value = None if resolver is None else resolver(key)
    if value is not None:
        if is_sensitive_name(key):
            masker.add(value)
        if value[:1] in "{[":
            try:
                masker.add_value(json.loads(value), key)
            except ValueError:
                pass
    return value


def variables_available() -> bool:
    """Whether a variable store is reachable here (inside a task, or while sparkflow parses DAG files)."""
    return _variable_lookup.get() is not None


def write_variable(key: str, value: str | None, description: str | None = None) -> None:
    """Set (or, with ``value`` None, delete) a variable through the store the runtime or the DAG parser set."""
    writer = _variable_writer.get()
    if writer is None:
        raise SparkflowError(
            f"cannot change variable '{key}' here: no metastore is reachable (this works inside a running task and "
            f"while sparkflow parses DAG files); use `sparkflow variables set {key} VALUE`"
        )
    writer(key, value, description)


class ConnectionAccessor:
    """``{{ conn.my_conn.host }}`` and ``conn.get('my_conn')`` in templates, as in Airflow."""

    def __getattr__(self, conn_id: str) -> Connection:
        if conn_id.startswith("__"):
            raise AttributeError(conn_id)
        return lookup_connection(conn_id)

    def get(self, conn_id: str, default_conn: Connection | None = None) -> Connection | None:
        try:
            return lookup_connection(conn_id)
        except NotFound:
            return default_conn


class VariableAccessor:
    """``{{ var.value.key }}`` and ``{{ var.json.key }}``."""

    def __init__(self, deserialize_json: bool) -> None:
        self._json = deserialize_json

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return self.get(key)

    def get(self, key: str, default_var: Any = NotFound) -> Any:
        value = lookup_variable(key)
        if value is None:
            if default_var is NotFound:
                raise NotFound(f"variable '{key}' does not exist; set it with `sparkflow variables set {key} VALUE`")
            return default_var
        return json.loads(value) if self._json else value


class _VarNamespace:
    value = VariableAccessor(deserialize_json=False)
    json = VariableAccessor(deserialize_json=True)


def ds_add(ds: str, days: int) -> str:
    return (datetime.strptime(ds, "%Y-%m-%d") + timedelta(days=days)).strftime("%Y-%m-%d")


def ds_format(ds: str, input_format: str, output_format: str) -> str:
    return datetime.strptime(ds, input_format).strftime(output_format)


class _Macros:
    """The ``macros`` namespace of templates (a subset of Airflow's)."""

    import datetime as datetime_module
    import json as json
    import random as random
    import time as time
    import uuid as uuid

    datetime = datetime_module.datetime
    timedelta = datetime_module.timedelta
    ds_add = staticmethod(ds_add)
    ds_format = staticmethod(ds_format)


macros = _Macros()
conn_accessor = ConnectionAccessor()
var_namespace = _VarNamespace()
