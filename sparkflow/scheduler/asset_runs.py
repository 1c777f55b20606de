"""Asset-triggered runs: a DAG scheduled on assets gets a run (type ``asset_triggered``) once its condition holds
over the asset events queued for it; the run consumes those events (``triggering_asset_events``)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sparkflow.definitions.dag import DAG
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.runs import make_run_id

log = logging.getLogger("sparkflow.scheduler")
RUN_TYPE = "asset_triggered"


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
