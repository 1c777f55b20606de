"""Printing listings as a table or as stable JSON (``-o json``) for scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from enum import Enum
from typing import Any

import click

FORMATS = ("table", "json")

output_option = click.option(
    "-o", "--output", type=click.Choice(FORMATS), default="table", show_default=True,
    help="Output format; json is stable for scripts.",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    """Print rows (dicts with Airflow's field names). JSON prints every field; the table the chosen columns."""
    if fmt == "json":
        click.echo(json.dumps([{k: _jsonable(v) for k, v in row.items()} for row in rows], indent=2))
        return
    if not rows:
        click.echo("No data found")
        return
    cols = list(columns or rows[0].keys())
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    click.echo(" | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    click.echo("-+-".join("-" * w for w in widths))
    for r in cells:
        click.echo(" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
