"""Load DAG files: each file imported in isolation; every failure becomes an ImportErrorInfo naming the file,
the line, and where known the DAG and the task. One broken file never hides the DAGs of the others.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.util
import logging
import os
import re
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sparkflow.definitions.dag import DAG, collect_created_dags, stop_collecting
from sparkflow.exceptions import DagDefinitionError, SparkflowWarning, UnsupportedArgumentWarning

IGNORE_FILES = (".sparkflowignore", ".airflowignore")
# Like Airflow's safe mode: only files that mention a DAG and the framework are imported, so helper modules and
# the Spark applications living next to DAGs are never executed by the scheduler.
_MIGHT_HOLD_DAG = re.compile(rb"dag", re.IGNORECASE)
_MENTIONS_FRAMEWORK = re.compile(rb"sparkflow|airflow", re.IGNORECASE)
log = logging.getLogger("sparkflow.loader")


@dataclass(frozen=True)
class ImportErrorInfo:
    filename: str
    message: str
    lineno: int | None = None
    dag_id: str | None = None
    task_id: str | None = None

    def __str__(self) -> str:
        where = f"{self.filename}:{self.lineno}" if self.lineno else self.filename
        return f"{where}: {self.message}"


@dataclass
class DagBag:
    folder: Path | None
    dags: dict[str, DAG] = field(default_factory=dict)
    import_errors: list[ImportErrorInfo] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # One line per DAG file that passed arguments sparkflow cannot honour (they were ignored, and logged).
    warnings: list[str] = field(default_factory=list)

    def get_dag(self, dag_id: str) -> DAG | None:
        return self.dags.get(dag_id)


# The module name a DAG file is imported under starts with this: such a module cannot be imported by name.
DAG_MODULE_PREFIX = "sparkflow_dagfile_"


def list_dag_files(folder: Path) -> list[Path]:
    """Python files under folder that may define DAGs, honouring .sparkflowignore/.airflowignore regexps."""
    return [Path(p) for p in dag_file_hashes(folder)]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def dag_file_hashes(folder: Path, known: dict[str, tuple[tuple[int, int, int], str]] | None = None
                    ) -> dict[str, str]:
    """The DAG files under folder (as list_dag_files; paths as text, sorted) with the hash of their content.

    ``known`` is a cache the caller keeps between calls (path -> ((mtime_ns, size, inode), hash)): a file whose
    stat did not change is not read again, so checking an unchanged folder of 1,000 files costs only stat()s
    (and plain strings, not Path objects: the DAG processor does this every couple of seconds)."""
    if not folder.is_dir():
        return {}
    patterns: list[re.Pattern[str]] = []
    for name in IGNORE_FILES:
        ignore = folder / name
        if ignore.is_file():
            for line in ignore.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    patterns.append(re.compile(line))
    found: dict[str, str] = {}
    for path, rel, stamp, symlink in _python_files(str(folder), ""):
        if patterns and any(p.search(rel) for p in patterns):
            continue
        if symlink:
            path = os.path.realpath(path)
        cached = known.get(path) if known is not None else None
        if cached is not None and cached[0] == stamp:
            if cached[1]:
                found[path] = cached[1]
            continue
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue  # removed meanwhile
        digest = content_hash(data) if _MIGHT_HOLD_DAG.search(data) and _MENTIONS_FRAMEWORK.search(data) else ""
        if known is not None:
            known[path] = (stamp, digest)
        if digest:
            found[path] = digest
    return dict(sorted(found.items()))


def _python_files(folder: str, rel: str) -> Iterator[tuple[str, str, tuple[int, int, int], bool]]:
    """Every *.py file under folder (none in or named like hidden or dunder folders; symlinked folders are not
    entered, as rglob): its path, its path relative to the DAG folder, its (mtime_ns, size, inode) and whether
    it is a symlink."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith((".", "__")):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from _python_files(entry.path, f"{rel}{entry.name}/")
            elif entry.name.endswith(".py"):
                st = entry.stat()
                yield entry.path, rel + entry.name, (st.st_mtime_ns, st.st_size, st.st_ino), entry.is_symlink()
        except OSError:
            continue  # removed meanwhile


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"{DAG_MODULE_PREFIX}{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"


def _error_from_exception(path: Path, exc: BaseException) -> ImportErrorInfo:
    filename = str(path)
    if isinstance(exc, DagDefinitionError):
        return ImportErrorInfo(filename, str(exc), exc.lineno, exc.dag_id, exc.task_id)
    lineno = None
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        lineno = exc.lineno
    else:
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == filename:
                lineno = frame.lineno  # the deepest line of the DAG file on the stack
    if isinstance(exc, SystemExit):
        message = f"SystemExit: the import called sys.exit({exc.code!r})"
    elif isinstance(exc, ImportTimeout):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}".strip()
    return ImportErrorInfo(filename, message, lineno)


class ImportTimeout(BaseException):
    """A DAG file took longer than the import time-out (raised by import_time_limit in the importing thread)."""


