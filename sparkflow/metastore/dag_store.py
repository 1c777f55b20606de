"""Writes of what parsing DAG files finds: DAG rows (active, paused, schedule), their serialized form, import
errors and per-file parse stats; and a try's rendered template fields (written by its task process)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import bindparam, delete, insert, select, update

from sparkflow.definitions import serialization
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import ImportErrorInfo
from sparkflow.exceptions import NotFound
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.asset_store import AssetStore
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import DagFileStat, TIKey


def _dag_row(d: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """The ``dag`` table's columns of one serialized DAG (its ``dag`` part)."""
    owners = {task["owner"] for task in d["tasks"] if task.get("owner")}
    return dict(dag_id=d["dag_id"], fileloc=d.get("fileloc") or "", is_active=True, description=d.get("description"),
                schedule=d.get("schedule_description") or d.get("timetable_description"),
                tags=json.dumps(sorted(d.get("tags") or [])), owners=", ".join(sorted(owners)) or None,
                max_active_runs=d["max_active_runs"], max_active_tasks=d["max_active_tasks"], last_parsed_at=now)


class DagStore:
    def __init__(self, db: Database) -> None:
        self.db = db


    def sync_dags(
        self, dags: Iterable[DAG], import_errors: Sequence[ImportErrorInfo], parsed_files: Iterable[str],
        now: datetime | None = None, complete: bool = False, folder_files: Collection[str] | None = None,
        file_stats: Sequence[DagFileStat] = (),
    ) -> None:
        """Record DAGs found by a parse in this process: serialized here, then as sync_serialized."""
        texts: dict[str, tuple[str, str]] = {}
        for dag in dags:
            text = serialization.dumps(serialization.serialize_dag(dag))
            texts[dag.dag_id] = (text, serialization.dag_hash(text))
        self.sync_serialized(texts, import_errors, parsed_files, now, complete, folder_files, file_stats)

    def sync_serialized(
        self, serialized: Mapping[str, tuple[str, str]], import_errors: Sequence[ImportErrorInfo],
        parsed_files: Iterable[str], now: datetime | None = None, complete: bool = False,
        folder_files: Collection[str] | None = None, file_stats: Sequence[DagFileStat] = (),
    ) -> None:
        """Record what a parse found: each DAG as its serialized text and hash (dag_id -> (text, hash)), the DAG
        rows read from that text (no DAG is rebuilt: a parse of 1,000 files writes 1,000 rows in a few batched
        statements); errors of the parsed files replace their old ones.

        ``folder_files`` is every file of the DAG folder (``complete``: ``parsed_files`` is the whole folder):
        DAGs, import errors and file stats of any other file (a deleted or renamed one) are then stale, so the
        DAGs go inactive and the rest goes away. ``file_stats`` is what each parsed file cost.
        """
        now = now or datetime.now(UTC)
        files = set(parsed_files)
        if complete and folder_files is None:
            folder_files = files
        dags = {dag_id: json.loads(text)["dag"] for dag_id, (text, _) in serialized.items()}
        with self.db.write() as conn:
            c = t.dag.c
            rows = [_dag_row(d, now) for d in dags.values()]
            existing = set(conn.execute(select(c.dag_id).where(c.dag_id.in_(list(dags)))).scalars())
            if existing:
                conn.execute(update(t.dag).where(c.dag_id == bindparam("b_dag_id")),
                             [{"b_dag_id": r["dag_id"], **{k: v for k, v in r.items() if k != "dag_id"}}
                              for r in rows if r["dag_id"] in existing])
            new = [{**r, "is_paused": bool(dags[r["dag_id"]].get("is_paused_upon_creation") or False)}
                   for r in rows if r["dag_id"] not in existing]
            if new:
                # Two schedulers starting together both find no row; the second insert then waits for the first
                # (PostgreSQL) and does nothing: the row holds the same parse.
                conn.execute(S.dialect_insert(self.db.dialect)(t.dag).on_conflict_do_nothing(
                    index_elements=["dag_id"]), new)
            self._store_serialized(conn, dags, serialized, now, self.db.dialect)
            AssetStore.sync_in(conn, dags, now)
            gone_from_parsed_files = c.fileloc.in_(files) & c.dag_id.not_in(list(dags))
            if folder_files is not None:
                gone = c.fileloc.not_in(set(folder_files))
                conn.execute(update(t.dag).where(gone_from_parsed_files | gone).values(is_active=False))
                conn.execute(delete(t.import_error).where(
                    t.import_error.c.filename.in_(files) | t.import_error.c.filename.not_in(set(folder_files))))
                conn.execute(delete(t.dag_file).where(t.dag_file.c.fileloc.not_in(set(folder_files))))
            else:
                conn.execute(update(t.dag).where(gone_from_parsed_files).values(is_active=False))
                conn.execute(delete(t.import_error).where(t.import_error.c.filename.in_(files)))
            if import_errors:
                conn.execute(insert(t.import_error), [
                    dict(filename=e.filename, lineno=e.lineno, dag_id=e.dag_id, task_id=e.task_id, message=e.message,
                         timestamp=now) for e in import_errors])
            if file_stats:
                conn.execute(delete(t.dag_file).where(t.dag_file.c.fileloc.in_([f.fileloc for f in file_stats])))
                conn.execute(insert(t.dag_file), [
                    dict(fileloc=f.fileloc, content_hash=f.content_hash, dag_ids=json.dumps(list(f.dag_ids)),
                         task_count=f.task_count, error_count=f.error_count, parse_duration=f.parse_duration,
                         last_parsed_at=now)
                    for f in file_stats
                ])

    @staticmethod
    def _store_serialized(conn: SAConnection, dags: Mapping[str, Mapping[str, Any]],
                          texts: Mapping[str, tuple[str, str]], now: datetime, dialect: str) -> None:
        """Write each DAG's serialized form when its hash changed (readers re-read a DAG only then)."""
        if not dags:
            return
        c = t.serialized_dag.c
        stored = dict(conn.execute(select(c.dag_id, c.dag_hash).where(c.dag_id.in_(list(dags)))).all())
        rows = [dict(dag_id=dag_id, fileloc=d.get("fileloc") or "", data=texts[dag_id][0], dag_hash=texts[dag_id][1],
                     last_updated=now)
                for dag_id, d in dags.items() if stored.get(dag_id) != texts[dag_id][1]]
        changed = [r for r in rows if r["dag_id"] in stored]
        if changed:
            conn.execute(update(t.serialized_dag).where(c.dag_id == bindparam("b_dag_id")),
                         [{"b_dag_id": r["dag_id"], **{k: v for k, v in r.items() if k != "dag_id"}}
                          for r in changed])
        added = [r for r in rows if r["dag_id"] not in stored]
        if added:
            # Two parsers of the same file (two schedulers, a CLI command): the second insert does nothing.
            conn.execute(S.dialect_insert(dialect)(t.serialized_dag).on_conflict_do_nothing(
                index_elements=["dag_id"]), added)

    def store_rendered_fields(self, key: TIKey, try_number: int, fields: Mapping[str, str], error: str | None,
                              now: datetime | None = None) -> None:
        """A try's rendered template fields (masked by the caller), replacing the previous try's."""
        with self.db.write() as conn:
            write_rendered_fields(conn, key, try_number, fields, error, now or datetime.now(UTC))

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self.db.write() as conn:
            result = conn.execute(update(t.dag).where(t.dag.c.dag_id == dag_id).values(is_paused=paused))
            if result.rowcount == 0:
                raise NotFound(f"DAG '{dag_id}' is not in the metastore; check `sparkflow dags list`")


def write_rendered_fields(conn: SAConnection, key: TIKey, try_number: int, fields: Mapping[str, str],
                          error: str | None, now: datetime) -> None:
    """DagStore.store_rendered_fields in the caller's transaction (Store.set_task_state: with the try's outcome)."""
    values = dict(try_number=try_number, fields=json.dumps(dict(fields)), error=error, updated_at=now)
    where = {"dag_id": key.dag_id, "run_id": key.run_id, "task_id": key.task_id, "map_index": key.map_index}
    S.upsert("rendered_task_fields", tuple(where), tuple(values)).run(conn, S.params({}, {**where, **values}))
