"""sparkflow assets list|events|materialize."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.cli.runs_cmd import follow_run
from sparkflow.metastore import queries
from sparkflow.scheduler.asset_runs import materialize_asset, producing_dag_id
from sparkflow.scheduler.dag_processing import current_dag, load_dag


@click.group("assets")
def assets() -> None:
    """Assets (datasets): what tasks update and DAGs are scheduled on, and their events."""


@assets.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    """Every asset the DAG files name, with its producers, consumers and last event."""
    rows = [{"uri": a.uri, "name": a.name, "group": a.group, "extra": a.extra, "producing_tasks": list(a.producers),
             "consuming_dags": list(a.consumers), "events": a.events, "last_event_at": a.last_event_at}
            for a in queries.list_assets(env.metastore.db)]
    emit(rows, output, ["uri", "producing_tasks", "consuming_dags", "events", "last_event_at"])


@assets.command("events")
@click.argument("uri", required=False)
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True, help="Newest N events.")
@output_option
@click.pass_obj
def events_cmd(env: CliEnv, uri: str | None, limit: int, output: str) -> None:
    """Asset events, newest first (of URI, when given): which task instance updated the asset, and its extra."""
    rows = [e.as_dict() for e in queries.list_asset_events(env.metastore.db, uri, limit)]
    emit(rows, output, ["id", "uri", "source_dag_id", "source_run_id", "source_task_id", "source_map_index",
                        "timestamp", "extra"])


@assets.command("materialize")
@click.argument("asset")
@click.option("--wait", "-w", is_flag=True, help="Drive the run to its end here and follow it live.")
@click.pass_obj
def materialize_cmd(env: CliEnv, asset: str, wait: bool) -> int:
    """Trigger the DAG that produces ASSET (its URI or name), as Airflow 3's `airflow assets materialize`."""
    dag_id = producing_dag_id(env.metastore, asset)
    dag = load_dag(env.settings, env.metastore, dag_id) if wait else current_dag(env.settings, env.metastore, dag_id)
    run = materialize_asset(env.metastore, dag, env.now())
    click.echo(f"Created run {run.run_id} of DAG '{dag_id}' to materialize asset {asset!r}")
    return follow_run(env, dag, run) if wait else 0