@contextlib.contextmanager
def import_time_limit(seconds: float | None) -> Iterator[None]:
    """Airflow's dagbag_import_timeout for an import in this process: SIGALRM interrupts Python code running
    longer than ``seconds`` with ImportTimeout. Only the main thread can get signals; elsewhere (or with no
    time-out) the import runs unlimited, so callers that must never hang import in a child process instead."""
    if not seconds or seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ImportTimeout(f"import timed out after {seconds:g} s (setting dagbag_import_timeout)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _summarise_warnings(path: Path, caught: list[warnings.WarningMessage]) -> str | None:
    """One line per DAG file: every ignored argument once, with where it was passed (first few places)."""
    by_argument: dict[str, list[str]] = {}
    others: list[str] = []
    for item in caught:
        message = item.message
        if isinstance(message, UnsupportedArgumentWarning):
            where = message.owner + (f", line {message.lineno}" if message.lineno else "")
            places = by_argument.setdefault(message.argument, [])
            if where not in places:
                places.append(where)
        elif str(message) not in others:
            others.append(str(message))
    parts = [
        f"'{arg}' ({'; '.join(places[:3])}{f'; and {len(places) - 3} more' if len(places) > 3 else ''})"
        for arg, places in by_argument.items()
    ]
    if parts:
        others.insert(0, "ignored arguments sparkflow cannot honour: " + ", ".join(parts))
    return f"{path}: " + "; ".join(others) if others else None


def load_dag_file(
    path: Path, meta_path_finders: Iterable[importlib.abc.MetaPathFinder] = (), warnings_out: list[str] | None = None,
    timeout: float | None = None,
) -> tuple[list[DAG], list[ImportErrorInfo]]:
    """Import one DAG file in isolation and return its valid DAGs and the errors found.

    ``meta_path_finders`` lets a caller (the Airflow compatibility layer) make extra imports resolvable while
    the file runs; the loader itself knows nothing about them. Sparkflow warnings raised while the file runs
    (arguments that cannot be honoured) are gathered into one line per file, logged, and appended to
    ``warnings_out``; other warnings follow the process's warning filters as usual. ``timeout``: see
    import_time_limit.
    """
    path = path.resolve()
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return [], [ImportErrorInfo(str(path), "not an importable Python file")]
    module = importlib.util.module_from_spec(spec)
    finders = list(meta_path_finders)
    sys.meta_path.extend(finders)
    folder = str(path.parent)
    added_path = folder not in sys.path
    if added_path:
        sys.path.insert(0, folder)  # DAG files may import helper modules that sit next to them
    bucket = collect_created_dags()
    sys.modules[name] = module
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught, import_time_limit(timeout):
            warnings.simplefilter("always", SparkflowWarning)
            spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - any failure of user code is an import error, even SystemExit
        sys.modules.pop(name, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return [], [_error_from_exception(path, exc)]
    finally:
        stop_collecting(bucket)
        for finder in finders:
            sys.meta_path.remove(finder)
        if added_path:
            sys.path.remove(folder)
        ours = [w for w in caught if isinstance(w.message, SparkflowWarning)]
        for other in caught:  # not ours: hand back to the usual warning display
            if other not in ours:
                warnings.showwarning(other.message, other.category, other.filename, other.lineno)
        summary = _summarise_warnings(path, ours)
        if summary is not None:
            log.warning("%s", summary)
            if warnings_out is not None:
                warnings_out.append(summary)

    candidates = list(bucket) + [v for v in vars(module).values() if isinstance(v, DAG) and v not in bucket]
    dags: list[DAG] = []
    errors: list[ImportErrorInfo] = []
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.dag_id in seen:
            if any(d is candidate for d in dags):
                continue
            errors.append(ImportErrorInfo(
                str(path), f"DAG '{candidate.dag_id}' is defined twice in this file; dag_ids must be unique",
                candidate.location.lineno if candidate.location else None, candidate.dag_id))
            continue
        seen.add(candidate.dag_id)
        candidate.fileloc = str(path)
        try:
            candidate.validate()
        except DagDefinitionError as exc:
            errors.append(_error_from_exception(path, exc))
            continue
        dags.append(candidate)
    return dags, errors


def collect_dags(
    folder: Path, meta_path_finders: Iterable[importlib.abc.MetaPathFinder] = (), only_file: Path | None = None
) -> DagBag:
    bag = DagBag(folder=folder)
    if only_file is not None:
        files = [only_file]
    elif folder.is_dir():
        files = list_dag_files(folder)
    else:
        files = []
    finders = list(meta_path_finders)
    for path in files:
        bag.files.append(path)
        dags, errors = load_dag_file(path, finders, bag.warnings)
        bag.import_errors.extend(errors)
        for found in dags:
            other = bag.dags.get(found.dag_id)
            if other is not None:
                bag.import_errors.append(ImportErrorInfo(
                    str(path), f"DAG '{found.dag_id}' is already defined in {other.fileloc}; dag_ids must be unique",
                    found.location.lineno if found.location else None, found.dag_id))
                continue
            bag.dags[found.dag_id] = found
    return bag
