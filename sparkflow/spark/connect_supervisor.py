"""The supervisor of one managed Spark Connect server: ``python -m sparkflow.spark.connect_supervisor DIR``.

Started by connect_server.ensure_server in a session of its own. It runs the server JVM in the foreground
(``spark-submit --class ...SparkConnectServer spark-internal``, as the reference start does, so this process owns
its pid), waits until the gRPC port accepts connections and the Spark UI's REST API answers (the first REST answer
costs the JVM seconds of set-up, paid here rather than by the first task's progress poll), writes ``server.json``,
then watches: the JVM ending (killed, crashed) removes the record and ends the supervisor, and so does
``idle_timeout`` seconds without a live lease. SIGTERM stops the JVM (SIGKILL after a grace) and removes the record.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from sparkflow.spark.connect_config import ManagedServerSpec
from sparkflow.spark.connect_server import (
    SERVER_CLASS,
    STOP_GRACE_SECONDS,
    ServerDirectory,
    ServerRecord,
    port_open,
)
from sparkflow.spark.submit import locate_binary
from sparkflow.spark.tracking import KeepAliveJson, Unavailable

WATCH_INTERVAL = 1.0


def server_argv(spark_submit: str, spec: ManagedServerSpec, ui_port: int) -> list[str]:
    """The server's command line (pure). The user's conf comes last so it can override sparkflow's defaults."""
    argv = [spark_submit, "--class", SERVER_CLASS, "--master", spec.master,
            "--name", f"sparkflow-connect-{spec.conn_id}"]
    if spec.driver_memory:
        argv += ["--driver-memory", spec.driver_memory]
    conf = {
        "spark.connect.grpc.binding.address": spec.bind_host,
        "spark.connect.grpc.binding.port": str(spec.port),
        "spark.ui.port": str(ui_port),
        "spark.port.maxRetries": "0",  # a UI port taken meanwhile fails the start instead of moving silently
        **spec.conf,
    }
    for key, value in conf.items():
        argv += ["--conf", f"{key}={value}"]
    return [*argv, "spark-internal"]


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Supervisor:
    def __init__(self, directory: ServerDirectory, spec: ManagedServerSpec) -> None:
        self.directory = directory
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.record: ServerRecord | None = None
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        self.directory.supervisor_pid_file.write_text(str(os.getpid()))
        ui_port = self.spec.ui_port or free_port(self.spec.bind_host)
        argv = server_argv(locate_binary("spark-submit"), self.spec, ui_port)
        env = {**os.environ, "SPARK_LOCAL_IP": self.spec.bind_host,
               "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
        print(f"sparkflow: starting {' '.join(argv)}", flush=True)
        started = time.time()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)  # output: our stdout, the log file
        app_id = self._wait_ready(ui_port)
        if app_id is None:
            return self._stop(1)
        self.record = ServerRecord(
            conn_id=self.spec.conn_id, supervisor_pid=os.getpid(), server_pid=self.proc.pid,
            host=self.spec.bind_host, port=self.spec.port, ui_port=ui_port, app_id=app_id, started_at=started,
            ready_at=time.time(), fingerprint=self.spec.fingerprint(),
            owner=os.environ.get("SPARKFLOW_CONNECT_OWNER") or f"{getpass.getuser()}@{socket.gethostname()}",
        )
        self.directory.write_record(self.record)
        print(f"sparkflow: Spark Connect server ready at {self.record.address} after {time.time() - started:.1f} s "
              f"(application {app_id}, UI {self.record.ui_url})", flush=True)
        return self._watch()

    def _wait_ready(self, ui_port: int) -> str | None:
        """The application id once gRPC accepts connections and the REST API answers; None if the JVM ended."""
        assert self.proc is not None
        fetch = KeepAliveJson(timeout=5.0, first_timeout=60.0)
        deadline = time.monotonic() + self.spec.startup_timeout
        try:
            while time.monotonic() < deadline and not self.stopping:
                if self.proc.poll() is not None:
                    print(f"sparkflow: the server JVM ended with code {self.proc.returncode} while starting",
                          flush=True)
                    return None
                if port_open(self.spec.bind_host, self.spec.port, timeout=0.5):
                    try:
                        apps = fetch(f"http://{_url_host(self.spec.bind_host)}:{ui_port}/api/v1/applications")
                        if isinstance(apps, list) and apps:
                            return str(apps[0]["id"])
                    except (Unavailable, KeyError, TypeError):
                        pass
                time.sleep(0.2)
        finally:
            fetch.close()
        return None

    def _watch(self) -> int:
        assert self.proc is not None
        idle_since = time.monotonic()
        while not self.stopping:
            code = self.proc.poll()
            if code is not None:
                print(f"sparkflow: the server JVM (pid {self.proc.pid}) ended with code {code}", flush=True)
                self.directory.remove_record(self.record)
                return 1
            if self.directory.live_leases():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since >= self.spec.idle_timeout and self._retire_if_idle():
                print(f"sparkflow: no task used the server for {self.spec.idle_timeout:.0f} s (idle_timeout); "
                      "stopped it", flush=True)
                return self._stop(0)
            time.sleep(WATCH_INTERVAL)
        return self._stop(0)

    def _retire_if_idle(self) -> bool:
        """Under the lock (skipped this round when a task holds it: it is about to lease the server), check again
        that no lease exists and withdraw the record, so no task picks a server that is going away."""
        with self.directory.locked(wait=False) as got:
            if not got or self.directory.live_leases():
                return False
            self.directory.remove_record(self.record)
            return True

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def _stop(self, code: int) -> int:
        """Stop the JVM; its record goes first (a stop asked through SIGTERM comes from a holder of the lock)."""
        self.directory.remove_record(self.record)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        print("sparkflow: Spark Connect server stopped", flush=True)
        return code


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def main(argv: list[str]) -> int:
    if argv[:1] == ["--detach"]:
        argv = argv[1:]
        if os.fork() > 0:
            os._exit(0)  # the starter's child ends at once; the supervisor is nobody's child but init's
        os.setsid()  # a process group of its own: stopping it (killpg) takes the JVM, nothing else
    if len(argv) != 1:
        print("usage: python -m sparkflow.spark.connect_supervisor [--detach] SERVER_DIR", file=sys.stderr)
        return 2
    root = Path(argv[0])
    directory = ServerDirectory(root.parent, root.name)
    spec = directory.read_spec()
    if spec is None:
        print(f"sparkflow: no readable spec.json in {root}", file=sys.stderr)
        return 2
    return Supervisor(directory, spec).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
