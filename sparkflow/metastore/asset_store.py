"""Writes of assets: the assets DAG files name (with who schedules on them and who updates them), the events
of their updates (with the producing task instance and ``extra``), the events queued for each consumer DAG, and
what an asset-triggered run consumed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import Table, delete, func, insert, select, update

from sparkflow.definitions.assets import Asset, AssetAlias, condition_from_json
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.serialization import outlet_from_json
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TaskInstanceRecord


@dataclass(frozen=True)
class AssetUpdate:
    """One asset event a successful try records: the asset, the event's ``extra``, and the alias it was added
    through (``outlet_events[AssetAlias(...)].add(asset)``), if any."""

    uri: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    alias: str | None = None


class AssetStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def sync_in(conn: SAConnection, dags: Mapping[str, Mapping[str, Any]], now: datetime) -> None:
        """Record the assets these serialized DAGs (dag_id -> the ``dag`` part) name, schedules (consumers) and
        task outlets (producers), in the transaction that records the DAGs (DagStore.sync_serialized)."""
        conn.execute(delete(t.asset_reference).where(t.asset_reference.c.dag_id.in_(list(dags))))
        seen: dict[str, Asset] = {}
        refs = []
        for dag_id, d in dags.items():
            if d.get("asset_schedule"):
                condition = condition_from_json(d["asset_schedule"])
                for asset in condition.iter_assets():
                    seen.setdefault(asset.uri, asset)
                    refs.append(dict(dag_id=dag_id, task_id=None, uri=asset.uri, kind="schedule"))
                for alias in condition.iter_aliases():
                    refs.append(dict(dag_id=dag_id, task_id=None, uri=alias.name, kind="alias_schedule"))
            for task in d["tasks"]:
                for outlet in map(outlet_from_json, task.get("outlets") or []):
                    if isinstance(outlet, AssetAlias):
                        refs.append(dict(dag_id=dag_id, task_id=task["task_id"], uri=outlet.name,
                                         kind="alias_outlet"))
                        continue
                    seen.setdefault(outlet.uri, outlet)
                    refs.append(dict(dag_id=dag_id, task_id=task["task_id"], uri=outlet.uri, kind="outlet"))
        if refs:
            conn.execute(insert(t.asset_reference), refs)
        for uri, asset in seen.items():
            values = dict(name=asset.name, group_name=asset.group, extra=json.dumps(asset.extra or {}, default=str),
                          updated_at=now)
            if conn.execute(update(t.asset).where(t.asset.c.uri == uri).values(**values)).rowcount == 0:
                conn.execute(insert(t.asset).values(uri=uri, **values))

    def take_queue(self, dag: DAG) -> set[str] | None:
        """If the DAG's asset condition holds over the events queued for it, take them off the queue and return
        their URIs (the caller creates the run); otherwise None and the queue stays."""
        assert dag.asset_condition is not None
        q = t.asset_queue.c
        with self.db.write() as conn:
            ready = set(conn.execute(select(q.uri).where(q.target_dag_id == dag.dag_id)).scalars())
            if not ready:
                return None
            resolved = resolved_aliases(conn, [a.name for a in dag.asset_condition.iter_aliases()])
            if not dag.asset_condition.evaluate(ready, resolved):
                return None
            conn.execute(delete(t.asset_queue).where(q.target_dag_id == dag.dag_id, q.uri.in_(sorted(ready))))
        return ready

    def link_events(self, dag_run_id: int, dag_id: str, uris: Iterable[str]) -> int:
        """The events an asset-triggered run consumes: those of its assets since the DAG's previous such run."""
        e, link, run = t.asset_event.c, t.dag_run_asset_event.c, t.dag_run.c
        with self.db.write() as conn:
            previous = conn.execute(
                select(func.max(link.event_id)).select_from(t.dag_run_asset_event.join(
                    t.dag_run, run.id == link.dag_run_id)).where(run.dag_id == dag_id, run.id != dag_run_id)
            ).scalar_one_or_none() or 0
            events = list(conn.execute(select(e.id).where(e.uri.in_(sorted(uris)), e.id > previous)).scalars())
            if events:
                conn.execute(insert(t.dag_run_asset_event), [
                    {"dag_run_id": dag_run_id, "event_id": event_id} for event_id in events])
        return len(events)


def record_events_in(conn: SAConnection, ti: TaskInstanceRecord, updates: Sequence[AssetUpdate],
                     now: datetime) -> list[int]:
    """In the caller's transaction (the one that records the try's success): one event per updated asset, from
    the task instance that updated it, queued for each DAG scheduled on the asset or on an alias resolved to it.
    An update through an alias records the asset (if no DAG file names it) and the alias -> asset link first."""
    ids = []
    r, link = t.asset_reference.c, t.asset_alias_asset.c
    for u in updates:
        if u.alias is not None:
            _insert_missing(conn, t.asset, dict(uri=u.uri, name=u.uri, group_name="asset", extra="{}", updated_at=now))
            _insert_missing(conn, t.asset_alias_asset, dict(alias_name=u.alias, uri=u.uri, created_at=now))
        result = conn.execute(insert(t.asset_event).values(
            uri=u.uri, extra=json.dumps(dict(u.extra), default=str), source_dag_id=ti.dag_id,
            source_run_id=ti.run_id, source_task_id=ti.task_id, source_map_index=ti.map_index,
            source_try_number=ti.try_number, timestamp=now))
        assert result.inserted_primary_key is not None
        ids.append(int(result.inserted_primary_key[0]))
        aliases = select(link.alias_name).where(link.uri == u.uri)
        consumers = set(conn.execute(select(r.dag_id).where(
            ((r.uri == u.uri) & (r.kind == "schedule")) | (r.uri.in_(aliases) & (r.kind == "alias_schedule"))
        )).scalars())
        for dag_id in sorted(consumers):
            _insert_missing(conn, t.asset_queue, dict(target_dag_id=dag_id, uri=u.uri, created_at=now))
    return ids


def resolved_aliases(conn: SAConnection, names: Sequence[str]) -> dict[str, set[str]]:
    """The asset URIs each of these aliases has resolved to so far."""
    if not names:
        return {}
    link = t.asset_alias_asset.c
    resolved: dict[str, set[str]] = {}
    for alias_name, uri in conn.execute(select(link.alias_name, link.uri).where(link.alias_name.in_(sorted(names)))):
        resolved.setdefault(alias_name, set()).add(uri)
    return resolved


def _insert_missing(conn: SAConnection, table: Table, values: Mapping[str, Any]) -> None:
    """Insert the row unless one with its primary key exists: concurrent tries never fail on the same asset."""
    conn.execute(S.dialect_insert(conn.dialect.name)(table).values(**values).on_conflict_do_nothing())
