"""sparkflow config list."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option


@click.group("config")
def config() -> None:
    """Show the effective settings."""


@config.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    """Every setting with its effective value (secrets masked) and what it does."""
    rows = [{"key": name, "value": value, "description": help} for name, value, help in env.settings.describe()]
    emit(rows, output)
