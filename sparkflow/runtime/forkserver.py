"""A warm fork server and its worker processes: ``python -m sparkflow.runtime.forkserver FD``.

Why: a task process started as a fresh ``python -m sparkflow.runtime`` spends about a second importing
sparkflow, SQLAlchemy, Jinja and pendulum before it runs a line of the task. The fork server pays that once: it
imports everything, opens the metastore (checking the schema once), and forks worker processes that run task
tries. After its first try has ended, once it is idle for a second, it also warms up (see warm_up). Not before
the first try, which would wait for it (the warm-up holds SQLite's write lock, and so would hold up the
scheduler's first tick); and not while that try runs, which may be the only one (a Spark job it would take CPU
from). The figures behind these choices are in bench/README.md.

A worker is a separate process, isolated from the scheduler: it leads its own session and process group
(``os.setsid``, so marking a task failed or a timeout kills the group, spark-submit included), writes each try's
output to the try's log file, and a crash in a task cannot take the fork server or the scheduler down.

Workers are reused, as Celery's prefork pool reuses its processes: a worker runs up to ``max_tasks_per_child``
tries, one at a time. Why not a fresh fork per try: the fork, every page it touches copied from the server and
its exit cost several times a no-op try itself (``local-fresh`` in bench/scheduler.py). Between
tries a worker puts back what a task may have changed in the process (environment, working directory, sys.path,
signal handlers, standard streams) and sets its user modules to exactly those of the next try's DAG as the
server parsed it from its current files (runtime/user_code.py: a helper module edited since, or another DAG's
module of the same name, is never what a try sees); it is replaced instead when a try left threads or child
processes behind, did not record its own outcome (marked from outside, or crashed), or left it larger than
``max_memory_per_child_mb``. ``max_tasks_per_child = 1`` gives every try a fresh process.

Protocol (the scheduler's LocalExecutor holds the other end of a Unix socket pair), one JSON object per line:

    scheduler -> server  {"id": N, "key": [dag_id, run_id, task_id], "try": T}
    server -> scheduler  {"id": N, "pid": P}                 a worker took the try
                         {"id": N, "pid": P, "done": true}    the runner recorded the outcome
                         {"id": N, "pid": P, "exit": CODE}    the try is over: 0, the worker is free again (or
                                                              left cleanly); otherwise it died first (negative:
                                                              killed by that signal)

The server ends when the socket closes (the scheduler stopped or was killed): workers finish the try they run,
record its outcome, and leave. A ``bound`` server (the Celery worker's, executors/task_processes.py) is the
exception: a try must not outlive the worker that took its message (the message is delivered again, to another
worker), so its workers get SIGTERM when the server ends (``PR_SET_PDEATHSIG``), and the runner records the try
as failed and kills what it started.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import itertools
import json
import logging
import os
import select
import signal
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from sqlalchemy import Connection

from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import SparkflowError
from sparkflow.files import touch_private
from sparkflow.logs import configure_sparkflow_log, open_task_log, task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore, open_metastore
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TIKey
from sparkflow.metastore.store import Store
from sparkflow.operators.python import PythonOperator
from sparkflow.parse_log import output_to, parse_log_path
from sparkflow.runtime.guards import start_own_session
from sparkflow.runtime.output_pump import OutputPump
from sparkflow.runtime.task_runner import exit_code_of_try, load_task_dag, run_try
from sparkflow.runtime.user_code import ModuleFile, UserCode, changed, files_of
from sparkflow.settings import Settings, load_settings
from sparkflow.state import TaskState

log = logging.getLogger("sparkflow.runtime")

WARM_UP_WHEN_IDLE_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


def _warm_up_noop(**_: Any) -> None:
    pass


class _OneTransaction(Database):
    """A Database whose reads and writes all run in one given transaction (which warm_up rolls back)."""

    def __init__(self, db: Database, conn: Connection) -> None:  # shares db's engine; opens nothing itself
        self.url, self.dialect, self.engine = db.url, db.dialect, db.engine
        self._conn = conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        yield self._conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        yield self._conn


def warm_up(settings: Settings, metastore: Metastore) -> bool:
    """Run one no-op try through the real runner here, inside a transaction that is rolled back.

    Why: SQLAlchemy compiles each statement shape once per engine and caches it. A fresh child would compile
    the ~10 statements of a try itself, a large part of a no-op task's time in the child; run once here,
    they are compiled in the cache every child inherits, and so are the modules a try imports on first use
    (pendulum for its context, Jinja for its template). Nothing of it is kept: the rows go with the rollback,
    the log goes to a temporary folder. Best effort: a failure only means children compile for themselves.
    """
    with contextlib.ExitStack() as stack:
        try:
            conn = stack.enter_context(metastore.db.engine.connect())
            conn = conn.execution_options(sparkflow_write=True)  # BEGIN IMMEDIATE on SQLite: waits its turn
            transaction = conn.begin()
            stack.callback(transaction.rollback)
            db = _OneTransaction(metastore.db, conn)
            warm = Metastore(db, Store(db), metastore.secrets)
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="sparkflow-warm-up-"))
            warm_settings = dataclasses.replace(settings, log_folder=Path(folder), heartbeat_interval=3600.0)
            now = datetime.now(UTC)
            dag = DAG("sparkflow_fork_server_warm_up", start_date=now, schedule=None)
            # A template to render: Jinja is imported and its lexer compiled here too.
            PythonOperator(task_id="noop", python_callable=_warm_up_noop, op_kwargs={"day": "{{ ds }}"}, dag=dag)
            run = warm.store.create_dag_run(dag, "warm_up", "manual", now, dag.infer_manual_data_interval(now),
                                            actor="fork_server", now=now)
            key = TIKey(dag.dag_id, run.run_id, "noop")
            warm.store.set_task_state(key, TaskState.NONE, TaskState.SCHEDULED, "fork_server")
            warm.store.set_task_state(key, TaskState.SCHEDULED, TaskState.QUEUED, "fork_server", try_number=1)
            ok = run_try(warm_settings, warm, key, 1, dag=dag).state is TaskState.SUCCESS
        except Exception:  # noqa: BLE001 - best effort, see above
            log.debug("fork server warm-up failed; task processes compile their SQL themselves", exc_info=True)
            ok = False
    metastore.db.dispose()  # fork with no open connection: each child opens its own
    return ok


def _touch(metastore: Metastore) -> None:
    """Connect (keeping the connection pooled) and read through the runner's query path once, in a spare child
    before it has a task. Why: a forked child pays for every page of the server's memory it first writes to
    (copy-on-write; Python's reference counts write to every object it touches), and the runner's first
    transaction touches many. Paid here,
    while the previous task runs, it is off a chain's critical path. Read only (no lock taken): keys that do
    not exist."""
    nobody = TIKey("", "", "")
    with contextlib.suppress(SparkflowError):
        queries.get_task_instance(metastore.db, nobody)
    with contextlib.suppress(SparkflowError):
        queries.get_run(metastore.db, "", "")


@dataclass(frozen=True)
class _Parsed:
    """One DAG as the server parsed it, with the user modules that parse imported (and their files then)."""

    dag_file: ModuleFile
    dag: DAG
    modules: dict[str, ModuleType]
    files: tuple[ModuleFile, ...]


@dataclass
class _Worker:
    """The server's view of one worker process."""

    pid: int
    pipe: int  # write end of the worker's request pipe; -1 once closed (the worker leaves when it reads EOF)
    generation: int
    request: int | None = None  # the request it runs now; None when free

    def hand(self, line: bytes, request_id: int) -> bool:
        """Give it a try (one request line); False if it is gone."""
        try:
            os.write(self.pipe, line)
        except OSError:  # it died (the OOM killer?); its exit is reaped like any other
            self.dismiss()
            return False
        self.request = request_id
        return True

    def dismiss(self) -> None:
        if self.pipe >= 0:
            os.close(self.pipe)
            self.pipe = -1


@dataclass
class _ProcessState:
    """What a try may change in its worker process that the worker puts back before the next try."""

    environ: dict[str, str]
    cwd: str
    path: list[str]

    @classmethod
    def save(cls) -> _ProcessState:
        return cls(dict(os.environ), os.getcwd(), list(sys.path))

    def changes_left(self, own_threads: int = 1) -> str:
        """Why the process cannot be reused as it is ("" when it can): threads (beyond the worker's ``own``)
        or child processes still alive."""
        if threading.active_count() > own_threads:
            return f"the task left {threading.active_count() - own_threads} thread(s) running"
        try:
            while os.waitpid(-1, os.WNOHANG)[0] != 0:  # reap what ended; stop at one still alive
                pass
        except ChildProcessError:
            return ""  # no child processes at all
        return "the task left child processes running"

    def restore(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # nothing between tries writes into the last try's log
            os.dup2(null, fd)
        os.close(null)
        if os.environ != self.environ:
            os.environ.clear()
            os.environ.update(self.environ)
        with contextlib.suppress(OSError):
            if os.getcwd() != self.cwd:
                os.chdir(self.cwd)
        sys.path[:] = self.path
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)


def _too_large(limit_mb: int) -> str:
    """Why a worker is too large to keep ("" when it is not): its resident memory now, against the limit."""
    try:
        resident = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (OSError, ValueError, IndexError):
        return ""
    return f"it uses {resident} MB, more than max_memory_per_child_mb={limit_mb}" if resident > limit_mb else ""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


class _Server:
    def __init__(self, sock: socket.socket, bound: bool = False) -> None:
        self.sock = sock
        self.bound = bound  # workers get SIGTERM when the server ends (see the module docstring)
        self.pid = os.getpid()
        self.settings = load_settings()  # as a fresh task process would: from this process's environment
        add_import_folders(self.settings.import_folders)
        configure_sparkflow_log(self.settings.resolved_log_folder)
        self.metastore: Metastore | None = None
        self.setup_error: str | None = None
        try:
            self.metastore = open_metastore(self.settings)  # the schema check, once for every task
        except SparkflowError as exc:
            self.setup_error = str(exc)  # every task reports it in its own log, as a fresh process would
        self.warmed = False
        # A DAG file the processor parsed cleanly is imported here at once. One that turns bad afterwards (calls
        # os._exit() or crashes only now) would end this server mid-import: the guard file it leaves behind makes
        # every later server try each file in a forked probe first (imports_safely).
        guards = self.settings.resolved_log_folder / "dag_processor"
        self.guard = guards / f".fork-server-importing.{os.getpid()}"
        self.careful = any(not _alive(int(g.name.rsplit(".", 1)[1])) for g in guards.glob(".fork-server-importing.*")
                           if g.name.rsplit(".", 1)[1].isdigit())
        self.warm_up_due = False  # a try has ended and warm_up() has not run: it runs once the server is idle
        self.workers: dict[int, _Worker] = {}  # pid -> every worker not yet reaped
        self.idle: list[_Worker] = []  # free workers of this generation, the last freed at the end
        self.user_code = UserCode(self.settings.resolved_dags_folder)  # before this process imports a DAG file
        self.dags: dict[str, _Parsed] = {}  # dag_id -> its current parse
        self.generation = 0  # bumped whenever self.dags changes: a worker forked before cannot be used
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        # Workers write "done REQUEST_ID\n" here once the runner has recorded the try's outcome, and "free
        # REQUEST_ID\n" once they are ready for another try (a write of a few bytes to a pipe is atomic). The
        # server tells the scheduler each at once, so it plans the next tasks while the worker is still tidying up.
        self.done_r, self.done_w = os.pipe()
        os.set_blocking(self.done_r, False)
        self.done_buffer = b""
        self.output: OutputPump | None = None  # in a worker, while it runs a try: where fds 1 and 2 go

    def serve(self) -> int:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ctrl-c is the scheduler's to handle; EOF stops us
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self.wake_w)  # a child's end wakes select() below at once
        buffer = b""
        watched: list[Any] = [self.sock, self.wake_r, self.done_r]
        while True:
            try:
                readable, _, _ = select.select(watched, [], [], WARM_UP_WHEN_IDLE_SECONDS if self.warm_up_due else None)
            except InterruptedError:
                readable = []
            if not readable and self.warm_up_due:
                self.warm_up_due, self.warmed = False, True
                if self.metastore is not None:
                    warm_up(self.settings, self.metastore)
                continue
            if self.done_r in readable:
                self._worker_messages()
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
            self._reap()
            if self.sock in readable:
                data = self.sock.recv(1 << 16)
                if not data:
                    for worker in self.workers.values():
                        worker.dismiss()  # an idle worker leaves now, a busy one after its try
                    return 0  # the scheduler is gone; workers finish their tries (bound: are ended), leave
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._fork(json.loads(line))
                self._reap()

    def _worker_messages(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.done_r, 4096):
                self.done_buffer += data
        *lines, self.done_buffer = self.done_buffer.split(b"\n")
        busy = {w.request: w for w in self.workers.values() if w.request is not None}
        for line in lines:
            kind, _, request = line.partition(b" ")
            worker = busy.get(int(request)) if request.strip() else None
            if worker is None:
                continue
            if kind == b"done":
                self._send({"id": worker.request, "pid": worker.pid, "done": True})
                self.warm_up_due = not self.warmed
            elif kind == b"free":
                self._send({"id": worker.request, "pid": worker.pid, "exit": 0})
                worker.request = None
                if worker.generation == self.generation:
                    self.idle.append(worker)
                else:
                    worker.dismiss()  # holds an older parse of some DAG

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            worker.dismiss()
            if worker in self.idle:
                self.idle.remove(worker)
            if worker.request is not None:
                self._send({"id": worker.request, "pid": pid, "exit": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall(encode(message))
        except OSError:
            pass  # the scheduler went away; its successor judges the task by its pid and heartbeat

    def _dag(self, dag_id: str) -> _Parsed | None:
        """The DAG as its files define it now, parsed here once per version of them and inherited by every child.
        Re-parsing the file in each task process would cost more than everything else a task process does. The parse
        is current while the DAG file and every user module it imported (helpers next to it, modules from paths it
        put on sys.path: see runtime/user_code.py) are unchanged (mtime, size, inode); otherwise the file is parsed
        again from fresh imports of those modules, so a task runs what its files say when it starts. On any problem
        the child parses the file itself, and reports the error in the try's log as it always did."""
        if self.metastore is None:
            return None
        cached = self.dags.get(dag_id)
        if cached is not None and cached.dag_file.current() and not changed(cached.files):
            return cached  # the hot path: a stat() per file, no query
        try:
            fileloc = queries.get_dag(self.metastore.db, dag_id).fileloc
        except SparkflowError:
            return None
        dag_file = ModuleFile.of(fileloc)
        if dag_file is None:
            return None
        if self.dags.pop(dag_id, None) is not None:
            self._new_generation()
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
        parsed = _Parsed(dag_file, dag, modules, files_of(modules))
        if changed(parsed.files) or not dag_file.current():
            return None  # edited while it was parsed: the child parses it for itself
        self.dags[dag_id] = parsed
        self._new_generation()
        warm_imports(dag)
        return parsed

    def _new_generation(self) -> None:
        """The parsed DAGs changed: workers forked before hold the old ones, so the idle ones leave now and the
        busy ones once their try ends."""
        self.generation += 1
        for worker in self.idle:
            worker.dismiss()
        self.idle.clear()

    # -- workers ------------------------------------------------------------------------------------------------
    # A try goes to the worker freed last (its caches are warmest); with none free, to a new one. One more worker
    # is then forked ahead when none is free, detached and connected to the metastore, blocked on its pipe until
    # a try is handed to it: the fork and the worker's set-up happen while the previous try runs, off the critical
    # path of a chain of tasks. A worker is used only while no DAG was (re)parsed since it was forked (it must
    # hold the same parse the server has); otherwise it is told to leave (EOF on its pipe).
    def _fork(self, request: dict[str, Any]) -> None:
        dag = self._dag(request["key"][0])
        line = encode({**request, "cached": dag is not None})
        worker = None
        while self.idle and worker is None:
            candidate = self.idle.pop()
            if candidate.hand(line, request["id"]):
                worker = candidate
        if worker is None:
            try:
                worker = self._start_worker()
            except OSError as exc:  # no process to be had: the scheduler fails or retries the task
                print(f"sparkflow fork server: cannot start a process for {request['key']}: {exc}", file=sys.stderr)
                self._send({"id": request["id"], "pid": 0, "exit": 1})
                return
            if not worker.hand(line, request["id"]):  # died at once; its exit is reported when it is reaped
                worker.request = request["id"]
        self._send({"id": request["id"], "pid": worker.pid})
        if not self.idle:
            with contextlib.suppress(OSError):  # no spare this time: the next try gets a new worker when it comes
                self.idle.append(self._start_worker())

    def _start_worker(self) -> _Worker:
        r, w = os.pipe()
        # Everything allocated so far goes to the collector's permanent generation: a worker's garbage collection
        # then never walks (and so never copies, page by page) the objects it shares with the server.
        gc.freeze()
        try:
            pid = os.fork()
        except OSError:
            os.close(r)
            os.close(w)
            raise
        if pid == 0:
            os.close(w)
            self._child_main(lambda: self._serve_tries(r))  # never returns
        os.close(r)
        worker = _Worker(pid, w, self.generation)
        self.workers[pid] = worker
        return worker

    def _detach(self) -> None:
        """First steps of every child: its own session and process group (killing the group takes whatever the
        task started), default signal handling, none of the server's descriptors."""
        start_own_session()
        if self.bound:
            _die_with_parent()
            if os.getppid() != self.pid:  # the server ended before the line above took effect
                os._exit(1)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        self.sock.close()
        os.close(self.wake_r)
        os.close(self.wake_w)
        os.close(self.done_r)
        for worker in self.workers.values():  # the other workers' request pipes: each must see EOF when the
            worker.dismiss()                  # server closes its end, so no copy of that end may stay open here
        if self.metastore is not None:
            self.metastore.db.engine.dispose(close=False)  # never share a pooled connection with the server

    def _serve_tries(self, r: int) -> int:
        """In the worker, its whole life: each try the server hands over, until told to leave (EOF) or until it
        should be replaced (see the module docstring); the exit code is the last try's."""
        if self.metastore is not None and not select.select([r], [], [], 0)[0]:  # a spare, not needed yet
            with contextlib.suppress(Exception):
                _touch(self.metastore)
        pristine = _ProcessState.save()
        buffer = b""
        for served in itertools.count(1):
            while b"\n" not in buffer:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    return 0  # not needed any more: the server left, or re-parsed a DAG since the fork
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            parsed = self.dags.get(request["key"][0]) if request["cached"] else None
            # Only this DAG's user modules, as parsed: none of another DAG's, none a previous try imported.
            self.user_code.install(parsed.modules if parsed is not None else {})
            code, reusable = self._serve_one_try(request, parsed.dag if parsed is not None else None)
            reason = self._clean_up(pristine, code == 0 and reusable)
            if code != 0 or reason or served >= self.settings.max_tasks_per_child:
                return code
            try:
                os.write(self.done_w, f"free {request['id']}\n".encode())
            except OSError:
                return 0  # the server is gone: no more tries will come
        raise AssertionError("unreachable")

    def _clean_up(self, pristine: _ProcessState, reusable: bool) -> str:
        """In the worker, after each try: put the process back as it was before the try, and say why it may not
        run another ("" when it may), in the try's log (fd 2 is still its log file)."""
        output, self.output = self.output, None
        reason = "" if reusable else "the try was killed or did not record its own outcome"
        own_threads = 1 + (output is not None and output.running)
        reason = (reason or pristine.changes_left(own_threads)
                  or _too_large(self.settings.max_memory_per_child_mb))
        if reason:
            os.write(2, f"sparkflow: this task process is not reused: {reason}\n".encode())
        if output is not None:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            null = os.open(os.devnull, os.O_RDWR)
            if not output.close(null):
                reason = reason or "a process the try started still holds its output open"
            os.close(null)
        pristine.restore()
        return reason

    def _child_main(self, work: Callable[[], int]) -> None:
        """A forked child's whole life: detach from the server, do the work, leave with its exit code."""
        code = 1
        try:
            self._detach()
            code = work()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            if self.output is not None:  # a crash mid-try: its traceback (on fd 2) reaches the try's log first
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                    null = os.open(os.devnull, os.O_RDWR)
                    self.output.close(null)
            self._leave(code)

    def _serve_one_try(self, request: dict[str, Any], dag: DAG | None) -> tuple[int, bool]:
        """In the worker: one try with the process's output in the try's log; the exit code and whether the
        process may be reused."""
        # Anything printed outside the runner's log handler (a crash) lands in the try's log file.
        key, try_number = TIKey(*request["key"]), int(request["try"])
        path = task_log_path(self.settings.resolved_log_folder, key.dag_id, key.run_id, key.task_id, try_number,
                                 key.map_index)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        self.output = OutputPump(open_task_log(path), self.settings.max_task_log_bytes)
        if self.setup_error is not None:
            print(f"sparkflow task runner: {self.setup_error}", file=sys.stderr)
            return 1, False
        told = False

        def tell_done() -> None:  # the outcome is recorded: the scheduler may act on it before this process is free
            nonlocal told
            told = True
            with contextlib.suppress(OSError):
                os.write(self.done_w, f"done {request['id']}\n".encode())

        code, outcome = exit_code_of_try(self.settings, self.metastore, key, try_number, dag, on_recorded=tell_done)
        if code == 0 and not told:  # ended before its outcome stage (not claimed, not startable): recorded too
            tell_done()
        return code, outcome is not None and outcome.process_reusable

    @staticmethod
    def _leave(code: int) -> NoReturn:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)  # not sys.exit: the server's atexit hooks and finalisers are not the child's


def _die_with_parent() -> None:
    """Get SIGTERM when the parent process ends, even by kill -9 (Linux; elsewhere a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve_in_fork(sock: socket.socket, environ: dict[str, str] | None, bound: bool = False) -> NoReturn:
    """Become the fork server in a just-forked child of the scheduler (see LocalExecutor: it forks when it is
    single-threaded). The scheduler's imports are inherited, so the server is ready in milliseconds instead of
    the ~1 s a fresh interpreter needs. What else is inherited is left alone: the scheduler's database
    connections are never used, and never closed either (gc.freeze keeps every inherited object out of the
    collector, and the server leaves with os._exit, running no finalisers or atexit hooks of the scheduler);
    the server and its children open their own."""
    code = 1
    try:
        gc.freeze()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if environ is not None:
            os.environ.clear()
            os.environ.update(environ)
        code = _Server(sock, bound).serve()
    except BaseException:  # noqa: BLE001 - report and leave; the executor sees the socket close
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    bound = args[1:] == ["--bound"]
    if len(args) != 1 + bound or not args[0].isdigit():
        print("usage: python -m sparkflow.runtime.forkserver FD [--bound] (started by the local executor)",
              file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(args[0]))
    code = _Server(sock, bound).serve()
    logging.shutdown()
    os._exit(code)  # skip the interpreter's tear-down: nothing of it matters once the scheduler is gone


if __name__ == "__main__":
    sys.exit(main())
