"""The metastore's tables (SQLAlchemy Core). Alembic migrations under migrations/ create and evolve them.

Timestamps are stored as timezone-aware UTC. States are stored as their string values from ``sparkflow.state``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

from sparkflow.exceptions import UserError

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 250  # length of dag_id, task_id, run_id, conn_id (Airflow's limit)
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def check_id(what: str, value: str) -> None:
    """A name users choose for a row (a pool, a user): letters, digits, '_', '.', '-', at most ID long."""
    if not value or not set(value) <= ID_CHARS or len(value) > ID:
        raise UserError(f"{what} {value!r} is invalid; use letters, digits, '_', '.', '-'")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the metastore; use an aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


TS = UTCDateTime()

dag = Table(
    "dag",
    metadata,
    Column("dag_id", String(ID), primary_key=True),
    Column("fileloc", Text, nullable=False),
    Column("is_paused", Boolean, nullable=False, default=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("description", Text),
    Column("schedule", Text),  # the schedule in words, for listings
    Column("tags", Text),  # JSON list
    Column("owners", Text),
    Column("max_active_runs", Integer, nullable=False, default=16),
    Column("max_active_tasks", Integer, nullable=False, default=16),
    Column("last_parsed_at", TS),
)

dag_run = Table(
    "dag_run",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID), nullable=False),
    Column("run_id", String(ID), nullable=False),
    # manual, scheduled, backfill, asset_triggered, asset_materialization (Airflow's length)
    Column("run_type", String(50), nullable=False),
    Column("logical_date", TS, nullable=False),
    Column("data_interval_start", TS),
    Column("data_interval_end", TS),
    Column("conf", Text),  # JSON object
    Column("state", String(20), nullable=False),
    Column("queued_at", TS),
    Column("start_date", TS),
    Column("end_date", TS),
    Column("external_trigger", Boolean, nullable=False, default=False),
    UniqueConstraint("dag_id", "run_id"),
    Index("ix_dag_run_state", "state"),
    Index("ix_dag_run_dag_id_logical_date", "dag_id", "logical_date"),
)

task_instance = Table(
    "task_instance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_run_id", Integer, ForeignKey("dag_run.id", ondelete="CASCADE"), nullable=False),
    Column("dag_id", String(ID), nullable=False),
    Column("run_id", String(ID), nullable=False),
    Column("task_id", String(ID), nullable=False),
    # Dynamic task mapping: 0..n-1 for the instances of a mapped task, -1 for anything else (as in Airflow).
    Column("map_index", Integer, nullable=False, default=-1, server_default="-1"),
    Column("state", String(20), nullable=False),
    Column("try_number", Integer, nullable=False, default=0),
    Column("max_tries", Integer, nullable=False, default=0),
    Column("operator", String(100)),
    Column("pool", String(ID), nullable=False, default="default_pool"),
    Column("pool_slots", Integer, nullable=False, default=1, server_default="1"),  # slots of its pool it takes
    Column("queue", String(ID), nullable=False, default="default"),
    Column("priority_weight", Integer, nullable=False, default=1),
    Column("queued_at", TS),
    Column("start_date", TS),
    Column("end_date", TS),
    Column("duration", Float),
    Column("next_try_at", TS),  # when an up_for_retry / up_for_reschedule task may be scheduled again
    Column("hostname", String(255)),
    Column("pid", Integer),
    Column("executor", String(50)),
    Column("last_heartbeat_at", TS),
    Column("log_path", Text),
    Column("spark_app_id", String(255)),
    Column("spark_driver_id", String(255)),
    Column("spark_ui_url", Text),
    Column("spark_progress", Text),  # JSON: jobs/stages/tasks done and total, polled from Spark's REST API
    Column("spark_metrics", Text),  # JSON: metrics of the try's application, read from its event log
    Column("error", Text),  # the last try's failure reason, secrets masked
    Column("updated_at", TS),
    UniqueConstraint("dag_id", "run_id", "task_id", "map_index"),
    Index("ix_task_instance_state", "state"),
)

# One row per try of a task instance: the try history.
task_instance_try = Table(
    "task_instance_try",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ti_id", Integer, ForeignKey("task_instance.id", ondelete="CASCADE"), nullable=False),
    Column("dag_id", String(ID), nullable=False),
    Column("run_id", String(ID), nullable=False),
    Column("task_id", String(ID), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1, server_default="-1"),
    Column("try_number", Integer, nullable=False),
    Column("state", String(20), nullable=False),
    Column("start_date", TS),
    Column("end_date", TS),
    Column("duration", Float),
    Column("hostname", String(255)),
    Column("pid", Integer),
    Column("log_path", Text),
    Column("spark_app_id", String(255)),
    Column("spark_driver_id", String(255)),
    Column("spark_ui_url", Text),
    Column("spark_metrics", Text),
    Column("error", Text),
    UniqueConstraint("ti_id", "try_number"),
)

# The audit trail: every state change, clear and mark, with who did it.
state_event = Table(
    "state_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", TS, nullable=False),
    Column("dag_id", String(ID), nullable=False),
    Column("run_id", String(ID)),
    Column("task_id", String(ID)),  # NULL for run-level events
    Column("map_index", Integer, nullable=False, default=-1, server_default="-1"),
    Column("try_number", Integer),
    Column("event", String(30), nullable=False),  # state_change, clear, mark, trigger
    Column("old_state", String(20)),
    Column("new_state", String(20)),
    Column("actor", String(100)),  # scheduler, task_runner, cli, ...
    Column("detail", Text),
    Index("ix_state_event_dag_run", "dag_id", "run_id"),
)

xcom = Table(
    "xcom",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_run_id", Integer, ForeignKey("dag_run.id", ondelete="CASCADE"), nullable=False),
    Column("dag_id", String(ID), nullable=False),
    Column("run_id", String(ID), nullable=False),
    Column("task_id", String(ID), nullable=False),
    Column("map_index", Integer, nullable=False, default=-1, server_default="-1"),
    Column("key", String(512), nullable=False),
    Column("value", Text),  # JSON
    Column("created_at", TS, nullable=False),
    UniqueConstraint("dag_id", "run_id", "task_id", "map_index", "key"),
)

connection = Table(
    "connection",
    metadata,
    Column("conn_id", String(ID), primary_key=True),
    Column("conn_type", String(500), nullable=False),
    Column("description", Text),
    Column("host", Text),
    Column("schema", Text),
    Column("login", Text),
    Column("password", Text),  # Fernet token
    Column("port", Integer),
    Column("extra", Text),  # Fernet token of the JSON extras
)

variable = Table(
    "variable",
    metadata,
    Column("key", String(ID), primary_key=True),
    Column("val", Text),  # Fernet token
    Column("description", Text),
)

pool = Table(
    "pool",
    metadata,
    Column("pool", String(ID), primary_key=True),
    Column("slots", Integer, nullable=False),
    Column("description", Text),
)

import_error = Table(
    "import_error",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("filename", Text, nullable=False),
    Column("lineno", Integer),
    Column("dag_id", String(ID)),
    Column("task_id", String(ID)),
    Column("message", Text, nullable=False),
    Column("timestamp", TS, nullable=False),
)

# Each DAG as its file defined it at the last parse (sparkflow.definitions.serialization): what the scheduler,
# the web server and the API read instead of importing DAG files.
serialized_dag = Table(
    "serialized_dag",
    metadata,
    Column("dag_id", String(ID), primary_key=True),
    Column("fileloc", Text, nullable=False),
    Column("data", Text, nullable=False),  # canonical JSON
    Column("dag_hash", String(64), nullable=False),  # sha256 of data: readers re-read only what changed
    Column("last_updated", TS, nullable=False),
)

# One row per DAG file the DAG processor parsed: what `dags report` lists, and the content hash that lets the
# processor skip a file that did not change.
dag_file = Table(
    "dag_file",
    metadata,
    Column("fileloc", Text, primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("dag_ids", Text, nullable=False),  # JSON list
    Column("task_count", Integer, nullable=False, default=0),
    Column("error_count", Integer, nullable=False, default=0),
    Column("parse_duration", Float, nullable=False),
    Column("last_parsed_at", TS, nullable=False),
)

# A try's template fields as its task process rendered them (Airflow's rendered_task_instance_fields), secrets
# masked: the task page shows these and never renders templates itself.
rendered_task_fields = Table(
    "rendered_task_fields",
    metadata,
    Column("dag_id", String(ID), primary_key=True),
    Column("run_id", String(ID), primary_key=True),
    Column("task_id", String(ID), primary_key=True),
    Column("map_index", Integer, primary_key=True, default=-1, server_default="-1"),
    Column("try_number", Integer, nullable=False),
    Column("fields", Text, nullable=False),  # JSON object: field name -> rendered text
    Column("error", Text),  # why rendering failed, when it did
    Column("updated_at", TS, nullable=False),
)

# Web users: the password is kept only as a scrypt hash ("scrypt$n$r$p$salt$hash", see sparkflow.web.auth).
ab_user = Table(
    "ab_user",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(ID), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("role", String(20), nullable=False),  # admin, op, viewer
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("username"),
)

# API bearer tokens: only the SHA-256 of the (random, high-entropy) token is stored.
api_token = Table(
    "api_token",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("user_id", Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),  # None: until revoked
    Column("last_used_at", TS),  # written at most once a minute per token
    UniqueConstraint("token_hash"),
)

# Web sessions, so logout, a deleted or deactivated user and the lifetimes end them on the server. The cookie holds
# a random id; only its SHA-256 is stored.
web_session = Table(
    "web_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("ab_user.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_seen_at", TS, nullable=False),
)

# Failed logins per user ("user:NAME") and per client address ("addr:IP"): after N failures a growing lock-out.
login_failure = Table(
    "login_failure",
    metadata,
    Column("subject", String(ID + 10), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", TS, nullable=False),
    Column("locked_until", TS),
)

# Assets (data-aware scheduling): every asset a DAG file names, which DAGs schedule on it and which tasks update
# it, the events of its updates, the events queued for each consumer DAG, and the events a run consumed.
asset = Table(
    "asset",
    metadata,
    Column("uri", String(1500), primary_key=True),
    Column("name", String(1500)),
    Column("group_name", String(ID)),
    Column("extra", Text),  # JSON object
    Column("updated_at", TS),
)

asset_reference = Table(
    "asset_reference",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID), nullable=False),
    Column("task_id", String(ID)),  # the producing task (kind outlet); NULL for a schedule
    Column("uri", String(1500), nullable=False),
    # schedule, outlet; alias_schedule, alias_outlet (uri holds the AssetAlias's name)
    Column("kind", String(20), nullable=False),
    Index("ix_asset_reference_uri", "uri"),
)

asset_event = Table(
    "asset_event",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uri", String(1500), nullable=False),
    Column("extra", Text),  # JSON object: the asset's extra, plus Spark's application id and output of the try
    Column("source_dag_id", String(ID)),
    Column("source_run_id", String(ID)),
    Column("source_task_id", String(ID)),
    Column("source_map_index", Integer, nullable=False, default=-1, server_default="-1"),
    Column("source_try_number", Integer),
    Column("timestamp", TS, nullable=False),
    Index("ix_asset_event_uri", "uri"),
)

asset_queue = Table(
    "asset_queue",
    metadata,
    Column("target_dag_id", String(ID), primary_key=True),
    Column("uri", String(1500), primary_key=True),
    Column("created_at", TS, nullable=False),
)

dag_run_asset_event = Table(
    "dag_run_asset_event",
    metadata,
    Column("dag_run_id", Integer, ForeignKey("dag_run.id", ondelete="CASCADE"), primary_key=True),
    Column("event_id", Integer, ForeignKey("asset_event.id", ondelete="CASCADE"), primary_key=True),
)

# What each AssetAlias has resolved to: the assets tasks added events for through it (Airflow's
# asset_alias_asset), so a DAG scheduled on the alias is scheduled on those assets.
asset_alias_asset = Table(
    "asset_alias_asset",
    metadata,
    Column("alias_name", String(1500), primary_key=True),
    Column("uri", String(1500), primary_key=True),
    Column("created_at", TS, nullable=False),
    Index("ix_asset_alias_asset_uri", "uri"),
)
