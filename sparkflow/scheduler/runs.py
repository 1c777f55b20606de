"""Creating DagRuns: manual triggers (CLI, API) with Airflow's run ids and data intervals."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import UserError
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord

RUN_TYPES = ("manual", "scheduled", "backfill")


def make_run_id(run_type: str, logical_date: datetime) -> str:
    """Airflow's shape: ``manual__2024-01-01T00:00:00+00:00``."""
    return f"{run_type}__{logical_date.isoformat()}"


def trigger_dag(
    metastore: Metastore,
    dag: DAG,
    now: datetime,
    conf: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    logical_date: datetime | None = None,
    actor: str = "cli",
) -> DagRunRecord:
    """Create a manual run. The data interval is inferred from the schedule as Airflow does for manual runs."""
    if conf is not None and not isinstance(conf, Mapping):
        raise UserError(f"--conf must be a JSON object like '{{\"key\": \"value\"}}', got {type(conf).__name__}")
    logical = logical_date or now
    if run_id is not None and (not run_id.strip() or run_id.startswith(("scheduled__", "backfill__"))):
        raise UserError(
            f"--run-id {run_id!r} is not allowed; use a non-empty id not starting with scheduled__ or backfill__"
        )
    interval = dag.infer_manual_data_interval(logical)
    return metastore.store.create_dag_run(
        dag, run_id or make_run_id("manual", logical), "manual", logical, interval, conf, actor=actor, now=now
    )
