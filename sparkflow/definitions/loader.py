"""Load DAG files: each file imported in isolation; every failure becomes an ImportErrorInfo naming the file,
the line, and where known the DAG and the task. One broken file never hides the DAGs of the others.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import logging
import re
import sys
import traceback
import warnings
from collections.abc import Iterable
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


def list_dag_files(folder: Path) -> list[Path]:
    """Python files under folder that may define DAGs, honouring .sparkflowignore/.airflowignore regexps."""
    patterns: list[re.Pattern[str]] = []
    for name in IGNORE_FILES:
        ignore = folder / name
        if ignore.is_file():
            for line in ignore.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    patterns.append(re.compile(line))
    found = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith((".", "__")) for part in path.relative_to(folder).parts):
            continue
        if any(p.search(rel) for p in patterns):
            continue
        head = path.read_bytes()
        if _MIGHT_HOLD_DAG.search(head) and _MENTIONS_FRAMEWORK.search(head):
            found.append(path)
    return found


def _module_name(path: Path) -> str:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:12]
    return f"sparkflow_dagfile_{digest}_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"


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
    message = f"{type(exc).__name__}: {exc}".strip()
    return ImportErrorInfo(filename, message, lineno)


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
    path: Path, meta_path_finders: Iterable[importlib.abc.MetaPathFinder] = (), warnings_out: list[str] | None = None
) -> tuple[list[DAG], list[ImportErrorInfo]]:
    """Import one DAG file in isolation and return its valid DAGs and the errors found.

    ``meta_path_finders`` lets a caller (the Airflow compatibility layer) make extra imports resolvable while
    the file runs; the loader itself knows nothing about them. Sparkflow warnings raised while the file runs
    (arguments that cannot be honoured) are gathered into one line per file, logged, and appended to
    ``warnings_out``; other warnings follow the process's warning filters as usual.
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
        with warnings.catch_warnings(record=True) as caught:
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
