"""Frozen records read from the metastore. Readers get these, never rows or ORM objects."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sparkflow.state import RunState, TaskState


class ResultRow(Protocol):
    """A result row with its columns as attributes and as ``_mapping``: SQLAlchemy's Row or statements.Row."""

    @property
    def _mapping(self) -> Mapping[Any, Any]: ...

    def __getattr__(self, name: str) -> Any: ...


class TIKey(NamedTuple):
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1  # an instance of a mapped task: 0..n-1 (Airflow's map_index)

    def __str__(self) -> str:
        suffix = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}/{self.run_id}/{self.task_id}{suffix}"


def _json(text: str | None) -> Any:
    return json.loads(text) if text else None


def _from_row(cls: Any, row: ResultRow, **overrides: Any) -> Any:
    mapping = row._mapping
    values = {f.name: mapping[f.name] for f in fields(cls) if f.name in mapping}
    values.update(overrides)
    return cls(**values)


@dataclass(frozen=True)
class DagRecord:
    dag_id: str
    fileloc: str
    is_paused: bool
    is_active: bool
    description: str | None
    schedule: str | None
    tags: tuple[str, ...]
    owners: str | None
    max_active_runs: int
    max_active_tasks: int
    last_parsed_at: datetime | None

    @classmethod
    def from_row(cls, row: ResultRow) -> DagRecord:
        return _from_row(cls, row, tags=tuple(json.loads(row.tags or "[]")))


@dataclass(frozen=True)
class DagRunRecord:
    id: int
    dag_id: str
    run_id: str
    run_type: str
    logical_date: datetime
    data_interval_start: datetime | None
    data_interval_end: datetime | None
    conf: dict[str, Any]
    state: RunState
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    external_trigger: bool

    @classmethod
    def from_row(cls, row: ResultRow) -> DagRunRecord:
        return _from_row(cls, row, conf=json.loads(row.conf or "{}"), state=RunState(row.state))

    @property
    def duration(self) -> float | None:
        if self.start_date and self.end_date:
            return (self.end_date - self.start_date).total_seconds()
        return None


@dataclass(frozen=True)
class TaskInstanceRecord:
    id: int
    dag_run_id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: TaskState
    try_number: int
    max_tries: int
    operator: str | None
    pool: str
    pool_slots: int
    queue: str
    priority_weight: int
    queued_at: datetime | None
    start_date: datetime | None
    end_date: datetime | None
    duration: float | None
    next_try_at: datetime | None
    hostname: str | None
    pid: int | None
    executor: str | None
    last_heartbeat_at: datetime | None
    log_path: str | None
    spark_app_id: str | None
    spark_driver_id: str | None
    spark_ui_url: str | None
    spark_progress: dict[str, Any] | None
    spark_metrics: dict[str, Any] | None
    error: str | None
    updated_at: datetime | None

    @classmethod
    def from_row(cls, row: ResultRow) -> TaskInstanceRecord:
        return _from_row(cls, row, state=TaskState(row.state), spark_progress=_json(row.spark_progress),
                         spark_metrics=_json(row.spark_metrics))

    @property
    def key(self) -> TIKey:
        return TIKey(self.dag_id, self.run_id, self.task_id, self.map_index)


class TaskSlot(NamedTuple):
    """The scheduling columns of one task instance: what the scheduler loop reads every time a run advances.
    A plain tuple (no JSON, no datetime columns but next_try_at) so reading a 200-task run costs well under a
    millisecond; the loop reads full TaskInstanceRecords only for the few instances it acts on."""

    id: int
    task_id: str
    state: TaskState
    try_number: int
    next_try_at: datetime | None
    priority_weight: int
    pool: str
    pool_slots: int
    queue: str
    map_index: int = -1

    @property
    def ref(self) -> str | tuple[str, int]:
        """How the planner names this instance: the task_id, or (task_id, map_index) for a mapped instance."""
        return self.task_id if self.map_index < 0 else (self.task_id, self.map_index)


@dataclass(frozen=True)
class TaskTryRecord:
    ti_id: int
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    state: TaskState
    start_date: datetime | None
    end_date: datetime | None
    duration: float | None
    hostname: str | None
    pid: int | None
    log_path: str | None
    spark_app_id: str | None
    spark_driver_id: str | None
    spark_ui_url: str | None
    spark_metrics: dict[str, Any] | None
    error: str | None

    @classmethod
    def from_row(cls, row: ResultRow) -> TaskTryRecord:
        return _from_row(cls, row, state=TaskState(row.state), spark_metrics=_json(row.spark_metrics))


