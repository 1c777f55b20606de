"""Parse DAG files in child processes with a time limit: the one place where the DAG processor runs user code.

Each file is imported in a forked child (the parent has sparkflow imported already, so a fork costs milliseconds
where a fresh interpreter costs ~0.3 s) that is its own process group, writes what the file prints to the file's
parse log, serializes the DAGs it found and sends them to the parent through a pipe. Whatever the file does, the
parent learns it and carries on: a hang is killed at the time-out ("import timed out after 30 s"), ``os._exit``
and a crash become errors naming the exit code or signal, huge output fills the parse log, not a command's
stdout. Up to ``parallelism`` children run at once.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import pkgutil
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sparkflow
import sparkflow.operators
from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions import serialization
from sparkflow.definitions.baseoperator import warm_operator_classes
from sparkflow.definitions.loader import ImportErrorInfo, load_dag_file
from sparkflow.files import private_dir
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.parse_log import parse_log_path
from sparkflow.runtime.context import metastore_environment

# A result bigger than this is not a DAG file's serialized DAGs but a runaway; the child is stopped.
MAX_RESULT_BYTES = 256 << 20


@dataclass(frozen=True)
class FileParse:
    """What parsing one file found: its DAGs serialized (dag_id, JSON text, hash), its errors, what it cost."""

    path: str
    content_hash: str
    dags: tuple[tuple[str, str, str], ...]
    errors: tuple[ImportErrorInfo, ...]
    duration: float
    task_count: int = 0
    warnings: tuple[str, ...] = ()


@dataclass
class _Job:
    path: Path
    content_hash: str
    pid: int
    fd: int
    started: float
    deadline: float
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False


def parse_files(
    files: Sequence[tuple[Path, str]], metastore: Metastore, timeout: float, parallelism: int, log_folder: Path,
    dags_folder: Path, stop: Callable[[], bool] = lambda: False,
) -> list[FileParse]:
    """Parse each (path, content hash) in a time-limited child, ``parallelism`` at once; results in file order.
    ``stop`` is asked between waits (every 0.2 s at most): when it says yes, running children are killed and
    what is finished is returned."""
    pending = list(files)
    if pending:
        warm_up()
    running: dict[int, _Job] = {}
    done: dict[Path, FileParse] = {}
    try:
        while (pending or running) and not stop():
            while pending and len(running) < max(parallelism, 1):
                path, digest = pending.pop(0)
                job = _start(path, digest, metastore, timeout, parse_log_path(log_folder, dags_folder, path))
                running[job.fd] = job
            now = time.monotonic()
            wait = min([0.2] + [max(j.deadline - now, 0) for j in running.values()])
            readable, _, _ = select.select([fd for fd, j in running.items() if not j.eof], [], [],
                                           0.01 if any(j.eof for j in running.values()) else wait)
            for fd in readable:
                _read(running[fd])
            now = time.monotonic()
            for fd, job in list(running.items()):
                result = _finished(job, timeout) if job.eof else None
                if result is None and now >= job.deadline:
                    _kill(job)
                    result = _failed(job, f"import timed out after {timeout:g} s (setting dagbag_import_timeout)")
                if result is not None:
                    os.close(fd)
                    del running[fd]
                    done[job.path] = result
    finally:
        for job in running.values():
            _kill(job)
            os.close(job.fd)
    return [done[path] for path, _ in files if path in done]


@functools.cache
def warm_up() -> None:
    """Import what DAG files use (the authoring API, every operator, croniter) once here, so each forked child
    starts with it instead of importing it again: a tenth of a second per file otherwise."""
    modules = set(sparkflow._EXPORTS.values()) | {f"sparkflow.operators.{m.name}"
                                                  for m in pkgutil.iter_modules(sparkflow.operators.__path__)}
    for name in sorted(modules) + ["croniter"]:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    warm_operator_classes()


def _start(path: Path, digest: str, metastore: Metastore, timeout: float, log_path: Path) -> _Job:
    private_dir(log_path.parent)
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(path, write_fd, log_path, metastore, timeout)
    os.close(write_fd)
    return _Job(path, digest, pid, read_fd, started, started + timeout)


def _child(path: Path, write_fd: int, log_path: Path, metastore: Metastore, timeout: float) -> None:
    code = 0
    try:
        os.setsid()  # its own group: the time-out kills whatever the file started, too
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        metastore.db.engine.dispose(close=False)  # the parent's connections stay the parent's
        found: list[list[str]] = []
        warnings: list[str] = []
        tasks = 0
        with metastore_environment(metastore):  # DAG files may read Variables/connections at the top level
            dags, errors = load_dag_file(path, airflow_finders(), warnings)
        for dag in dags:
            try:
                text = serialization.dumps(serialization.serialize_dag(dag))
            except Exception as exc:  # noqa: BLE001 - a DAG that cannot be serialized is that DAG's import error
                errors.append(ImportErrorInfo(str(path), f"DAG '{dag.dag_id}' cannot be serialized: {exc}",
                                              dag_id=dag.dag_id))
                continue
            found.append([dag.dag_id, text, serialization.dag_hash(text)])
            tasks += len(dag.task_dict)
        payload = json.dumps({"dags": found, "errors": [_error_out(e) for e in errors], "warnings": warnings,
                              "tasks": tasks}).encode()
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
    except BaseException:  # noqa: BLE001 - whatever happened, this process must end here, never return
        code = 70
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _error_out(error: ImportErrorInfo) -> dict[str, Any]:
    return {"filename": error.filename, "message": error.message, "lineno": error.lineno, "dag_id": error.dag_id,
            "task_id": error.task_id}


def _read(job: _Job) -> None:
    try:
        chunk = os.read(job.fd, 1 << 20)
    except OSError:
        chunk = b""
    if not chunk:
        job.eof = True
        return
    job.data += chunk
    if len(job.data) > MAX_RESULT_BYTES:
        _kill(job)
        job.eof = True


def _finished(job: _Job, timeout: float) -> FileParse | None:
    """The child closed its pipe: its result once it has exited (None while it still runs)."""
    try:
        pid, status = os.waitpid(job.pid, os.WNOHANG)
    except ChildProcessError:
        pid, status = job.pid, 0
    if pid == 0:
        return None
    job.pid = 0
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else str(signum)
        return _failed(job, f"the import was killed by signal {signum} ({name})")
    code = os.WEXITSTATUS(status)
    if code == 70 and not job.data:
        return _failed(job, "the parse worker failed; see the parse log")
    if not job.data:
        return _failed(job, f"the import called exit({code})")
    try:
        result = json.loads(job.data)
    except ValueError:
        return _failed(job, "the parse worker's result was cut short (over 256 MB, or the file wrote to it)")
    errors = tuple(ImportErrorInfo(**e) for e in result["errors"])
    return FileParse(str(job.path), job.content_hash, tuple(tuple(d) for d in result["dags"]),  # type: ignore[misc]
                     errors, time.monotonic() - job.started, result["tasks"], tuple(result["warnings"]))


def _failed(job: _Job, message: str) -> FileParse:
    return FileParse(str(job.path), job.content_hash, (), (ImportErrorInfo(str(job.path), message),),
                     time.monotonic() - job.started)


def _kill(job: _Job) -> None:
    if job.pid:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(job.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(job.pid, 0)
        job.pid = 0
