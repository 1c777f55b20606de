"""Asset-triggered runs: a DAG scheduled on assets gets a run (type ``asset_triggered``) once its condition holds
over the asset events queued for it; the run consumes those events (``triggering_asset_events``). Materializing an
asset (Airflow 3's ``airflow assets materialize``) triggers the one DAG that produces it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.runs import make_run_id

log = logging.getLogger("sparkflow.scheduler")
RUN_TYPE = "asset_triggered"
MATERIALIZE_RUN_TYPE = "asset_materialization"  # Airflow 3's run type of a materialized asset


def create_asset_triggered_runs(ms: Metastore, dags: Iterable[DAG], now: datetime,
                                actor: str = "scheduler") -> list[DagRunRecord]:
    created = []
    for dag in dags:
        if dag.asset_condition is None:
            continue
        uris = ms.assets.take_queue(dag)
        if uris is None:
            continue
        interval = dag.infer_manual_data_interval(now)
        run = ms.store.create_dag_run(dag, make_run_id(RUN_TYPE, now), RUN_TYPE, now, interval, {}, actor=actor,
                                      now=now)
        count = ms.assets.link_events(run.id, dag.dag_id, uris)
        log.info("created %s of DAG '%s': %d asset event(s) of %s", run.run_id, dag.dag_id, count,
                 ", ".join(sorted(uris)))
        created.append(run)
    return created


def producing_dag_id(ms: Metastore, asset: str) -> str:
    """The DAG whose task updates the asset named ``asset`` (its URI or its name); a one-line error when no asset
    has that URI or name, or when not exactly one DAG produces it."""
    assets = queries.list_assets(ms.db)
    found = [a for a in assets if a.uri == asset] or [a for a in assets if a.name == asset]
    if not found:
        known = ", ".join(a.uri for a in assets[:10]) or "none"
        raise UserError(f"asset {asset!r} is not known (by URI or name); known assets: {known} "
                        "(see sparkflow assets list)")
    if len(found) > 1:
        raise UserError(f"asset name {asset!r} is ambiguous: {', '.join(a.uri for a in found)}; give its URI")
    dags = found[0].producing_dags
    if len(dags) != 1:
        which = "no DAG has a task with it as an outlet" if not dags else f"{len(dags)} DAGs do: {', '.join(dags)}"
        raise UserError(f"asset {found[0].uri!r} cannot be materialized: {which}; trigger the producing DAG "
                        "with sparkflow trigger DAG_ID")
    return dags[0]


def materialize_asset(ms: Metastore, dag: DAG, now: datetime, actor: str = "cli") -> DagRunRecord:
    """A run (type ``asset_materialization``) of the DAG that produces the asset (see producing_dag_id)."""
    interval = dag.infer_manual_data_interval(now)
    return ms.store.create_dag_run(dag, make_run_id(MATERIALIZE_RUN_TYPE, now), MATERIALIZE_RUN_TYPE, now,
                                   interval, {}, actor=actor, now=now)
