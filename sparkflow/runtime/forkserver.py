"""A warm fork server and its worker processes: ``python -m sparkflow.runtime.forkserver FD``.

Why: a task process started as a fresh ``python -m sparkflow.runtime`` spends about a second importing
sparkflow, SQLAlchemy, Jinja and pendulum before it runs a line of the task. The fork server pays that once: it
imports everything, opens the metastore (checking the schema once), and forks worker processes that run task
tries. After its first try has ended, once it is idle for a second, it also warms up (runtime/warm_up.py). Not
before the first try, which would wait for it (the warm-up holds SQLite's write lock, and so would hold up the
scheduler's first tick); and not while that try runs, which may be the only one (a Spark job it would take CPU
from). A Celery worker's server warms up as it starts, before the worker takes messages. The figures behind these
choices are in bench/README.md. Each DAG is parsed here once per version of its files (runtime/dag_parses.py), and
every worker inherits the parse.

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
import gc
import itertools
import json
import logging
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import SparkflowError
from sparkflow.logs import configure_sparkflow_log, open_task_log, task_log_path
from sparkflow.metastore.bootstrap import Metastore, open_metastore
from sparkflow.metastore.records import TIKey
from sparkflow.runtime import spare_threads
from sparkflow.runtime.dag_parses import DagParses
from sparkflow.runtime.guards import start_own_session
from sparkflow.runtime.output_pump import OutputPump
from sparkflow.runtime.process_reuse import ProcessState, too_large
from sparkflow.runtime.task_runner import exit_code_of_try
from sparkflow.runtime.warm_up import import_try_modules, touch, warm_up
from sparkflow.settings import load_settings

WARM_UP_WHEN_IDLE_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h)


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


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class _Server:
    def __init__(self, sock: socket.socket, bound: bool = False) -> None:
        self.sock = sock
        self.bound = bound  # workers get SIGTERM when the server ends (see the module docstring)
        self.pid = os.getpid()
        self.settings = load_settings()  # as a fresh task process would: from this process's environment
        add_import_folders(self.settings.import_folders, airflow_finders())
        configure_sparkflow_log(self.settings.resolved_log_folder)
        self.metastore: Metastore | None = None
        self.setup_error: str | None = None
        try:
            self.metastore = open_metastore(self.settings)  # the schema check, once for every task
        except SparkflowError as exc:
            self.setup_error = str(exc)  # every task reports it in its own log, as a fresh process would
        import_try_modules()
        # A try has ended and warm_up() has not run: it runs once the server is idle. A bound server (a Celery
        # worker's) warms up as it starts instead: no try waits for it then, as Celery is still starting.
        self.warm_up_due = False
        self.warmed = False
        self.workers: dict[int, _Worker] = {}  # pid -> every worker not yet reaped
        self.idle: list[_Worker] = []  # free workers of this generation, the last freed at the end
        self.parses = DagParses(self.settings, self.metastore)  # before this process imports a DAG file
        self.generation = 0  # the parses' version the idle workers were forked with
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
        if self.bound and self.metastore is not None:
            self.warmed = True
            warm_up(self.settings, self.metastore)
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

    def _new_generation(self) -> None:
        """The parsed DAGs changed: workers forked before hold the old ones, so the idle ones leave now and the
        busy ones once their try ends."""
        self.generation = self.parses.version
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
        dag = self.parses.current(request["key"][0])
        if self.parses.version != self.generation:
            self._new_generation()
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
                touch(self.metastore)
        # A task process logs at INFO: capture_task_logging then leaves the root's level alone around each try
        # (every change of a level clears the cache of every logger in the process).
        logging.getLogger().setLevel(logging.INFO)
        spare_threads.keep()
        pristine = ProcessState.save()
        buffer = b""
        for served in itertools.count(1):
            while b"\n" not in buffer:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    return 0  # not needed any more: the server left, or re-parsed a DAG since the fork
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            request = json.loads(line)
            parsed = self.parses.parsed.get(request["key"][0]) if request["cached"] else None
            # Only this DAG's user modules, as parsed: none of another DAG's, none a previous try imported.
            self.parses.user_code.install(parsed.modules if parsed is not None else {})
            code, reusable = self._serve_one_try(request, parsed.dag if parsed is not None else None)
            reason = self._clean_up(pristine, code == 0 and reusable)
            if code != 0 or reason or served >= self.settings.max_tasks_per_child:
                return code
            try:
                os.write(self.done_w, f"free {request['id']}\n".encode())
            except OSError:
                return 0  # the server is gone: no more tries will come
        raise AssertionError("unreachable")

    def _clean_up(self, pristine: ProcessState, reusable: bool) -> str:
        """In the worker, after each try: put the process back as it was before the try, and say why it may not
        run another ("" when it may), in the try's log (fd 2 is still its log file)."""
        output, self.output = self.output, None
        reason = "" if reusable else "the try was killed or did not record its own outcome"
        reason = (reason or pristine.changes_left()
                  or too_large(self.settings.max_memory_per_child_mb))
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
