"""The fork server's parses of DAG files: each DAG parsed once per version of its files, in the server, so every
worker forked afterwards inherits it (see runtime/forkserver.py). Runs in the fork server process."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import SparkflowError
from sparkflow.files import touch_private
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.parse_log import output_to, parse_log_path
from sparkflow.process import pid_alive
from sparkflow.runtime.task_runner import load_task_dag
from sparkflow.runtime.user_code import ModuleFile, UserCode, changed, files_of
from sparkflow.settings import Settings


@dataclass(frozen=True)
class Parsed:
    """One DAG as the server parsed it, with the user modules that parse imported (and their files then)."""

    dag_file: ModuleFile
    dag: DAG
    modules: dict[str, ModuleType]
    files: tuple[ModuleFile, ...]


class DagParses:
    """The current parse of each DAG a try was asked for; ``version`` changes whenever one is dropped or added
    (a worker forked before then holds other parses and must not be used)."""

    def __init__(self, settings: Settings, metastore: Metastore | None) -> None:
        self.settings = settings
        self.metastore = metastore
        self.user_code = UserCode(settings.resolved_dags_folder)  # before this process imports a DAG file
        self.parsed: dict[str, Parsed] = {}  # dag_id -> its current parse
        self.version = 0
        # A DAG file the processor parsed cleanly is imported here at once. One that turns bad afterwards (calls
        # os._exit() or crashes only now) would end this server mid-import: the guard file it leaves behind makes
        # every later server try each file in a forked probe first (imports_safely).
        guards = settings.resolved_log_folder / "dag_processor"
        self.guard = guards / f".fork-server-importing.{os.getpid()}"
        self.careful = any(not pid_alive(int(g.name.rsplit(".", 1)[1])) for g in guards.glob(".fork-server-importing.*")
                           if g.name.rsplit(".", 1)[1].isdigit())

    def current(self, dag_id: str) -> Parsed | None:
        """The DAG as its files define it now, parsed here once per version of them and inherited by every child.
        Re-parsing the file in each task process would cost more than everything else a task process does. The parse
        is current while the DAG file and every user module it imported (helpers next to it, modules from paths it
        put on sys.path: see runtime/user_code.py) are unchanged (mtime, size, inode); otherwise the file is parsed
        again from fresh imports of those modules, so a task runs what its files say when it starts. On any problem
        the child parses the file itself, and reports the error in the try's log as it always did."""
        if self.metastore is None:
            return None
        cached = self.parsed.get(dag_id)
        if cached is not None and cached.dag_file.current() and not changed(cached.files):
            return cached  # the hot path: a stat() per file, no query
        try:
            fileloc = queries.get_dag(self.metastore.db, dag_id).fileloc
        except SparkflowError:
            return None
        dag_file = ModuleFile.of(fileloc)
        if dag_file is None:
            return None
        if self.parsed.pop(dag_id, None) is not None:
            self.version += 1
        timeout = self.settings.dagbag_import_timeout
        log_path = parse_log_path(self.settings.resolved_log_folder, self.settings.resolved_dags_folder,
                                  Path(dag_file.path))
        if self.careful and not imports_safely(self.metastore, dag_id, timeout, log_path):
            return None  # the task's own process imports it and reports what went wrong in the try's log
        self.user_code.forget()  # this DAG's imports come from its files, not from another DAG's parse
        touch_private(self.guard)
        try:
            with output_to(log_path):  # what the file prints is not the scheduler's output
                dag = load_task_dag(self.metastore, dag_id, timeout)
        except Exception:  # noqa: BLE001 - the child loads it again and reports the error where users look
            return None
        finally:
            self.guard.unlink(missing_ok=True)
        modules = self.user_code.loaded()
        parsed = Parsed(dag_file, dag, modules, files_of(modules))
        if changed(parsed.files) or not dag_file.current():
            return None  # edited while it was parsed: the child parses it for itself
        self.parsed[dag_id] = parsed
        self.version += 1
        warm_imports(dag)
        return parsed


def warm_imports(dag: DAG) -> None:
    """What the DAG's operators import on first use, imported here once, so every worker forked later inherits it
    (the Spark Connect client's pandas, pyarrow and grpc cost a @task.pyspark try seconds otherwise)."""
    for operator_class in {getattr(task, "operator_class", type(task)) for task in dag.tasks}:
        try:
            operator_class.warm_imports()
        except Exception as exc:  # noqa: BLE001 - the try imports it itself, and reports what fails in its log
            print(f"sparkflow fork server: warm imports of {operator_class.__name__} failed: {exc}", file=sys.stderr)


def imports_safely(metastore: Metastore, dag_id: str, timeout: float, log_path: Path) -> bool:
    """Whether the DAG file of dag_id imports here without hanging, exiting or crashing: tried once per version
    of the file in a forked child, so only a file that passed is imported by the server itself (a file that
    calls os._exit() or crashes would end the server and every task start with it)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            os.setsid()
            metastore.db.engine.dispose(close=False)  # never share a pooled connection with the server
            with output_to(log_path):
                load_task_dag(metastore, dag_id, timeout)
            os.write(write_fd, b"ok")
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], timeout + 1.0)
        answer = os.read(read_fd, 2) if ready else b""
    finally:
        os.close(read_fd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # unless the server's reaper took it first
    return answer == b"ok"
