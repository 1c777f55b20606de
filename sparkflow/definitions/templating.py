"""Jinja rendering of operators' template fields, Airflow style (StrictUndefined, nested containers).

Jinja is imported by the first render of an actual template, not before: every command that only parses DAGs
(the scheduler, ``trigger``) and every task whose fields hold no template never pays for its import.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

AIRFLOW_FILTERS: dict[str, Callable[[Any], str]] = {
    "ds": lambda d: d.strftime("%Y-%m-%d"),
    "ds_nodash": lambda d: d.strftime("%Y%m%d"),
    "ts": lambda d: d.isoformat(),
    "ts_nodash": lambda d: d.strftime("%Y%m%dT%H%M%S"),
}


class RenderError(Exception):
    """A template failed to render (Jinja's own message)."""


class TemplateEnvironment:
    """One task's Jinja environment: strict about undefined names, Airflow's filters, the DAG's macros and
    filters, template files from ``searchpath``; built on the first render."""

    def __init__(self, native: bool = False, searchpath: list[str] | None = None,
                 macros: Mapping[str, Any] | None = None, filters: Mapping[str, Callable[..., Any]] | None = None
                 ) -> None:
        self.native = native
        self.searchpath = list(searchpath or [])
        self._globals = dict(macros or {})
        self._filters = {**AIRFLOW_FILTERS, **(filters or {})}

    @functools.cached_property
    def jinja(self) -> jinja2.Environment:
        import jinja2
        import jinja2.nativetypes

        loader = jinja2.FileSystemLoader(self.searchpath) if self.searchpath else None
        kwargs: dict[str, Any] = {"undefined": jinja2.StrictUndefined, "loader": loader, "keep_trailing_newline": True}
        env = jinja2.nativetypes.NativeEnvironment(**kwargs) if self.native else jinja2.Environment(**kwargs)
        env.globals.update(self._globals)
        env.filters.update(self._filters)
        return env

    def render_string(self, source: str, context: Mapping[str, Any]) -> Any:
        import jinja2

        try:
            return self.jinja.from_string(source).render(**context)
        except jinja2.TemplateError as exc:
            raise RenderError(str(exc)) from exc

    @classmethod
    def wrapping(cls, jinja_env: jinja2.Environment) -> TemplateEnvironment:
        """A user's own Jinja environment (``task.render_template(content, context, jinja_env)``), used as is."""
        env = cls()
        env.__dict__["jinja"] = jinja_env  # fills the cached property
        return env

    def render_file(self, name: str, context: Mapping[str, Any]) -> Any | None:
        """The template file ``name`` from the search path, rendered; None when the search path has no such file."""
        if not self.searchpath and "jinja" not in self.__dict__:
            return None
        import jinja2

        try:
            template = self.jinja.get_template(name)
        except jinja2.TemplateNotFound:
            return None
        except jinja2.TemplateError as exc:
            raise RenderError(str(exc)) from exc
        try:
            return template.render(**context)
        except jinja2.TemplateError as exc:
            raise RenderError(str(exc)) from exc


def render_value(
    value: Any, context: Mapping[str, Any], env: TemplateEnvironment, template_ext: Sequence[str] = ()
) -> Any:
    """Render strings, recursing into lists, tuples, sets and dicts (keys stay as written). A string ending in
    one of ``template_ext`` names a template file, read from the search path and rendered, at any depth (as in
    Airflow); when the search path has no such file the string is rendered as it is."""
    if isinstance(value, str):
        if template_ext and value.endswith(tuple(template_ext)):
            rendered = env.render_file(value, context)
            if rendered is not None:
                return rendered
        if "{{" not in value and "{%" not in value:
            return value
        return env.render_string(value, context)
    if isinstance(value, (list, tuple, set)):
        items = [render_value(v, context, env, template_ext) for v in value]
        return type(value)(items)
    if isinstance(value, dict):
        return {k: render_value(v, context, env, template_ext) for k, v in value.items()}
    return value
