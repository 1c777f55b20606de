"""What the pages and the API do, once: DAG objects for a DagRecord (cached by file), trigger, clear, mark, pause,
task logs by task instance id, and connection edits. Reads go through metastore.queries; writes through the
scheduler's library functions (trigger_dag, select_for_clear/clear, mark) or the store."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sparkflow.compat.airflow import airflow_finders
from sparkflow.connections import MASK, Connection, from_fields
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.schedule import DataInterval
from sparkflow.definitions.serialization import deserialize_dag
from sparkflow.exceptions import NotFound, UserError
from sparkflow.logs import (
    LOG_CHUNK_BYTES,
    is_sensitive_name,
    mask_sensitive_settings,
    masker,
    read_log,
    tail_offset,
    task_log_path,
)
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRecord, DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.scheduler import interventions
from sparkflow.scheduler.interventions import MarkResult
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import Settings
from sparkflow.state import TASK_ACTIVE, TaskState

# How stale the web's view of which DAGs changed may be: a re-parsed DAG shows within this many seconds.
HASHES_MAX_AGE = 1.0
NEXT_RUN_MAX_AGE = 30.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class WebDags:
    """DAGs for the web, from the metastore's serialized DAGs only: no request imports a DAG file or runs DAG code.
    Each is deserialized once and again only when its hash changes; the hashes are read at most once a second."""

    def __init__(self, settings: Settings, metastore: Metastore) -> None:
        self.settings = settings
        self.metastore = metastore
        add_import_folders(settings.import_folders, airflow_finders())  # a custom timetable's module by path
        self._lock = threading.Lock()
        self._dags: dict[str, tuple[str, DAG]] = {}  # dag_id -> (hash, DAG)
        self._hashes: dict[str, str] = {}
        self._hashes_read = -math.inf
        self._next_runs: dict[str, tuple[tuple[str | None, int | None], float, datetime | None]] = {}

    def get(self, record: DagRecord) -> DAG | None:
        with self._lock:
            if time.monotonic() - self._hashes_read > HASHES_MAX_AGE:
                self._hashes = queries.serialized_dag_hashes(self.metastore.db, active_only=False)
                self._hashes_read = time.monotonic()
            digest = self._hashes.get(record.dag_id)
            if digest is None:
                return None
            cached = self._dags.get(record.dag_id)
            if cached is None or cached[0] != digest:
                found = queries.serialized_dags(self.metastore.db, [record.dag_id])
                if not found:
                    return None
                try:
                    dag = deserialize_dag(json.loads(found[0].data), found[0].dag_hash)
                except (ValueError, KeyError, TypeError):  # written by a newer sparkflow: shown as not loadable
                    return None
                cached = (found[0].dag_hash, dag)
                self._dags[record.dag_id] = cached
        return cached[1]

    def next_run_end(self, record: DagRecord, now: datetime) -> datetime | None:
        """When the DAG's next scheduled run is due, for listings: computed (cron arithmetic, ~1-3 ms) at most
        every NEXT_RUN_MAX_AGE seconds per DAG, and again whenever the DAG changed or got a new scheduled run."""
        dag = self.get(record)
        if dag is None:
            return None
        last = queries.latest_run(self.metastore.db, dag.dag_id, ["scheduled"])
        key = (getattr(dag, "serialized_hash", None), last.id if last is not None else None)
        cached = self._next_runs.get(record.dag_id)
        if cached is not None and cached[0] == key and time.monotonic() - cached[1] < NEXT_RUN_MAX_AGE:
            return cached[2]
        interval = next_run(dag, self.metastore, now)
        value = interval.end if interval else None
        self._next_runs[record.dag_id] = (key, time.monotonic(), value)
        return value

    def require(self, dag_id: str) -> tuple[DagRecord, DAG]:
        record = queries.get_dag(self.metastore.db, dag_id)
        dag = self.get(record)
        if dag is None:
            raise NotFound(f"DAG '{dag_id}' has no parsed form in the metastore ({record.fileloc}); see the import "
                           "errors")
        return record, dag


def next_run(dag: DAG, metastore: Metastore, now: datetime) -> DataInterval | None:
    """The next scheduled interval after the last scheduled run (None for manual-only DAGs)."""
    last_run = queries.latest_run(metastore.db, dag.dag_id, ["scheduled"])
    last = None
    if last_run and last_run.data_interval_start and last_run.data_interval_end:
        last = DataInterval(last_run.data_interval_start, last_run.data_interval_end)
    try:
        return dag.next_data_interval(last, now)
    except Exception:  # a DAG whose schedule cannot say: show nothing rather than break the page
        return None


def parse_logical_date(text: str | None) -> datetime | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"logical_date {text!r} is not an ISO 8601 date like 2024-01-01T00:00:00+00:00") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_json_value(value: Any, what: str) -> None:
    """Refuse what JSON or the metastore cannot keep and give back: NaN/Infinity (not JSON), NUL characters
    (PostgreSQL text and jsonb refuse them) and lone surrogates (not UTF-8). Raises UserError (a 400), so such input
    never becomes a 500, now or when the value is read back later."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{what} contains {value!r}, which is not JSON; use a number or a string")
    if isinstance(value, str):
        if "\x00" in value:
            raise UserError(f"{what} contains a NUL character (\\u0000), which cannot be stored")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise UserError(f"{what} contains a lone surrogate (\\ud800-\\udfff), which is not UTF-8 text") from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_json_value(key, what)
            check_json_value(item, what)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_json_value(item, what)


