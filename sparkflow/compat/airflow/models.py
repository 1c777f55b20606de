"""Airflow's helper objects that DAG files use, on sparkflow's public API: Variable, Param, BaseHook,
``days_ago``, ``airflow.utils.timezone`` and the cron timetables.

Nothing here touches the metastore: Variable and BaseHook go through the resolvers the runtime (inside a task) or
the DAG parser (at the top level of a DAG file) put in ``sparkflow.definitions.context``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pendulum

from sparkflow.connections import Connection
from sparkflow.definitions.context import lookup_connection, lookup_variable, variables_available, write_variable
from sparkflow.definitions.schedule import CronTimetable
from sparkflow.exceptions import NotFound

_NOTSET: Any = object()


class VariableNotFound(NotFound, KeyError):
    """Airflow raises KeyError for a missing variable; DAG code catches either."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Variable:
    """``Variable.get(key, default_var=..., deserialize_json=...)``, ``Variable.set``, ``Variable.delete``."""

    @staticmethod
    def get(key: str, default_var: Any = _NOTSET, deserialize_json: bool = False, *, default: Any = _NOTSET) -> Any:
        value = lookup_variable(key)
        if value is None:
            fallback = default_var if default_var is not _NOTSET else default  # Airflow 3 calls it `default`
            if fallback is not _NOTSET:
                return fallback
            if not variables_available():
                raise VariableNotFound(
                    f"variable '{key}' cannot be read here: no metastore is reachable (Variable.get works inside a "
                    "running task and while sparkflow parses DAG files); pass default_var= to allow that"
                )
            raise VariableNotFound(
                f"variable '{key}' does not exist; set it with `sparkflow variables set {key} VALUE`"
            )
        if not deserialize_json:
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise NotFound(
                f"variable '{key}' is not valid JSON ({exc.msg} at position {exc.pos}); read it without "
                f"deserialize_json or store JSON with `sparkflow variables set {key} VALUE --json`"
            ) from None

    @staticmethod
    def set(key: str, value: Any, description: str | None = None, serialize_json: bool = False) -> None:
        text = json.dumps(value) if serialize_json else str(value)
        write_variable(key, text, description)

    @staticmethod
    def delete(key: str) -> None:
        write_variable(key, None)

    @staticmethod
    def setdefault(key: str, default: Any, description: str | None = None, deserialize_json: bool = False) -> Any:
        value = Variable.get(key, default_var=None, deserialize_json=deserialize_json)
        if value is None:
            Variable.set(key, default, description, serialize_json=deserialize_json)
            return default
        return value


class Param:
    """Airflow's ``Param(default, description=..., **json_schema)``. sparkflow params are plain values: a DAG or
    task built by the compatibility layer keeps the default; the schema is kept for reference, not enforced."""

    __airflow_param__ = True

    def __init__(self, default: Any = None, description: str | None = None, **schema: Any) -> None:
        self.value = default
        self.description = description
        self.schema = schema

    def resolve(self, value: Any = _NOTSET, suppress_exception: bool = False) -> Any:
        return self.value if value is _NOTSET else value

    def __repr__(self) -> str:
        return f"Param({self.value!r})"


class BaseHook:
    """``BaseHook.get_connection(conn_id)``: the connection as tasks see it (env override, then the store)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    @classmethod
    def get_connection(cls, conn_id: str) -> Connection:
        return lookup_connection(conn_id)


def _zone(value: str | tzinfo | None) -> tzinfo:
    if value is None:
        return pendulum.UTC
    return ZoneInfo(value) if isinstance(value, str) else value


def utcnow() -> pendulum.DateTime:
    return pendulum.now("UTC")


def days_ago(n: int, hour: int = 0, minute: int = 0, second: int = 0, microsecond: int = 0) -> pendulum.DateTime:
    """Airflow's ``days_ago``: midnight UTC today (or the given time), ``n`` days back."""
    today = utcnow().replace(hour=hour, minute=minute, second=second, microsecond=microsecond)
    return today - timedelta(days=n)


def make_aware(value: datetime, timezone: str | tzinfo | None = None) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=_zone(timezone))


def convert_to_utc(value: datetime) -> datetime:
    return make_aware(value).astimezone(pendulum.UTC)


def tz_datetime(*args: Any, **kwargs: Any) -> datetime:
    """``airflow.utils.timezone.datetime``: a datetime in UTC unless tzinfo is given."""
    kwargs.setdefault("tzinfo", pendulum.UTC)
    return datetime(*args, **kwargs)


class CronTriggerTimetable(CronTimetable):
    """Airflow's ``CronTriggerTimetable(cron, timezone=...)`` and ``CronDataIntervalTimetable``. sparkflow runs a
    cron schedule at the end of each interval (Airflow's data-interval semantics) for both."""

    def __init__(self, cron: str, *, timezone: str | tzinfo | None = None, **ignored: Any) -> None:
        super().__init__(cron, _zone(timezone))


class CronDataIntervalTimetable(CronTriggerTimetable):
    def __init__(self, cron: str, timezone: str | tzinfo | None = None) -> None:
        super().__init__(cron, timezone=timezone)
