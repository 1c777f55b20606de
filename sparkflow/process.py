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

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill(self, grace: float = KILL_GRACE_SECONDS) -> None:
        if self.proc is not None:
            terminate_group(self.proc, grace)


def terminate_group(proc: subprocess.Popen[bytes], grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL whatever is left once the leader is gone or ``grace``
    seconds have passed. Waiting on the leader (not probing the group) matters: an unreaped leader still counts
    as a group member, and stragglers re-parented to a PID 1 that never reaps would look alive for ever."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


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
