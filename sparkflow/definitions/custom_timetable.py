"""A user's own Timetable class in a serialized DAG, the way Airflow keeps one: by its import path and its state.

The serialized form names the class (``module`` + ``qualname``) and holds what its ``serialize()`` returned;
a reader (the scheduler, the web server) imports the class and rebuilds it with ``deserialize(data)`` (a class
without that pair is built with no arguments). So the class must be importable without its DAG file: it lives
in a module in the plugins folder (Airflow's ``plugins_folder``) or next to the DAG files, both of which every
sparkflow process has on ``sys.path`` (add_import_folders). A class defined in the DAG file itself is an import
error at parse time that says so, rather than a DAG the scheduler silently never schedules.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sparkflow.definitions.loader import DAG_MODULE_PREFIX

_FIX = ("move the class to a module in the plugins folder (setting plugins_folder, default $SPARKFLOW_HOME/plugins) "
        "and import it from there in the DAG file")


# Extra import finders (the Airflow compatibility layer's) active while a timetable's module is imported, as
# while a DAG file is: a plugin module may import ``airflow.timetables.base``.
_finders: list[importlib.abc.MetaPathFinder] = []


def add_import_folders(folders: Iterable[Path], finders: Iterable[importlib.abc.MetaPathFinder] = ()) -> None:
    """Put the DAG and plugins folders on ``sys.path`` (once), as Airflow does in every process, so a custom
    timetable's module imports by name in the scheduler and the web server too; ``finders`` resolve what such
    a module imports beyond them (the caller's alias finders, as for load_dag_file)."""
    for folder in folders:
        text = str(folder)
        if text not in sys.path:
            sys.path.append(text)
    if not _finders:
        _finders.extend(finders)


def timetable_to_json(timetable: Any) -> dict[str, Any]:
    """The serialized reference to a custom timetable; ValueError (one line) when no reader could rebuild it."""
    cls = type(timetable)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if cls.__module__.startswith(DAG_MODULE_PREFIX) or "<locals>" in cls.__qualname__:
        raise ValueError(f"timetable class {cls.__qualname__!r} is defined in the DAG file, so the scheduler cannot "
                         f"import it; {_FIX}")
    if cls.__module__ == "__main__" or _import_class(cls.__module__, cls.__qualname__) is not cls:
        raise ValueError(f"timetable class {name!r} cannot be imported by that name; {_FIX}")
    state = timetable.serialize() if callable(getattr(timetable, "serialize", None)) else {}
    try:
        json.dumps(state)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"timetable {name!r}: serialize() must return JSON values ({exc})") from None
    data = {"type": "custom", "module": cls.__module__, "class": cls.__qualname__, "data": state,
            "description": str(getattr(timetable, "description", cls.__name__))}
    timetable_from_json(data)  # fails now, at parse time, if a reader could not rebuild it
    return data


def timetable_from_json(data: Mapping[str, Any]) -> Any:
    """The timetable rebuilt from its import path and state; ValueError (one line) when that fails."""
    if "module" not in data:  # written before custom timetables were kept by import path
        raise ValueError(f"timetable {data.get('class')!r} was serialized without its import path; run "
                         "`sparkflow dags reserialize`")
    name = f"{data['module']}.{data['class']}"
    try:
        cls = _import_class(data["module"], data["class"])
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"timetable class {name!r} cannot be imported ({type(exc).__name__}: {exc}); put its "
                         "module in the plugins folder (setting plugins_folder) or the DAG folder") from None
    state = data.get("data") or {}
    try:
        deserialize = getattr(cls, "deserialize", None)
        return deserialize(state) if callable(deserialize) else cls()
    except Exception as exc:  # noqa: BLE001 - user code: any failure is this one message
        how = "deserialize(data)" if callable(getattr(cls, "deserialize", None)) else f"{cls.__name__}()"
        raise ValueError(f"timetable {name!r} cannot be rebuilt with {how} ({type(exc).__name__}: {exc}); give "
                         "the class serialize() and a classmethod deserialize(data), as Airflow's Timetable "
                         "has") from None


def _import_class(module: str, qualname: str) -> Any:
    added = [f for f in _finders if f not in sys.meta_path]
    sys.meta_path.extend(added)
    try:
        found: Any = importlib.import_module(module)
    finally:
        for finder in added:
            sys.meta_path.remove(finder)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


__all__ = ["add_import_folders", "timetable_from_json", "timetable_to_json"]
