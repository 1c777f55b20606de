"""A task creating a run of another DAG (TriggerDagRunOperator), through the store, from the target's serialized
DAG: the triggering task never imports the other DAG's file."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sparkflow.definitions.context import TriggeredRun
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.serialization import deserialize_dag
from sparkflow.exceptions import NotFound
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord


def serialized_target(metastore: Metastore, dag_id: str) -> DAG:
    found = queries.serialized_dags(metastore.db, [dag_id])
    if not found:
        raise NotFound(f"DAG '{dag_id}' to trigger is not known: no parsed DAG file defines it; check the dag_id "
                       "(`sparkflow dags list`) and `sparkflow dags list-import-errors`")
    return deserialize_dag(json.loads(found[0].data), found[0].dag_hash)


def existing_run(metastore: Metastore, dag_id: str, run_id: str, logical_date: datetime) -> DagRunRecord | None:
    """The run that would clash with a new one: the same run id, or (as in Airflow) the same logical date."""
    try:
        return queries.get_run(metastore.db, dag_id, run_id)
    except NotFound:
        same_date = queries.runs_at(metastore.db, dag_id, logical_date)
        return same_date[0] if same_date else None


def trigger_dag_run(
    metastore: Metastore, dag_id: str, run_id: str, logical_date: datetime, conf: dict[str, Any] | None,
    reset_dag_run: bool, actor: str, now: datetime,
) -> TriggeredRun:
    target = serialized_target(metastore, dag_id)
    existing = existing_run(metastore, dag_id, run_id, logical_date)
    if existing is not None:
        if not reset_dag_run:
            return TriggeredRun(existing.run_id, existing.logical_date, created=False)
        task_ids = [ti.task_id for ti in queries.task_instances(metastore.db, dag_id, existing.run_id)]
        metastore.store.clear_task_instances(target, [(existing, task_ids)], actor, now=now)
        return TriggeredRun(existing.run_id, existing.logical_date, created=False, reset=True)
    interval = target.infer_manual_data_interval(logical_date)
    run = metastore.store.create_dag_run(target, run_id, "manual", logical_date, interval, conf, actor=actor, now=now)
    return TriggeredRun(run.run_id, run.logical_date, created=True)