@dataclass(frozen=True)
class StateEventRecord:
    id: int
    at: datetime
    dag_id: str
    run_id: str | None
    task_id: str | None
    map_index: int
    try_number: int | None
    event: str
    old_state: str | None
    new_state: str | None
    actor: str | None
    detail: str | None

    @classmethod
    def from_row(cls, row: ResultRow) -> StateEventRecord:
        return _from_row(cls, row)


@dataclass(frozen=True)
class ImportErrorRecord:
    id: int
    filename: str
    lineno: int | None
    dag_id: str | None
    task_id: str | None
    message: str
    timestamp: datetime

    @classmethod
    def from_row(cls, row: ResultRow) -> ImportErrorRecord:
        return _from_row(cls, row)


@dataclass(frozen=True)
class DagFileStat:
    """What one parse of one DAG file found and cost (`sparkflow dags report`, the processor's change check)."""

    fileloc: str
    content_hash: str
    dag_ids: tuple[str, ...]
    task_count: int
    error_count: int
    parse_duration: float
    last_parsed_at: datetime | None = None

    @classmethod
    def from_row(cls, row: ResultRow) -> DagFileStat:
        return _from_row(cls, row, dag_ids=tuple(json.loads(row.dag_ids or "[]")))


@dataclass(frozen=True)
class SerializedDagRecord:
    dag_id: str
    fileloc: str
    data: str  # canonical JSON (sparkflow.definitions.serialization)
    dag_hash: str
    last_updated: datetime

    @classmethod
    def from_row(cls, row: ResultRow) -> SerializedDagRecord:
        return _from_row(cls, row)


@dataclass(frozen=True)
class RenderedFieldsRecord:
    try_number: int
    fields: dict[str, str]
    error: str | None
    updated_at: datetime

    @classmethod
    def from_row(cls, row: ResultRow) -> RenderedFieldsRecord:
        return cls(row.try_number, json.loads(row.fields), row.error, row.updated_at)


@dataclass(frozen=True)
class XComRecord:
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    key: str
    value: Any
    created_at: datetime

    @classmethod
    def from_row(cls, row: ResultRow) -> XComRecord:
        return _from_row(cls, row, value=json.loads(row.value) if row.value is not None else None)


@dataclass(frozen=True)
class PoolRecord:
    """A pool and its use right now: ``occupied`` = running + queued slots, ``open`` = what is left."""

    pool: str
    slots: int
    description: str | None
    running: int = 0
    queued: int = 0

    @property
    def occupied(self) -> int:
        return self.running + self.queued

    @property
    def open(self) -> int:
        return max(self.slots - self.occupied, 0)


@dataclass(frozen=True)
class VariableRecord:
    """A variable; ``val`` is the decrypted value, or None when read without the Fernet key."""

    key: str
    val: str | None
    description: str | None


@dataclass(frozen=True)
class UserRecord:
    """A web user; ``password_hash`` is the scrypt hash, never the password."""

    id: int
    username: str
    password_hash: str
    role: str
    active: bool
    created_at: datetime

    @classmethod
    def from_row(cls, row: ResultRow) -> UserRecord:
        return _from_row(cls, row)


@dataclass(frozen=True)
class ApiTokenRecord:
    """An API token as `users token-list` shows it; the token itself is never stored."""

    id: int
    username: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class AssetRecord:
    uri: str
    name: str | None
    group: str | None
    extra: dict[str, Any]
    consumers: tuple[str, ...]  # DAG ids scheduled on it
    producers: tuple[str, ...]  # "dag_id.task_id" of the tasks that update it
    producing_dags: tuple[str, ...]  # the DAG ids of those tasks
    last_event_at: datetime | None
    events: int


@dataclass(frozen=True)
class AssetEventRecord:
    id: int
    uri: str
    extra: dict[str, Any]
    source_dag_id: str | None
    source_run_id: str | None
    source_task_id: str | None
    source_map_index: int
    source_try_number: int | None
    timestamp: datetime

    @classmethod
    def from_row(cls, row: ResultRow) -> AssetEventRecord:
        return _from_row(cls, row, extra=_json(row.extra) or {})

    def as_dict(self) -> dict[str, Any]:
        """What the CLI, the API and ``triggering_asset_events`` show (Airflow's asset event fields)."""
        return {"id": self.id, "uri": self.uri, "extra": self.extra, "source_dag_id": self.source_dag_id,
                "source_run_id": self.source_run_id, "source_task_id": self.source_task_id,
                "source_map_index": self.source_map_index, "timestamp": self.timestamp.isoformat()}
