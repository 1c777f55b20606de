"""Jinja rendering of operators' template fields, Airflow style (StrictUndefined, nested containers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
import jinja2.nativetypes


def make_environment(native: bool = False, searchpath: list[str] | None = None) -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(searchpath) if searchpath else None
    kwargs: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "loader": loader, "keep_trailing_newline": True}
    env = jinja2.nativetypes.NativeEnvironment(**kwargs) if native else jinja2.Environment(**kwargs)
    env.filters.update(
        ds=lambda d: d.strftime("%Y-%m-%d"),
        ds_nodash=lambda d: d.strftime("%Y%m%d"),
        ts=lambda d: d.isoformat(),
        ts_nodash=lambda d: d.strftime("%Y%m%dT%H%M%S"),
    )
    return env


def render_value(value: Any, context: Mapping[str, Any], env: jinja2.Environment) -> Any:
    """Render strings, recursing into lists, tuples, sets and dicts (keys stay as written)."""
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        return env.from_string(value).render(**context)
    if isinstance(value, (list, tuple, set)):
        rendered = [render_value(v, context, env) for v in value]
        return type(value)(rendered)
    if isinstance(value, dict):
        return {k: render_value(v, context, env) for k, v in value.items()}
    return value
