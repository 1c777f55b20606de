"""Parse the DAG folder and record what it holds (DAGs and import errors) in the metastore."""

from __future__ import annotations

from pathlib import Path

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import DagBag, collect_dags
from sparkflow.exceptions import NotFound
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.runtime.context import metastore_environment
from sparkflow.settings import Settings


def parse_dags(settings: Settings, metastore: Metastore, only_file: Path | None = None) -> DagBag:
    folder = settings.resolved_dags_folder
    # Airflow DAG files load unchanged: `airflow.*` imports resolve to sparkflow unless Airflow is installed.
    with metastore_environment(metastore):  # DAG files may read Variables/connections at the top level
        bag = collect_dags(folder, airflow_finders(), only_file=only_file)
    metastore.dags.sync_dags(
        bag.dags.values(), bag.import_errors, [str(p.resolve()) for p in bag.files], complete=only_file is None
    )
    return bag


def require_dag(bag: DagBag, dag_id: str) -> DAG:
    dag = bag.get_dag(dag_id)
    if dag is not None:
        return dag
    broken = [e for e in bag.import_errors if e.dag_id == dag_id]
    if broken:
        raise NotFound(f"DAG '{dag_id}' failed to load: {broken[0]}")
    known = ", ".join(sorted(bag.dags)) or "none"
    raise NotFound(
        f"DAG '{dag_id}' is not in the DAG folder {bag.folder} (known: {known}); "
        "check the dag_id, SPARKFLOW_DAGS_FOLDER and `sparkflow dags list-import-errors`"
    )
