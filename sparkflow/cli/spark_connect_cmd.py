"""sparkflow spark-connect start|stop|status [CONN_ID]: the managed Spark Connect server behind a connection."""

from __future__ import annotations

import getpass
import socket
import time
from pathlib import Path
from typing import Any

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.exceptions import UserError
from sparkflow.metastore import queries
from sparkflow.spark.connect_config import CONN_TYPE, DEFAULT_CONN_ID, ManagedServerSpec, resolve_connect
from sparkflow.spark.connect_server import (
    ServerDirectory,
    acquire_server,
    health_problem,
    stop_server,
)


@click.group("spark-connect")
def spark_connect() -> None:
    """Start, stop and inspect the Spark Connect server sparkflow manages for a connection."""


def _managed(env: CliEnv, conn_id: str) -> ManagedServerSpec:
    conn = queries.resolve_connection(env.metastore.db, conn_id, env.metastore.secrets)
    if conn.conn_type != CONN_TYPE:
        raise UserError(f"connection '{conn_id}' is of type {conn.conn_type!r}, not {CONN_TYPE}; "
                        f"add one with `sparkflow connections add {conn_id} --conn-type {CONN_TYPE} ...`")
    spec = resolve_connect(conn).managed
    if spec is None:
        raise UserError(f"connection '{conn_id}' is not managed by sparkflow; add \"managed\": true to its extra")
    return spec


def _directory(env: CliEnv, conn_id: str) -> ServerDirectory:
    return ServerDirectory(env.settings.resolved_spark_connect_dir, conn_id)


@spark_connect.command("start")
@click.argument("conn_id", default=DEFAULT_CONN_ID)
@click.pass_obj
def start(env: CliEnv, conn_id: str) -> None:
    """Start the server (or find it running); it stops after the connection's idle_timeout without tasks."""
    spec = _managed(env, conn_id)
    owner = f"{getpass.getuser()}@{socket.gethostname()} (sparkflow spark-connect start)"
    record, started, lease = acquire_server(_directory(env, conn_id), spec, owner, "spark-connect start")
    lease.unlink(missing_ok=True)  # a hand start holds no lease: idle_timeout counts from now
    verb = "Started" if started else "Already running:"
    click.echo(f"{verb} Spark Connect server of '{conn_id}' at {record.address} (pid {record.server_pid}, "
               f"Spark UI {record.ui_url})")


@spark_connect.command("stop")
@click.argument("conn_id", default=DEFAULT_CONN_ID)
@click.pass_obj
def stop(env: CliEnv, conn_id: str) -> None:
    """Stop the server; tasks using it fail (and are retried per their retries)."""
    record = stop_server(_directory(env, conn_id))
    if record is None:
        click.echo(f"No Spark Connect server runs for '{conn_id}'")
    else:
        click.echo(f"Stopped the Spark Connect server of '{conn_id}' (pid {record.server_pid})")


@spark_connect.command("status")
@click.argument("conn_id", required=False)
@output_option
@click.pass_obj
def status(env: CliEnv, conn_id: str | None, output: str) -> None:
    """The managed servers on this host (or CONN_ID's): state, address, uptime, sessions, Spark UI."""
    root = env.settings.resolved_spark_connect_dir
    names = [conn_id] if conn_id else sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    rows = [_status_row(ServerDirectory(root, name), name) for name in names]
    emit(rows, output, ["conn_id", "state", "address", "pid", "uptime_s", "sessions", "spark_ui_url", "app_id"])


def _status_row(directory: ServerDirectory, conn_id: str) -> dict[str, Any]:
    record = directory.read_record()
    row: dict[str, Any] = {"conn_id": conn_id, "state": "stopped", "address": None, "pid": None, "uptime_s": None,
                           "sessions": 0, "spark_ui_url": None, "app_id": None, "owner": None,
                           "log": str(directory.log_file) if Path(directory.log_file).exists() else None}
    if record is None:
        return row
    problem = health_problem(record)
    row.update(state="running" if problem is None else f"unhealthy: {problem}", address=record.address,
               pid=record.server_pid, uptime_s=round(time.time() - record.started_at),
               sessions=len(directory.live_leases()), spark_ui_url=record.ui_url, app_id=record.app_id,
               owner=record.owner)
    return row
