"""Keep the metastore's serialized DAGs in step with the DAG folder, and find a DAG for a command.

Only files whose content changed since their last parse are parsed again (the hash of each file's content is kept
in ``dag_file``), each in a time-limited child process (parse_worker); the DAGs of a deleted file go inactive.
The scheduler, the web server and the API read the serialized DAGs this writes and never import a DAG file. A
command that runs tasks in its own process (`dags test`, `tasks test`, `trigger --wait`, `backfill`) imports its
one DAG file itself, with the same time-out and its output sent to the file's parse log (load_dag).

What a content hash cannot see is a change to a helper module a DAG file imports: `sparkflow dags reserialize`
parses every file again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import ImportErrorInfo, dag_file_hashes, load_dag_file
from sparkflow.definitions.serialization import deserialize_dag
from sparkflow.exceptions import NotFound
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagFileStat
from sparkflow.parse_log import output_to, parse_log_path
from sparkflow.runtime.context import metastore_environment
from sparkflow.scheduler.parse_worker import FileParse, parse_files
from sparkflow.settings import Settings

log = logging.getLogger("sparkflow.dag_processor")


@dataclass
class FolderRefresh:
    """One look at the DAG folder: every DAG file in it, the ones parsed now, the ones gone since last time."""

    files: list[str] = field(default_factory=list)
    parsed: list[FileParse] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.parsed or self.removed)

    @property
    def dag_count(self) -> int:
        return sum(len(p.dags) for p in self.parsed)

    @property
    def error_count(self) -> int:
        return sum(len(p.errors) for p in self.parsed)


class DagFolderParser:
    """Parses what changed in the DAG folder and records it. Keeps a stat cache between refreshes, so a long-lived
    owner (the DAG processor) reads a file again only when its stat changed."""

    def __init__(self, settings: Settings, metastore: Metastore) -> None:
        self.settings = settings
        self.metastore = metastore
        add_import_folders(settings.import_folders, airflow_finders())  # what DAG files import, in every parse worker
        self._stats: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._recorded: dict[str, str] | None = None  # fileloc -> content hash, as the metastore has it

    def refresh(self, force: bool = False, stop: Callable[[], bool] = lambda: False) -> FolderRefresh:
        folder = self.settings.resolved_dags_folder
        found = dag_file_hashes(folder, self._stats)
        if self._recorded is None or force:
            self._recorded = {f.fileloc: f.content_hash for f in queries.dag_file_stats(self.metastore.db)}
        changed = sorted(p for p, digest in found.items() if force or self._recorded.get(p) != digest)
        removed = sorted(set(self._recorded) - set(found))
        refresh = FolderRefresh(sorted(found), removed=removed)
        if not changed and not removed:
            return refresh
        s = self.settings
        refresh.parsed = parse_files([(Path(p), found[p]) for p in changed], self.metastore,
                                     s.dagbag_import_timeout, s.parsing_processes, s.resolved_log_folder, folder, stop)
        self._record(refresh)
        return refresh

    def _record(self, refresh: FolderRefresh) -> None:
        parsed_files = {p.path for p in refresh.parsed}
        # A dag_id already defined by another file that is still there (and not parsed now) stays with that file.
        owners = {r.dag_id: r.fileloc for r in queries.list_dags(self.metastore.db)
                  if r.fileloc not in parsed_files and r.fileloc in refresh.files}
        errors: list[ImportErrorInfo] = []
        texts: dict[str, tuple[str, str]] = {}
        stats: list[DagFileStat] = []
        for parse in refresh.parsed:
            errors += parse.errors
            kept: list[str] = []
            for dag_id, text, digest in parse.dags:
                other = owners.get(dag_id)
                if other is not None:
                    errors.append(ImportErrorInfo(parse.path, f"DAG '{dag_id}' is already defined in {other}; "
                                                  "dag_ids must be unique", dag_id=dag_id))
                    continue
                owners[dag_id] = parse.path
                texts[dag_id] = (text, digest)
                kept.append(dag_id)
            stats.append(DagFileStat(parse.path, parse.content_hash, tuple(kept), parse.task_count,
                                     len(parse.errors) + len(parse.dags) - len(kept), parse.duration))
            for line in parse.warnings:
                log.warning("%s", line)
        self.metastore.dags.sync_serialized(texts, errors, parsed_files, folder_files=refresh.files,
                                            file_stats=stats)
        assert self._recorded is not None
        for stat in stats:
            self._recorded[stat.fileloc] = stat.content_hash
        for gone in refresh.removed:
            self._recorded.pop(gone, None)


def refresh_dag_folder(settings: Settings, metastore: Metastore, force: bool = False) -> FolderRefresh:
    """Parse what changed in the DAG folder (each file time-limited, in its own process) and record it."""
    return DagFolderParser(settings, metastore).refresh(force)


# -- a DAG for a command ----------------------------------------------------------------------------------------
def serialized_dag(metastore: Metastore, dag_id: str) -> DAG:
    """The DAG as the last parse serialized it (no user code runs); NotFound names the import error if any."""
    for record in queries.serialized_dags(metastore.db, [dag_id]):
        with contextlib.suppress(NotFound):
            if queries.get_dag(metastore.db, dag_id).is_active:
                return deserialize_dag(json.loads(record.data), record.dag_hash)
    raise _not_found(metastore, dag_id)


def current_dag(settings: Settings, metastore: Metastore, dag_id: str) -> DAG:
    """The serialized DAG after a refresh of the folder: for commands that read a DAG but run none of its code."""
    refresh_dag_folder(settings, metastore)
    return serialized_dag(metastore, dag_id)


def load_dag(settings: Settings, metastore: Metastore, dag_id: str) -> DAG:
    """The DAG as its file defines it now, for a command that runs its tasks or callbacks in this process.

    The folder is refreshed first (time-limited, in child processes), so a file that hangs, exits or crashes is
    an import error before it is imported here; then the one file is imported in this process with the same
    time-out, what it prints going to its parse log."""
    refresh_dag_folder(settings, metastore)
    record = next((r for r in queries.list_dags(metastore.db) if r.dag_id == dag_id), None)
    if record is None:
        raise _not_found(metastore, dag_id)
    path = Path(record.fileloc)
    log_path = parse_log_path(settings.resolved_log_folder, settings.resolved_dags_folder, path)
    with output_to(log_path), metastore_environment(metastore):
        dags, errors = load_dag_file(path, airflow_finders(), timeout=settings.dagbag_import_timeout)
    for found in dags:
        if found.dag_id == dag_id:
            return found
    reason = "; ".join(str(e) for e in errors) or "the DAG is no longer defined in it"
    raise NotFound(f"DAG '{dag_id}' failed to load from {path}: {reason}")


def _not_found(metastore: Metastore, dag_id: str) -> NotFound:
    broken = [e for e in queries.list_import_errors(metastore.db) if e.dag_id == dag_id]
    if broken:
        where = f"{broken[0].filename}:{broken[0].lineno}" if broken[0].lineno else broken[0].filename
        return NotFound(f"DAG '{dag_id}' failed to load: {where}: {broken[0].message}")
    known = ", ".join(r.dag_id for r in queries.list_dags(metastore.db)) or "none"
    errors = len(queries.list_import_errors(metastore.db))
    hint = f"; {errors} DAG file(s) failed to import" if errors else ""
    return NotFound(
        f"DAG '{dag_id}' is not in the DAG folder (known: {known}{hint}); check the dag_id, SPARKFLOW_DAGS_FOLDER "
        "and `sparkflow dags list-import-errors`"
    )


__all__ = ["DagFolderParser", "FolderRefresh", "current_dag", "load_dag", "refresh_dag_folder",
           "serialized_dag"]
