"""A multi-process sparkflow deployment on loopback for the Celery/PostgreSQL tests: one PostgreSQL database, one
Redis (broker and result backend), `sparkflow worker` and `sparkflow scheduler` processes sharing a home, a DAG
folder and a log folder, each started with ``python -m sparkflow`` exactly as a user would."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.services import PostgresServer, RedisServer

_redis_dbs = itertools.count(0)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, logs: list[Path] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs or [] if p.exists())
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tails}")


class Deployment:
    def __init__(self, base: Path, pg: PostgresServer, redis: RedisServer, **settings: str) -> None:
        self.base = base
        self.pg = pg
        self.database = pg.create_database()
        broker_db = next(_redis_dbs) % 8 * 2
        self.dags = base / "dags"
        self.dags.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKFLOW_", "AIRFLOW_CONN_"))}
        self.env.update({
            "SPARKFLOW_HOME": str(base / "home"),
            "SPARKFLOW_DAGS_FOLDER": str(self.dags),
            "SPARKFLOW_LOG_FOLDER": str(base / "logs"),  # shared by workers, schedulers and the CLI
            "SPARKFLOW_DB_URL": pg.url(self.database),
            "SPARKFLOW_EXECUTOR": "celery",
            "SPARKFLOW_CELERY_BROKER_URL": redis.url(broker_db),
            "SPARKFLOW_CELERY_RESULT_BACKEND": redis.url(broker_db + 1),
            "SPARKFLOW_LOAD_DEFAULT_CONNECTIONS": "false",
            "SPARKFLOW_HEARTBEAT_INTERVAL": "0.5",
            # Also how long a queued task may wait in the broker before a scheduler adopts it as lost.
            "SPARKFLOW_HEARTBEAT_TIMEOUT": "60",
            "SPARKFLOW_SCHEDULER_LOOP_INTERVAL": "0.1",
            "SPARKFLOW_DAG_PARSE_INTERVAL": "2",
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYTHONWARNINGS": "ignore:You're running the worker with superuser privileges",
            **settings,
        })
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sparkflow", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.base / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "sparkflow", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[name], self.logs[name] = proc, log
        return proc

    def start_worker(self, name: str, concurrency: int = 2, queues: str = "default") -> subprocess.Popen[bytes]:
        proc = self._start(name, "worker", "-q", queues, "-c", str(concurrency), "-H", f"{name}@%h")
        wait_for(lambda: " ready." in self.logs[name].read_text(errors="replace") or proc.poll() is not None, 60,
                 f"worker {name}", [self.logs[name]])
        assert proc.poll() is None, self.logs[name].read_text()
        return proc

    def start_scheduler(self, name: str) -> subprocess.Popen[bytes]:
        return self._start(name, "scheduler")

    def all_logs(self) -> str:
        return "\n".join(f"--- {n}\n{p.read_text(errors='replace')[-4000:]}" for n, p in self.logs.items())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.pg.drop_database(self.database)