def trigger(dags: WebDags, dag_id: str, conf: Mapping[str, Any] | None, run_id: str | None,
            logical_date: datetime | None, actor: str) -> DagRunRecord:
    _, dag = dags.require(dag_id)
    check_json_value(conf, "conf")
    try:
        return trigger_dag(dags.metastore, dag, utcnow(), conf, run_id, logical_date, actor=actor)
    except OverflowError:  # a logical date at the edge of datetime's range (year 1 or 9999) and its data interval
        raise UserError(f"logical_date {logical_date.isoformat() if logical_date else ''} is out of range; "
                        "use a date between the years 2 and 9998") from None


def set_paused(metastore: Metastore, dag_id: str, paused: bool) -> DagRecord:
    metastore.dags.set_paused(dag_id, paused)
    return queries.get_dag(metastore.db, dag_id)


def clear(dags: WebDags, dag_id: str, task_ids: list[str] | None, run_id: str | None, only_failed: bool = False,
          downstream: bool = False, dry_run: bool = False, actor: str = "web",
          start: datetime | None = None, end: datetime | None = None,
          map_indexes: list[int] | None = None) -> list[TIKey]:
    """Clear task instances (all tasks when task_ids is None) in one run or in every run in [start, end];
    ``map_indexes``: only these instances of mapped tasks."""
    _, dag = dags.require(dag_id)
    regex = None
    if task_ids is not None:
        unknown = sorted(set(task_ids) - set(dag.task_dict))
        if unknown:
            raise NotFound(f"DAG '{dag_id}' has no task(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(dag.task_dict))}")
        if not task_ids:
            return []
        regex = "^(" + "|".join(re.escape(t) for t in task_ids) + ")$"
    if run_id is not None:
        run = queries.get_run(dags.metastore.db, dag_id, run_id)
        start = end = run.logical_date
    selection = interventions.select_for_clear(dags.metastore, dag, regex, start, end, only_failed, downstream,
                                               map_indexes)
    if run_id is not None:
        selection.items = [(r, ids) for r, ids in selection.items if r.run_id == run_id]
        selection.chosen = [key for key in selection.chosen if key.run_id == run_id]
    if dry_run:
        return selection.keys()
    return interventions.clear(dags.metastore, dag, selection, actor=actor)


def mark(metastore: Metastore, key: TIKey, state: str, actor: str) -> MarkResult:
    if state not in ("success", "failed"):
        raise UserError(f"state {state!r} cannot be set by hand; use success or failed")
    return interventions.mark(metastore, key, TaskState(state), actor=actor)


# -- logs -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogChunk:
    content: str
    start: int  # the byte offset the content starts at (a tail starts after 0)
    offset: int  # where the next read continues
    size: int  # the log's size when it was read
    try_number: int
    done: bool  # the try has ended and the chunk reaches the end: nothing more will come


def log_path_of(settings: Settings, metastore: Metastore, ti: TaskInstanceRecord, try_number: int) -> Path:
    """The log file of a try, from what the metastore recorded for this task instance (never from the request)."""
    if try_number < 1 or try_number > max(ti.try_number, 1):
        raise NotFound(f"task '{ti.task_id}' of run '{ti.run_id}' has no try {try_number} (it has "
                       f"{ti.try_number})")
    if ti.try_number == try_number and ti.log_path:
        return Path(ti.log_path)
    for t in queries.task_tries(metastore.db, ti.key):
        if t.try_number == try_number and t.log_path:
            return Path(t.log_path)
    return task_log_path(settings.resolved_log_folder, ti.dag_id, ti.run_id, ti.task_id, try_number, ti.map_index)


