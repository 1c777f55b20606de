"""Managed Spark Connect servers: found, started, health-checked, leased and stopped through one directory per
connection, so any sparkflow process on this host (task processes, the CLI) finds and reuses the same server.

``<servers dir>/<conn_id>/``:

- ``spec.json``: the ManagedServerSpec the server was started with;
- ``server.json``: the ServerRecord, written by the supervisor once the server answers (absent: no server);
- ``server.log``: the supervisor's and the server JVM's output;
- ``lock``: an flock held while a process checks or starts the server, so two tasks never start two servers;
- ``leases/``: one file per task try using the server (``<pid>-<nonce>``); the supervisor stops the server after
  ``idle_timeout`` seconds without a live lease.

The supervisor (``python -m sparkflow.spark.connect_supervisor DIR``) runs in a session of its own, so killing a
task's process group never takes the server with it; it owns the JVM (``spark-submit --class
...SparkConnectServer``, foreground) and removes ``server.json`` when the JVM ends, whatever ended it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sparkflow.exceptions import SparkflowError
from sparkflow.process import pid_alive
from sparkflow.spark.connect_config import ManagedServerSpec

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"
STOP_GRACE_SECONDS = 10.0


class ServerStartFailed(SparkflowError):
    """The managed Spark Connect server did not come up; the message carries the end of its log."""


@dataclass(frozen=True)
class ServerRecord:
    """A running managed server, as its supervisor recorded it."""

    conn_id: str
    supervisor_pid: int
    server_pid: int
    host: str
    port: int
    ui_port: int
    app_id: str | None
    started_at: float  # epoch seconds the supervisor started the JVM
    ready_at: float  # epoch seconds the server first answered
    fingerprint: str
    owner: str  # user@host of the process that asked for it

    @property
    def ui_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.ui_port}"

    @property
    def address(self) -> str:
        return f"sc://{_url_host(self.host)}:{self.port}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class ServerDirectory:
    """The files of one connection's managed server (see the module docstring)."""

    def __init__(self, root: Path, conn_id: str) -> None:
        self.path = root / conn_id
        self.spec_file = self.path / "spec.json"
        self.record_file = self.path / "server.json"
        self.log_file = self.path / "server.log"
        self.lock_file = self.path / "lock"
        self.leases = self.path / "leases"
        self.supervisor_pid_file = self.path / "supervisor.pid"

    def ensure(self) -> None:
        self.leases.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, wait: bool = True) -> Iterator[bool]:
        """Hold the directory's lock; with ``wait=False`` yields False at once when someone else holds it."""
        self.ensure()
        with open(self.lock_file, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def supervisor_pid(self) -> int | None:
        try:
            return int(self.supervisor_pid_file.read_text())
        except (OSError, ValueError):
            return None

    def read_spec(self) -> ManagedServerSpec | None:
        try:
            return ManagedServerSpec.from_json(json.loads(self.spec_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write_spec(self, spec: ManagedServerSpec) -> None:
        _write_json(self.spec_file, spec.to_json())

    def read_record(self) -> ServerRecord | None:
        try:
            return ServerRecord(**json.loads(self.record_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write_record(self, record: ServerRecord) -> None:
        _write_json(self.record_file, asdict(record))

    def remove_record(self, record: ServerRecord | None = None) -> None:
        """Remove server.json, only if it still describes ``record`` (a newer server's record stays)."""
        if record is not None and self.read_record() != record:
            return
        with contextlib.suppress(FileNotFoundError):
            self.record_file.unlink()

    def live_leases(self) -> list[Path]:
        """Lease files of processes still alive; those of dead processes are removed."""
        alive = []
        for lease in sorted(self.leases.glob("*")) if self.leases.is_dir() else []:
            pid = int(lease.name.split("-", 1)[0]) if lease.name.split("-", 1)[0].isdigit() else 0
            if pid and pid_alive(pid):
                alive.append(lease)
            else:
                with contextlib.suppress(FileNotFoundError):
                    lease.unlink()
        return alive

    def take_lease(self, holder: str) -> Path:
        """Hold the server (no idle stop) while a task try uses it; remove the file to release it."""
        self.ensure()
        path = self.leases / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        path.write_text(holder)
        return path

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def health_problem(record: ServerRecord) -> str | None:
    """Why the recorded server cannot serve (None: it can): a dead supervisor or JVM, or a closed gRPC port."""
    if not pid_alive(record.supervisor_pid):
        return f"its supervisor (pid {record.supervisor_pid}) is gone"
    if not pid_alive(record.server_pid):
        return f"the server JVM (pid {record.server_pid}) is gone"
    if not port_open(record.host, record.port):
        return f"nothing accepts connections on {record.host}:{record.port}"
    return None


@contextlib.contextmanager
def use_server(directory: ServerDirectory, spec: ManagedServerSpec, owner: str, holder: str,
               log: object | None = None) -> Iterator[tuple[ServerRecord, bool]]:
    """The healthy server for ``spec``, leased for as long as the block runs (so it is not stopped as idle);
    yields the record and whether this call started it."""
    record, started, lease = acquire_server(directory, spec, owner, holder, log)
    try:
        yield record, started
    finally:
        with contextlib.suppress(FileNotFoundError):
            lease.unlink()


def acquire_server(directory: ServerDirectory, spec: ManagedServerSpec, owner: str, holder: str,
                   log: object | None = None) -> tuple[ServerRecord, bool, Path]:
    """Find or start the server and lease it, under the lock: other processes asking at the same time wait and then
    reuse the server this one started, and the supervisor's idle stop (which takes the lock) cannot slip between
    finding the server and leasing it. A server that is dead, unhealthy or started with other settings is
    replaced."""
    with directory.locked():
        record = directory.read_record()
        started = False
        if record is not None:
            problem = health_problem(record)
            if problem is not None or record.fingerprint != spec.fingerprint():
                _info(log, "Restarting the Spark Connect server of '%s': %s", spec.conn_id,
                      problem or "its connection settings changed")
                stop_recorded(directory, record)
                record = None
        else:
            _stop_orphan(directory)
        if record is None:
            record, started = _start(directory, spec, owner, log), True
        return record, started, directory.take_lease(holder)


def _start(directory: ServerDirectory, spec: ManagedServerSpec, owner: str, log: object | None) -> ServerRecord:
    if port_open(spec.bind_host, spec.port, timeout=0.5):
        raise ServerStartFailed(
            f"cannot start the Spark Connect server of '{spec.conn_id}': {spec.bind_host}:{spec.port} is already in "
            "use by another process; stop it or give the connection another port"
        )
    directory.write_spec(spec)
    with contextlib.suppress(FileNotFoundError):
        directory.record_file.unlink()
    _info(log, "Starting a Spark Connect server for '%s' on %s:%s (master %s)", spec.conn_id, spec.bind_host,
          spec.port, spec.master)
    # SPARKFLOW_DETACHED: the server outlives the try that starts it, so the try's clean-up of leftover
    # processes (runtime.leftovers, a child subreaper that inherits the forked-away supervisor) spares it.
    env = {**os.environ, "SPARKFLOW_CONNECT_OWNER": owner, "SPARKFLOW_DETACHED": "1"}
    directory.supervisor_pid_file.unlink(missing_ok=True)
    with open(directory.log_file, "ab") as out:
        # --detach: the supervisor forks away at once, so it is no child of this (task) process
        subprocess.run(
            [sys.executable, "-m", "sparkflow.spark.connect_supervisor", "--detach", str(directory.path)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            check=True, cwd=directory.path,  # the server's relative paths (spark-warehouse) land here
        )
    deadline = time.monotonic() + spec.startup_timeout
    supervisor = None
    while time.monotonic() < deadline:
        supervisor = supervisor or directory.supervisor_pid()
        record = directory.read_record()
        if record is not None and record.supervisor_pid == supervisor:
            _info(log, "Spark Connect server of '%s' is up at %s after %.1f s (Spark UI %s)", spec.conn_id,
                  record.address, record.ready_at - record.started_at, record.ui_url)
            return record
        if supervisor is not None and not pid_alive(supervisor):
            raise ServerStartFailed(
                f"the Spark Connect server of '{spec.conn_id}' ended while starting; "
                f"end of {directory.log_file}:\n{directory.log_tail()}"
            )
        time.sleep(0.1)
    if supervisor is not None:
        _terminate_group(supervisor)
    raise ServerStartFailed(
        f"the Spark Connect server of '{spec.conn_id}' did not answer within {spec.startup_timeout:.0f} s "
        f"(extra startup_timeout); end of {directory.log_file}:\n{directory.log_tail()}"
    )


def stop_recorded(directory: ServerDirectory, record: ServerRecord) -> None:
    """Stop a recorded server and its supervisor (SIGTERM to the supervisor's group, SIGKILL after the grace)."""
    _terminate_group(record.supervisor_pid)
    if pid_alive(record.server_pid) and _is_connect_server(record.server_pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.server_pid, signal.SIGKILL)
    directory.remove_record(record)


def stop_server(directory: ServerDirectory) -> ServerRecord | None:
    """``spark-connect stop``: stop the connection's server if one runs; returns what was stopped."""
    with directory.locked():
        record = directory.read_record()
        if record is None:
            _stop_orphan(directory)
            return None
        stop_recorded(directory, record)
        return record


def _stop_orphan(directory: ServerDirectory) -> None:
    """A supervisor that started but never recorded its server (killed while starting) leaves nothing behind."""
    pid = directory.supervisor_pid()
    with contextlib.suppress(OSError):
        if pid and pid_alive(pid) and "connect_supervisor" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            _terminate_group(pid)


def _is_connect_server(pid: int) -> bool:
    try:
        return SERVER_CLASS in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _terminate_group(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _info(log: object | None, message: str, *args: object) -> None:
    info = getattr(log, "info", None)
    if info is not None:
        info(message, *args)
