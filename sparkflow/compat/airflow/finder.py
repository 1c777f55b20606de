"""The import hook: while sparkflow loads DAG files, ``import airflow...`` resolves to sparkflow's objects.

The loader appends :data:`FINDER` to ``sys.meta_path`` only for the duration of a DAG file's import, and only when
no real Apache Airflow is installed (:func:`real_airflow_installed`), so it never shadows one. The first
``import airflow`` creates every aliased module at once and leaves them in ``sys.modules``: a task callable that
imports ``from airflow.operators.python import get_current_context`` when it runs (after the file was loaded and
the hook removed) still finds it. Names resolve lazily on first use (see aliases.py).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from sparkflow.compat.airflow.aliases import ALIASES, all_module_names
from sparkflow.compat.airflow.translate import airflow_operator

ROOT = "airflow"
_HELP = "see 'Coming from Airflow' in sparkflow's README for what is provided"


class NotProvidedError(ImportError):
    """An Airflow module or name that sparkflow's compatibility layer does not provide."""


def resolve(target: str, what: str) -> Any:
    """``"module:attr"`` (``"op:module:attr"`` for operators taking Airflow's arguments) -> the object."""
    as_operator = target.startswith("op:")
    module_name, _, attr = target.removeprefix("op:").partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise
        raise NotProvidedError(
            f"{what} is not available in this sparkflow: its implementation module {module_name} is missing"
        ) from exc
    try:
        value = getattr(module, attr)
    except AttributeError:
        raise NotProvidedError(
            f"{what} is not available in this sparkflow: {module_name} has no {attr}"
        ) from None
    return airflow_operator(value) if as_operator and isinstance(value, type) else value


def _module_getattr(module: ModuleType) -> Any:
    fullname = module.__name__
    table = ALIASES.get(fullname, {})

    def __getattr__(name: str) -> Any:
        if name in table:
            value = resolve(table[name], f"{fullname}.{name}")
            setattr(module, name, value)  # resolved once
            return value
        if name.startswith("_"):
            raise AttributeError(f"module {fullname!r} has no attribute {name!r}")
        provided = ", ".join(sorted(table)) or "only submodules"
        raise NotProvidedError(
            f"{fullname}.{name} is not provided by sparkflow's Airflow compatibility layer "
            f"({fullname} provides: {provided}); {_HELP}",
            name=fullname,
        )

    return __getattr__


class AirflowAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and creates the ``airflow.*`` alias modules."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != ROOT and not fullname.startswith(ROOT + "."):
            return None
        if fullname not in _KNOWN:
            raise NotProvidedError(
                f"module {fullname} is not provided by sparkflow's Airflow compatibility layer (Apache Airflow is "
                f"not installed); {_HELP}",
                name=fullname,
            )
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        _populate(module)
        if module.__name__ == ROOT:
            for name in all_module_names():
                if name != ROOT and name not in sys.modules:
                    spec = importlib.util.spec_from_loader(name, self, is_package=True)
                    assert spec is not None
                    child = importlib.util.module_from_spec(spec)
                    _populate(child)
                    sys.modules[name] = child
                    parent, _, leaf = name.rpartition(".")
                    setattr(sys.modules[parent], leaf, child)


def _populate(module: ModuleType) -> None:
    module.__path__ = []  # a package: submodules come from this finder
    module.__getattr__ = _module_getattr(module)  # type: ignore[method-assign]
    module.__dict__["__all__"] = sorted(ALIASES.get(module.__name__, {}))
    module.__doc__ = f"sparkflow's stand-in for {module.__name__} (Apache Airflow is not installed)."


_KNOWN = frozenset(all_module_names())
FINDER = AirflowAliasFinder()


def is_alias_module(module: object) -> bool:
    spec = getattr(module, "__spec__", None)
    return isinstance(getattr(spec, "loader", None), AirflowAliasFinder)


def real_airflow_installed() -> bool:
    """Whether a real Apache Airflow is importable (or imported) in this process."""
    existing = sys.modules.get(ROOT)
    if existing is not None and not is_alias_module(existing):
        return True
    if existing is None:
        spec = importlib.util.find_spec(ROOT)
    else:  # our alias is cached in sys.modules; look on sys.path itself
        spec = importlib.machinery.PathFinder.find_spec(ROOT)
    return spec is not None and not isinstance(spec.loader, AirflowAliasFinder)


def forget_alias_modules() -> None:
    """Drop the alias modules from sys.modules (a real Airflow appeared, or a test wants a clean slate)."""
    for name in [n for n, m in sys.modules.items() if (n == ROOT or n.startswith(ROOT + ".")) and is_alias_module(m)]:
        del sys.modules[name]


def airflow_finders() -> list[importlib.abc.MetaPathFinder]:
    """The finders the DAG loader should use: the alias finder, unless a real Airflow is installed."""
    if real_airflow_installed():
        forget_alias_modules()
        return []
    return [FINDER]
