"""What a try leaves running. When a try ends, its task process kills the processes the try started that are still
alive: the members of its process group and, on Linux, every descendant, also those that left the group
(``setsid``, a double fork, ``(sleep 300)&`` in a Bash task, ``os.fork()`` in a ``@task``). On Linux the task
process is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so such orphans are re-parented to it, not to init, and
stay its descendants.

Only a task process of its own does this (runtime.guards.start_own_session): a process that runs tries inside
itself (the sequential executor, `dags test`) has children of its own that are not the try's. A process meant to
outlive the try (a supervised helper such as a managed Spark Connect server) says so with ``SPARKFLOW_DETACHED=1``
in its environment, and is left alone with its descendants.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from pathlib import Path

from sparkflow.process import Process, process_table

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
DETACHED_ENV = b"SPARKFLOW_DETACHED=1"
GRACE_SECONDS = 2.0  # SIGTERM first, SIGKILL what is still there after this


_subreaper = False  # this process is a child subreaper: every living descendant of it stays in its subtree


def become_subreaper() -> bool:
    """Make orphans of this process's descendants its children (Linux); False where that is not available."""
    global _subreaper
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        _subreaper = bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
    return _subreaper


def _has_children() -> bool:
    """Whether this process has a child, living or not yet reaped (one system call, nothing reaped)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def leftovers(me: int | None = None) -> list[Process]:
    """Processes other than ``me`` in its process group (when it leads one) or descended from it."""
    me = me or os.getpid()
    if _subreaper and me == os.getpid() and not _has_children():
        return []  # a subreaper without children has no descendants, and its group's members descend from it
    if not Path("/proc/self/stat").exists():
        return []
    table = process_table()
    children: dict[int, list[int]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found, stack = set(), list(children.get(me, []))
    while stack:
        pid = stack.pop()
        if pid not in found and not _detached(pid):
            found.add(pid)
            stack.extend(children.get(pid, []))
    if os.getpgrp() == me:
        found |= {p.pid for p in table.values() if p.pgrp == me and p.pid != me and not _detached(p.pid)}
    return sorted((table[pid] for pid in found if pid in table), key=lambda p: p.pid)


def _detached(pid: int) -> bool:
    try:
        return DETACHED_ENV in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass
    except ChildProcessError:
        pass


def kill_leftovers(grace: float = GRACE_SECONDS) -> list[Process]:
    """SIGTERM what the try left running, SIGKILL what is still there after ``grace``; returns what was alive."""
    _reap()
    alive = [p for p in leftovers() if not p.zombie]
    if not alive:
        return []
    for proc in alive:
        _signal(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap()
        if not [p for p in leftovers() if not p.zombie]:
            return alive
        time.sleep(0.05)
    for proc in leftovers():
        _signal(proc.pid, signal.SIGKILL)
    time.sleep(0.05)
    _reap()
    return alive


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def describe(processes: list[Process]) -> str:
    return ", ".join(f"pid {p.pid} ({p.name})" for p in processes)