def read_task_log(settings: Settings, metastore: Metastore, ti: TaskInstanceRecord, try_number: int,
                  offset: int | None, limit: int = LOG_CHUNK_BYTES, tail: int | None = None) -> LogChunk:
    """At most ``limit`` bytes of a try's log from ``offset`` (or its last ``tail`` bytes), secrets masked. ``ti``
    is read once by the caller: whether the try is over comes from it, not from another read."""
    if offset is not None and offset < 0:
        raise UserError(f"offset must be 0 or more, got {offset}")
    if not 1 <= limit <= LOG_CHUNK_BYTES:
        raise UserError(f"limit must be between 1 and {LOG_CHUNK_BYTES} bytes, got {limit}")
    path = log_path_of(settings, metastore, ti, try_number)
    size = path.stat().st_size if path.is_file() else 0
    if offset is None:
        offset = tail_offset(path, tail) if tail is not None else 0
    if offset > size:
        raise UserError(f"offset {offset} is beyond the end of the log ({size} bytes); start again from 0")
    over = not (ti.try_number == try_number and ti.state in TASK_ACTIVE)
    # the try is over: a last line without a newline is complete too
    text, next_offset = read_log(path, offset, limit, complete=over)
    return LogChunk(masker.mask(text), offset, next_offset, size, try_number, over and next_offset >= size)


# -- rendered template fields ---------------------------------------------------------------------------------
def rendered_fields(metastore: Metastore, dag: DAG | None, ti: TaskInstanceRecord) -> tuple[dict[str, str], str | None]:
    """The task's template fields as its try rendered them (stored by the task process, secrets masked), or, before
    any try rendered them, as written in the DAG file; (fields, note). Nothing is rendered here: rendering runs
    DAG code (macros, filters, templates that call methods), which a page view must never do."""
    stored = queries.rendered_fields(metastore.db, ti.key)
    if stored is not None:
        return stored.fields, (f"Could not render: {stored.error}" if stored.error else None)
    task = dag.task_dict.get(ti.task_id) if dag is not None else None
    if task is None:
        return {}, f"task '{ti.task_id}' is not in the DAG's parsed form"
    values = getattr(task, "template_values", {})
    fields = {name: mask_sensitive_settings(masker.mask(v if isinstance(v, str) else json.dumps(v, indent=1)))
              for name, v in values.items()}
    return fields, "Not rendered yet (no try has started): the fields as written in the DAG file" if fields else None


# -- connections ----------------------------------------------------------------------------------------------
CONNECTION_FIELDS = ("conn_type", "description", "host", "port", "login", "password", "schema", "extra")


def save_connection(metastore: Metastore, conn_id: str, values: Mapping[str, Any], create: bool) -> Connection:
    """Add (create) or update a connection. On update a password or extra left out (None) keeps the stored one:
    secrets are write-only, so the form never has them to send back."""
    existing = queries.find_connection(metastore.db, conn_id, metastore.secrets)
    if create and existing is not None:
        raise UserError(f"connection '{conn_id}' already exists; edit it instead")
    if not create and existing is None:
        raise NotFound(f"connection '{conn_id}' does not exist")
    check_json_value(conn_id, "connection_id")
    data = {k: values.get(k) for k in CONNECTION_FIELDS}
    for k in CONNECTION_FIELDS:
        check_json_value(data[k], k)
    if existing is not None:
        for k in CONNECTION_FIELDS:
            if data[k] is None:
                data[k] = getattr(existing, k)
    for k in ("password", "extra", "description", "host", "login", "schema"):
        if data[k] == "":
            data[k] = None
    if isinstance(data["extra"], dict):
        data["extra"] = json.dumps(data["extra"])
    if existing is not None and data["extra"] and existing.extra:
        data["extra"] = _keep_masked_extras(str(data["extra"]), existing)
    if data["port"] == "":
        data["port"] = None
    if not data["conn_type"]:
        raise UserError(f"connection '{conn_id}': conn_type is required (e.g. spark)")
    conn = from_fields(conn_id, data)
    metastore.connections.add_connections([conn], overwrite=not create)
    return conn


def _keep_masked_extras(extra: str, existing: Connection) -> str:
    """Secret extras come back from the edit form as *** (they are never sent out): keep the stored values, at any
    depth."""
    try:
        value = json.loads(extra)
    except json.JSONDecodeError:
        return extra  # from_fields reports it
    if not isinstance(value, dict):
        return extra
    return json.dumps(_restore_masked(value, existing.extra_dejson))


def _restore_masked(new: dict[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    merged = {}
    for key, value in new.items():
        if value == MASK and is_sensitive_name(key) and key in old:
            merged[key] = old[key]
        elif isinstance(value, dict) and isinstance(old.get(key), Mapping):
            merged[key] = _restore_masked(value, old[key])
        else:
            merged[key] = value
    return merged


def connection_view(conn: Connection, show_login: bool) -> dict[str, Any]:
    """A connection as the web shows it: never the password or secret extras; the login only to operators."""
    masked = conn.masked()
    return {
        "connection_id": conn.conn_id, "conn_type": conn.conn_type, "description": conn.description,
        "host": conn.host, "port": conn.port, "schema": conn.schema,
        "login": conn.login if show_login else None,
        "extra": masked["extra"], "password_set": bool(conn.password),
    }


