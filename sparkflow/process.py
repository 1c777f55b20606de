"""Run an external command in its own process group, stream its output line by line, and kill it for real.

Used by the Bash and Spark operators. The child gets its own session so that killing the group also kills what
it started (a JVM under spark-submit, a pipeline under bash).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

KILL_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class ProcessResult:
    returncode: int
    last_lines: tuple[str, ...]


class GroupProcess:
    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        keep_lines: int = 20,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = str(cwd) if cwd is not None else None
        self.keep_lines = keep_lines
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, on_line: Callable[[str], None]) -> ProcessResult:
        """Start the command, call on_line for every output line (stdout and stderr merged), wait for the end."""
        tail: collections.deque[str] = collections.deque(maxlen=self.keep_lines)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        with self.proc.stdout:
            try:
                for raw in iter(self.proc.stdout.readline, b""):
                    line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                    tail.append(line)
                    on_line(line)
                returncode = self.proc.wait()
            except BaseException:
                self.kill()  # timeout, SIGTERM of the task, ctrl-c: never leave the child behind
                raise
        return ProcessResult(returncode, tuple(tail))

    def end_group(self, wait: float = KILL_GRACE_SECONDS) -> None:
        """Once the leader ended by itself: what it started and left in its group (a JVM still shutting down)
        gets ``wait`` seconds to end by itself, then SIGTERM, and ``wait`` seconds later SIGKILL."""
        if self.proc is None or self.proc.poll() is None:
            return
        pgid = self.proc.pid
        for signum in (None, signal.SIGTERM, signal.SIGKILL):
            if signum is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signum)
            if wait_for_group(pgid, time.monotonic() + wait):
                return

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self, grace: float = KILL_GRACE_SECONDS) -> None:
        if self.proc is not None:
            terminate_group(self.proc, grace)


def terminate_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL whatever is left once the group is gone or ``grace``
    seconds have passed, and wait (``grace`` at most) until it is gone: a large JVM takes a moment to die. Waiting
    on the leader first matters: an unreaped leader still counts as a group member."""
    if proc.poll() is not None:
        return
    deadline = time.monotonic() + grace
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    else:
        wait_for_group(proc.pid, deadline)  # what the leader started (a driver JVM) ends its own way too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for_group(proc.pid, time.monotonic() + grace)


def wait_for_group(pgid: int, deadline: float) -> bool:
    """Wait until no process of group ``pgid`` is alive (True) or the monotonic ``deadline`` passed (False)."""
    while group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` has not ended (zombies have: an orphan's may never be reaped)."""
    if not os.path.isdir("/proc"):  # whether the group has a member at all
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return any(p.pgrp == pgid and not p.zombie for p in process_table().values())


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    pgrp: int
    name: str
    zombie: bool


def process_table() -> dict[int, Process]:
    """Every process of this machine, from /proc (empty without /proc)."""
    found: dict[int, Process] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:  # plain strings and open(): this runs at the end of every try
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
        except OSError:
            continue  # it ended meanwhile
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp ...
        found[int(entry)] = Process(int(entry), int(fields[1]), int(fields[2]), name, fields[0] == "Z")
    return found


def pid_alive(pid: int) -> bool:
    """True while the process exists and has not ended (a zombie has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
