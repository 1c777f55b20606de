"""sparkflow variables set|get|list|delete|import|export (Airflow's commands; values are encrypted at rest)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.exceptions import NotFound, UserError
from sparkflow.files import write_private
from sparkflow.import_files import DuplicateKey, load_json, read_text
from sparkflow.metastore import queries

KEY_MAX = 250


def _check_key(key: str, where: str = "") -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > KEY_MAX:
        raise UserError(f"{where}variable key {key!r} is invalid; use a non-empty name of at most {KEY_MAX} characters")
    return key


def _as_text(value: Any) -> str:
    """Airflow stores strings as they are and anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


@click.group("variables")
def variables() -> None:
    """Manage variables (Variable.get / {{ var.value.x }} in DAGs); values are encrypted at rest."""


@variables.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--description", help="What the variable is for.")
@click.option("-j", "--json", "as_json", is_flag=True, help="VALUE is JSON: check it and store it normalised.")
@click.pass_obj
def set_cmd(env: CliEnv, key: str, value: str, description: str | None, as_json: bool) -> None:
    """Set KEY to VALUE (replacing any value it had)."""
    _check_key(key)
    if as_json:
        try:
            value = json.dumps(json.loads(value))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"variable '{key}': --json value is not valid JSON ({exc.msg} at position {exc.pos}); "
                "quote it like '{\"a\": 1}' or drop --json"
            ) from None
    env.metastore.variables.set_variable(key, value, description)
    click.echo(f"Variable {key} created")


@variables.command("get")
@click.argument("key")
@click.option("--default", "default", help="Print this when the variable does not exist.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Parse the value as JSON and print it indented.")
@click.pass_obj
def get_cmd(env: CliEnv, key: str, default: str | None, as_json: bool) -> None:
    """Print the value of KEY."""
    ms = env.metastore
    value = queries.get_variable(ms.db, key, ms.secrets)
    if value is None:
        if default is not None:
            click.echo(default)
            return
        raise NotFound(f"variable '{key}' does not exist; see `sparkflow variables list` or pass --default")
    if as_json:
        try:
            value = json.dumps(json.loads(value), indent=2)
        except json.JSONDecodeError as exc:
            raise UserError(f"variable '{key}' is not valid JSON ({exc.msg}); print it without --json") from None
    click.echo(value)


@variables.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    """Every variable's key and description (values: `variables get KEY`)."""
    rows = [{"key": v.key, "description": v.description} for v in queries.list_variables(env.metastore.db, None)]
    emit(rows, output)


@variables.command("delete")
@click.argument("key")
@click.pass_obj
def delete_cmd(env: CliEnv, key: str) -> None:
    env.metastore.variables.delete_variable(key)
    click.echo(f"Variable {key} deleted")


def load_variables_file(path: Path) -> dict[str, tuple[str, str | None]]:
    """A JSON object ``{key: value}`` (as `airflow variables export` writes it; non-string values are stored as
    JSON, ``{"value": ..., "description": ...}`` keeps a description). Everything is checked before anything is
    returned, so an import is all-or-nothing."""
    text = read_text(path, "variables file")
    try:
        data = load_json(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"variables file {path} is not valid JSON ({exc.msg} at line {exc.lineno}); "
            "give a JSON object like {\"key\": \"value\"}"
        ) from None
    except DuplicateKey as exc:
        raise UserError(f"variables file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"variables file {path} must hold a JSON object of key: value, got {type(data).__name__}")
    items: dict[str, tuple[str, str | None]] = {}
    for key, value in data.items():
        _check_key(key, where=f"variables file {path}: ")
        description = None
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "description"}:
            description = value.get("description")
            value = value["value"]
        items[key] = (_as_text(value), description)
    return items


@variables.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def import_cmd(env: CliEnv, file: Path) -> None:
    """Set every variable of a JSON file: all of them, or none if the file is bad."""
    items = load_variables_file(file)
    env.metastore.variables.set_variables(items)
    click.echo(f"Imported {len(items)} variable(s) from {file}: {', '.join(items)}")


@variables.command("export")
@click.argument("file", type=click.Path(path_type=Path))
@click.pass_obj
def export_cmd(env: CliEnv, file: Path) -> None:
    """Write every variable to a JSON file readable only by you (values in clear, JSON values as JSON)."""
    ms = env.metastore
    if ms.secrets is None:
        raise NotFound("no encryption key found to read the stored variables; run `sparkflow db init`")
    data: dict[str, Any] = {}
    for var in queries.list_variables(ms.db, ms.secrets):
        try:
            data[var.key] = json.loads(var.val or "")
        except json.JSONDecodeError:
            data[var.key] = var.val
    write_private(file, json.dumps(data, indent=2))
    click.echo(f"Exported {len(data)} variable(s) to {file}")
