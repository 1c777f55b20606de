"""Writes of assets: the assets DAG files name (with who schedules on them and who updates them), the events
of their updates (with the producing task instance and ``extra``), the events queued for each consumer DAG, and
what an asset-triggered run consumed."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import delete, func, insert, select, update

from sparkflow.definitions.dag import DAG
from sparkflow.metastore import schema as t
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TaskInstanceRecord


class AssetStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def sync_in(conn: SAConnection, dags: Iterable[DAG], now: datetime) -> None:
        """Record the assets these DAGs name, schedules (consumers) and task outlets (producers), in the
        transaction that records the DAGs (DagStore.sync_dags)."""
        dags = list(dags)
        conn.execute(delete(t.asset_reference).where(t.asset_reference.c.dag_id.in_([d.dag_id for d in dags])))
        seen: dict[str, Any] = {}
        for dag in dags:
            refs = []
            if dag.asset_condition is not None:
                for asset in dag.asset_condition.iter_assets():
                    seen.setdefault(asset.uri, asset)
                    refs.append(dict(dag_id=dag.dag_id, task_id=None, uri=asset.uri, kind="schedule"))
            for task in dag.tasks:
                for asset in getattr(task, "outlets", None) or []:
                    seen.setdefault(asset.uri, asset)
                    refs.append(dict(dag_id=dag.dag_id, task_id=task.task_id, uri=asset.uri, kind="outlet"))
            if refs:
                conn.execute(insert(t.asset_reference), refs)
        for uri, asset in seen.items():
            values = dict(name=asset.name, group_name=asset.group, extra=json.dumps(asset.extra or {}, default=str),
                          updated_at=now)
            if conn.execute(update(t.asset).where(t.asset.c.uri == uri).values(**values)).rowcount == 0:
                conn.execute(insert(t.asset).values(uri=uri, **values))

    def record_events(self, ti: TaskInstanceRecord, events: Sequence[tuple[str, Mapping[str, Any]]],
                      now: datetime | None = None) -> list[int]:
        """One event per updated asset, from the task instance that updated it; each DAG scheduled on the asset
        gets it queued."""
        now = now or datetime.now(UTC)
        ids = []
        q = t.asset_queue.c
        with self.db.write() as conn:
            for uri, extra in events:
                result = conn.execute(insert(t.asset_event).values(
                    uri=uri, extra=json.dumps(dict(extra)), source_dag_id=ti.dag_id, source_run_id=ti.run_id,
                    source_task_id=ti.task_id, source_map_index=ti.map_index, source_try_number=ti.try_number,
                    timestamp=now))
                assert result.inserted_primary_key is not None
                ids.append(int(result.inserted_primary_key[0]))
                r = t.asset_reference.c
                consumers = set(conn.execute(select(r.dag_id).where(r.uri == uri, r.kind == "schedule")).scalars())
                for dag_id in sorted(consumers):
                    queued = conn.execute(select(q.uri).where(q.target_dag_id == dag_id, q.uri == uri)).first()
                    if queued is None:
                        conn.execute(insert(t.asset_queue).values(target_dag_id=dag_id, uri=uri, created_at=now))
        return ids

    def take_queue(self, dag: DAG) -> set[str] | None:
        """If the DAG's asset condition holds over the events queued for it, take them off the queue and return
        their URIs (the caller creates the run); otherwise None and the queue stays."""
        assert dag.asset_condition is not None
        q = t.asset_queue.c
        with self.db.write() as conn:
            ready = set(conn.execute(select(q.uri).where(q.target_dag_id == dag.dag_id)).scalars())
            if not ready or not dag.asset_condition.evaluate(ready):
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
