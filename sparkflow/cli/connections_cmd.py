"""sparkflow connections add|list|get|delete|import|export (Airflow's flags)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.connections import Connection, dump_connections, from_fields, load_connections_file, parse_uri
from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import queries
from sparkflow.spark.connect_config import CONN_TYPE as SPARK_CONNECT
from sparkflow.spark.connect_config import check_spark_connect


@click.group("connections")
def connections() -> None:
    """Manage connections (secrets are encrypted at rest and never printed)."""


@connections.command("add")
@click.argument("conn_id")
@click.option("--conn-uri", help="Connection as a URI: type://login:password@host:port/schema?extra=value")
@click.option("--conn-type")
@click.option("--conn-host")
@click.option("--conn-port")
@click.option("--conn-login")
@click.option("--conn-password")
@click.option("--conn-schema")
@click.option("--conn-extra", help="Extras as a JSON object.")
@click.option("--conn-description")
@click.option("--overwrite", is_flag=True, help="Replace an existing connection with this id.")
@click.pass_obj
def add(env: CliEnv, conn_id: str, conn_uri: str | None, conn_type: str | None, conn_host: str | None,
        conn_port: str | None, conn_login: str | None, conn_password: str | None, conn_schema: str | None,
        conn_extra: str | None, conn_description: str | None, overwrite: bool) -> None:
    """Add a connection from --conn-uri or from --conn-type and the other --conn-* fields."""
    fields = {"host": conn_host, "port": conn_port, "login": conn_login, "password": conn_password,
              "schema": conn_schema, "extra": conn_extra}
    if conn_uri:
        if conn_type or any(v is not None for v in fields.values()):
            raise UserError("give either --conn-uri or --conn-type with --conn-* fields, not both")
        conn = parse_uri(conn_id, conn_uri)
        if conn_description:
            conn = replace(conn, description=conn_description)
    else:
        if not conn_type:
            raise UserError(f"connection '{conn_id}': --conn-type is required without --conn-uri (e.g. spark)")
        conn = from_fields(conn_id, {"conn_type": conn_type, "description": conn_description, **fields})
    _check_types([conn])
    env.metastore.connections.add_connections([conn], overwrite=overwrite)
    click.echo(f"Successfully added `conn_id`={conn_id} : {_safe_uri(conn)}")


def _check_types(conns: list[Connection]) -> None:
    """Fields whose meaning depends on the type: a bad spark_connect address or managed extra fails here."""
    for conn in conns:
        if conn.conn_type == SPARK_CONNECT:
            check_spark_connect(conn)


def _safe_uri(conn: Connection) -> str:
    return replace(conn, password="***" if conn.password else None, extra=conn.masked()["extra"]).get_uri()


def _row(conn: Connection) -> dict[str, Any]:
    data = conn.masked()
    data["extra"] = json.loads(data["extra"]) if data["extra"] else None
    return data


@connections.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    """All stored connections; passwords and secret extras show as ***."""
    conns = queries.list_connections(env.metastore.db, env.metastore.secrets)
    emit([_row(c) for c in conns], output, ["conn_id", "conn_type", "host", "port", "login", "password", "schema"])


@connections.command("get")
@click.argument("conn_id")
@output_option
@click.pass_obj
def get(env: CliEnv, conn_id: str, output: str) -> None:
    """One connection as tasks see it (SPARKFLOW_CONN_<ID> overrides the store)."""
    conn = queries.resolve_connection(env.metastore.db, conn_id, env.metastore.secrets)
    emit([_row(conn)], output)


@connections.command("delete")
@click.argument("conn_id")
@click.pass_obj
def delete(env: CliEnv, conn_id: str) -> None:
    env.metastore.connections.delete_connection(conn_id)
    click.echo(f"Successfully deleted connection with `conn_id`={conn_id}")


@connections.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace connections that already exist.")
@click.pass_obj
def import_cmd(env: CliEnv, file: Path, overwrite: bool) -> None:
    """Import a YAML or JSON file of connections: all of them, or none if any entry is bad."""
    conns = load_connections_file(file)
    _check_types(conns)
    env.metastore.connections.add_connections(conns, overwrite=overwrite)
    click.echo(f"Imported {len(conns)} connection(s) from {file}: {', '.join(c.conn_id for c in conns)}")


@connections.command("export")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def export(env: CliEnv, file: Path) -> None:
    """Write all connections, secrets included, to a YAML or JSON file readable only by you."""
    if file.suffix not in (".yaml", ".yml", ".json"):
        raise UserError(f"export file {file} must end in .yaml, .yml or .json")
    if env.metastore.secrets is None:
        raise NotFound("no encryption key found to read the stored secrets; run `sparkflow db init`")
    conns = queries.list_connections(env.metastore.db, env.metastore.secrets)
    dump_connections(conns, file)
    click.echo(f"Exported {len(conns)} connection(s) to {file}")
