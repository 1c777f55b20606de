"""User code in a warm process: which loaded modules are the user's, whether their files changed since they were
imported, and ``sys.modules`` set to exactly one DAG's modules before a try.

Why: a warm task process (runtime/forkserver.py) runs many tries, and a module stays in ``sys.modules`` once
imported. Without this, a helper module next to a DAG file that was edited between two runs kept its old code
(run 2 printed run 1's value), and two DAG files importing a ``common`` module of the same name from different
folders both got whichever was imported first. On Airflow every try starts from a process that never imported
the user's modules; here every try starts with the user modules of its own DAG's current parse and nothing else.

A module is the user's when its file lies under the DAG folder, or when it was imported after the process
started and its file lies outside the interpreter's own paths (the standard library, site-packages, sparkflow):
modules the DAG imported from paths it put on ``sys.path``, say. Installed libraries a DAG imports (pandas) stay
loaded: re-importing them would cost much and some cannot be imported twice in one process.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import sparkflow


@dataclass(frozen=True)
class ModuleFile:
    """A user module's source file as it was when the module was imported."""

    path: str
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: str) -> ModuleFile | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(path, st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> bool:
        """True while the file is unchanged (a write, a replacement or a removal all make it not current)."""
        return ModuleFile.of(self.path) == self


def _origin(module: ModuleType) -> str | None:
    """The file (or, for a namespace package, the first folder) a module was loaded from; None when built in."""
    path = getattr(module, "__file__", None)
    if isinstance(path, str):
        return path
    spec = getattr(module, "__spec__", None)
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    return str(locations[0]) if locations and isinstance(locations[0], str) else None


class UserCode:
    """The user modules of this process. Made once when the process starts, before it imports a DAG file."""

    def __init__(self, dags_folder: Path) -> None:
        self._user_roots = (_as_root(dags_folder),)
        self._builtin_names = frozenset(name for name, module in sys.modules.items()
                                        if not self._under_user_root(_origin(module)))
        paths = sysconfig.get_paths()
        candidates = [paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")]
        candidates += [sys.prefix, sys.base_prefix, str(Path(sparkflow.__file__).parent), *site.getsitepackages()]
        self._trusted = tuple(sorted({_as_root(Path(p)) for p in candidates if p}
                                     - set(self._user_roots)))
        self._not_user: dict[str, ModuleType] = {}  # modules judged not the user's, by name
        # What the last install() installed, and sys.modules' shape right after it: a worker running tries of one
        # DAG finds it unchanged (nothing imported since), and then has nothing to do.
        self._installed: Mapping[str, ModuleType] | None = None
        self._shape_after: tuple[int, str, ModuleType] | None = None

    def _under_user_root(self, origin: str | None) -> bool:
        return origin is not None and _resolved(origin).startswith(self._user_roots)

    def is_user(self, name: str, module: ModuleType) -> bool:
        origin = _origin(module)
        if origin is None:
            return False
        resolved = _resolved(origin)
        return resolved.startswith(self._user_roots) or (
            name not in self._builtin_names and not resolved.startswith(self._trusted))

    def loaded(self) -> dict[str, ModuleType]:
        """The user modules in ``sys.modules`` now. Runs before every try, so each other module is judged once
        (remembered by identity): judging all of them took ~2 ms, about the whole of a no-op try's budget."""
        found = {}
        known = self._not_user
        for name, module in list(sys.modules.items()):
            if module is None or known.get(name) is module:
                continue
            if self.is_user(name, module):
                found[name] = module
            else:
                known[name] = module
        return found

    def forget(self) -> None:
        """Drop every user module from ``sys.modules``: the next import of each reads its file again. Objects
        that already hold one (a parsed DAG's functions, through their globals) keep it."""
        for name in self.loaded():
            sys.modules.pop(name, None)

    def install(self, modules: Mapping[str, ModuleType]) -> None:
        """Make ``modules`` the only user modules in ``sys.modules`` (those of the DAG a try is about to run)."""
        if (modules is self._installed and self._shape_after == _shape()
                and all(sys.modules.get(name) is module for name, module in modules.items())):
            return  # the same install, and nothing imported or removed since
        self.forget()
        sys.modules.update(modules)
        self._installed, self._shape_after = modules, _shape()


def _shape() -> tuple[int, str, ModuleType]:
    """sys.modules' size and its last entry: an import since adds an entry at the end, a removal shrinks it, a
    module imported again moves to the end. Why not compare the whole dict: that touches the reference count of
    every module, so in a worker forked from the fork server each of their memory pages is copied."""
    name = next(reversed(sys.modules))
    return len(sys.modules), name, sys.modules[name]


def files_of(modules: Mapping[str, ModuleType]) -> tuple[ModuleFile, ...]:
    found = (ModuleFile.of(origin) for m in modules.values() if (origin := getattr(m, "__file__", None)))
    return tuple(f for f in found if f is not None)


def changed(files: Iterable[ModuleFile]) -> list[str]:
    """The files of this list that changed since they were imported."""
    return [f.path for f in files if not f.current()]


def _as_root(path: Path) -> str:
    return _resolved(str(path)).rstrip(os.sep) + os.sep


def _resolved(path: str) -> str:
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path
