"""sparkflow assets list|events."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.metastore import queries


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
