"""Run an external command in its own process group, stream its output line by line, and kill it for real.

Used by the Bash and Spark operators. The child gets its own session so that killing the group also kills what
it started (a JVM under spark-submit, a pipeline under bash).
"""

from __future__ import annotations

import collections
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
        try:
            assert self.proc.stdout is not None
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
        """SIGTERM the whole group, then SIGKILL what is left after ``grace`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        kill_process_group(self.proc.pid, grace)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def kill_process_group(pgid: int, grace: float = KILL_GRACE_SECONDS) -> bool:
    """Terminate a process group: SIGTERM, wait up to grace seconds, SIGKILL. True if the group is gone."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return False
