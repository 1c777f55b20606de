"""Runs each workload in its own process, up to ``parallelism`` at once, forked from a warm fork server.

A task that crashes, leaks memory or calls os._exit cannot take the scheduler down: it is a separate process
(a child of the fork server, sparkflow.runtime.forkserver, which the executor starts once and talks to over a
Unix socket pair). Its exit code comes back as an event and the scheduler fails or retries the task if the
runner could not record an outcome.

Why a fork server instead of ``python -m sparkflow.runtime`` per task: the fresh interpreter cost about a second
of imports per task on a 2-core machine; a fork of a process that already imported everything costs a few
milliseconds (bench/scheduler.py prints both sides). The events come over the socket the moment a child ends,
so wait() blocks in select() and the scheduler reacts at once instead of polling.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from sparkflow.executors.base import ExecutorEvent, Workload, exit_reason
from sparkflow.metastore.records import TIKey
from sparkflow.process import KILL_GRACE_SECONDS
from sparkflow.runtime.forkserver import encode, serve_in_fork

log = logging.getLogger("sparkflow.executor")
SERVER_MODULE = "sparkflow.runtime.forkserver"
# This process's ends of every fork server's socket: a fork server forked later must not hold a copy, or the
# server it belongs to would not see EOF when its executor closes it.
_OPEN_SOCKETS: set[socket.socket] = set()


@dataclass
class _Running:
    workload: Workload
    request_id: int
    pid: int | None = None  # known once the fork server reports the fork
    done: bool = False  # the runner recorded the outcome; the process is leaving


class LocalExecutor:
    name = "local"

    def __init__(self, parallelism: int, env: dict[str, str] | None = None, bound: bool = False) -> None:
        self.parallelism = parallelism
        self.env = env
        self.bound = bound  # task processes end with the fork server, which ends with this process
        # Another descriptor wait() returns on when it becomes readable (drained here): how another thread wakes
        # the one that drives this executor (executors/task_processes.py).
        self.wake_fd: int | None = None
        self._queued: list[Workload] = []
        # Every try handed to the server whose process has not reported its exit, by request id: a message is
        # matched to its try by that id, never by task key (an earlier try of the key may still be leaving).
        self._requests: dict[int, _Running] = {}
        self._latest: dict[TIKey, _Running] = {}  # each key's newest try: what pid() and kill() act on
        self._next_request = 0
        self._ended: list[ExecutorEvent] = []  # exits read from the server, handed out by the next sync()
        # Something the scheduler should act on arrived since the last sync(): an outcome recorded ("done"), or a
        # process ended without one (a process that ended after its "done" frees nothing new).
        self._wake = False
        self._server: subprocess.Popen[bytes] | None = None  # when started as a fresh interpreter
        self._server_pid: int | None = None
        self._sock: socket.socket | None = None
        self._buffer = b""

    # -- the fork server ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the fork server now, so its imports overlap with the scheduler's first loop."""
        self._ensure_server()

    def _ensure_server(self) -> socket.socket:
        """Start the fork server. Forked from this process when it is single-threaded (the scheduler daemon,
        `trigger --wait`, `backfill`): it inherits every import and is ready in milliseconds. Otherwise (a
        scheduler embedded in a threaded process, where forking could copy a lock some other thread holds) a
        fresh interpreter, which spends about a second on imports before the first task starts."""
        if self._sock is not None:
            return self._sock
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if threading.active_count() == 1:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for sock in (ours, *_OPEN_SOCKETS):  # another executor's server must see EOF when it closes
                    sock.close()
                serve_in_fork(theirs, self.env, self.bound)  # never returns
            self._server_pid = pid
        else:
            self._server = subprocess.Popen(
                [sys.executable, "-m", SERVER_MODULE, str(theirs.fileno()), *(["--bound"] if self.bound else [])],
                stdin=subprocess.DEVNULL, env=self.env, pass_fds=[theirs.fileno()],
            )
            self._server_pid = self._server.pid
        theirs.close()
        ours.setblocking(False)
        self._sock = ours
        _OPEN_SOCKETS.add(ours)
        return ours

    def _server_gone(self) -> None:
        """The fork server died (it should not): its children live on in their own sessions and record their
        own outcomes; the scheduler watches them like any task it does not own (pid and heartbeat). The next
        launch starts a new server."""
        log.error("the local executor's fork server (pid %s) ended unexpectedly; %d running task(s) are left to "
                  "their runners and the heartbeat check", self._server_pid, len(self._requests))
        self._close_server()
        self._requests.clear()
        self._latest.clear()

    def _close_server(self) -> None:
        if self._sock is not None:
            _OPEN_SOCKETS.discard(self._sock)
            self._sock.close()
            self._sock = None
        if self._server is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._server.wait(timeout=5)  # EOF stops it at once; its children are not waited for
        elif self._server_pid is not None:
            deadline = time.monotonic() + 5
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(self._server_pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
                    time.sleep(0.001)
        self._server = None
        self._server_pid = None
        self._buffer = b""

    def _read(self, timeout: float | None) -> bool:
        """Take in what the server sent, waiting up to ``timeout`` for something to arrive. True if anything
        arrived."""
        sock = self._sock
        if sock is None:
            return self._woken(timeout)
        if timeout is not None and timeout > 0:
            watched: list[Any] = [sock] if self.wake_fd is None else [sock, self.wake_fd]
            ready, _, _ = select.select(watched, [], [], timeout)
            if not ready:
                return False
            if self.wake_fd in ready:
                self._woken(0)
                if sock not in ready:
                    return True
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:
            self._server_gone()
            return True
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line:
                self._on_message(json.loads(line))
        return True

    def _woken(self, timeout: float | None) -> bool:
        """Whether wake_fd became readable within ``timeout`` (then drained, and wait() returns)."""
        if self.wake_fd is None or not select.select([self.wake_fd], [], [], timeout or 0)[0]:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass
        self._wake = True
        return True

    def _on_message(self, message: dict[str, Any]) -> None:
        item = self._requests.get(message["id"])
        if item is None:
            return
        item.pid = message["pid"] or None
        if message.get("done"):
            # The outcome is recorded: that is the event the loop plans on (exit code 0), before the process has
            # left. Its clean exit then brings nothing new: no second event, no second iteration.
            item.done = True
            self._wake = True
            self._ended.append(ExecutorEvent(item.workload, 0, recorded=True))
        if "exit" in message:
            code = int(message["exit"])
            del self._requests[item.request_id]
            if self._latest.get(item.workload.key) is item:
                del self._latest[item.workload.key]
            if code != 0 or not item.done:
                self._wake = True
                self._ended.append(ExecutorEvent(item.workload, code, exit_reason(code)))

    # -- the executor protocol ----------------------------------------------------------------------------------
    def _busy(self) -> int:
        """Processes still running their task: one whose outcome is recorded no longer takes a slot."""
        return sum(1 for item in self._requests.values() if not item.done)

    def open_slots(self) -> int:
        return max(self.parallelism - self._busy() - len(self._queued), 0)

    def queue(self, workload: Workload) -> None:
        self._queued.append(workload)

    def _launch(self, workloads: list[Workload]) -> None:
        """Hand these workloads to the fork server, in one write (not one per workload: 200 tasks may become
        ready at once)."""
        first = self._next_request + 1
        self._next_request += len(workloads)
        requests = [encode({"id": first + i, "key": list(w.key), "try": w.try_number}) for i, w in enumerate(workloads)]
        for attempt in (1, 2):
            sock = self._ensure_server()
            sock.setblocking(True)
            try:
                sock.sendall(b"".join(requests))
                break
            except OSError:
                if attempt == 2:
                    raise
                self._server_gone()  # and send them to a new one
            finally:
                if self._sock is not None:
                    self._sock.setblocking(False)
        for i, workload in enumerate(workloads):
            item = _Running(workload, first + i)
            self._requests[item.request_id] = self._latest[workload.key] = item

    def sync(self) -> list[ExecutorEvent]:
        while self._read(None):
            pass
        events, self._ended = self._ended, []
        self._wake = False
        self._queued.sort(key=lambda w: -w.priority_weight)
        starting = self._queued[:max(self.parallelism - self._busy(), 0)]
        if starting:
            del self._queued[:len(starting)]
            self._launch(starting)
        return events

    def running(self) -> set[TIKey]:
        return set(self._latest) | {w.key for w in self._queued}

    def in_flight(self) -> bool:
        return bool(self._requests or self._queued)

    def cleanup_stuck_queued_tasks(self, keys: set[TIKey]) -> None:
        """Not launched yet: dropped. Handed to the fork server: its runner finds the try no longer queued."""
        self._queued = [w for w in self._queued if w.key not in keys]

    def wait(self, timeout: float) -> None:
        """Return as soon as a task's outcome is recorded or its process ends (or there is something to launch),
        else after ``timeout``. The runner's "done" comes before its process has exited: the scheduler plans the
        next tasks while it leaves, off a chain's critical path."""
        deadline = time.monotonic() + timeout
        while not self._wake and not (self._queued and self._busy() < self.parallelism):
            left = deadline - time.monotonic()
            if left <= 0 or (self._sock is None and self.wake_fd is None):
                return
            self._read(left)

    def pid(self, key: TIKey, timeout: float = 5.0) -> int | None:
        """The process id of a running workload (waiting briefly for the fork to be reported)."""
        item = self._latest.get(key)
        return self._pid_of(item, timeout) if item is not None else None

    def _pid_of(self, item: _Running, timeout: float = 5.0) -> int | None:
        deadline = time.monotonic() + timeout
        while item.request_id in self._requests and item.pid is None and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        return item.pid

    def kill(self, key: TIKey, grace: float = KILL_GRACE_SECONDS) -> bool:
        """SIGTERM the workload's process group, SIGKILL it after ``grace`` seconds if it is still there."""
        item = self._latest.get(key)
        if item is None:
            return False
        self._kill([item], grace)
        return True

    def _kill(self, items: list[_Running], grace: float) -> None:
        pids = [self._pid_of(item) for item in items]
        for pid in pids:
            _signal_group(pid, signal.SIGTERM)

        def left() -> bool:
            return any(item.request_id in self._requests for item in items) and self._sock is not None

        deadline = time.monotonic() + grace
        while left() and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        for pid in pids:
            _signal_group(pid, signal.SIGKILL)  # stragglers of the group (the leader may be gone already)
        while left():
            self._read(1.0)

    def end(self, kill: bool = False, grace: float | None = None) -> None:
        """Stop, then stop the fork server: kill what runs (SIGTERM, then SIGKILL after the kill grace period), or
        wait for running workloads, at most ``grace`` seconds when given, and kill what is left then."""
        self._queued.clear()
        deadline = None if grace is None else time.monotonic() + grace
        try:
            while not kill and self._requests and self._sock is not None:
                left = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
                if left > 0:
                    self._read(left)
                else:
                    kill = True
        except BaseException:  # Ctrl-C while waiting: kill what runs, as end(kill=True) does
            kill = True
            raise
        finally:
            if kill and self._requests:
                self._kill(list(self._requests.values()), KILL_GRACE_SECONDS)
            self._requests.clear()
            self._latest.clear()
            self._ended.clear()
            self._close_server()


def _signal_group(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        # Not (yet) a group leader: the child had not reached os.setsid(), so it has started nothing yet.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
    except PermissionError:
        pass
