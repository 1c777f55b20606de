"""A real Spark standalone cluster on loopback (master with its REST server, one 2-core worker), started once per
test session from the pyspark wheel's spark-class (the wheel has no start-master.sh) and stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyspark
import pytest


@dataclass(frozen=True)
class SparkCluster:
    master_url: str  # spark://127.0.0.1:PORT
    ui_url: str  # master web UI (JSON at /json/)
    rest_url: str  # REST submission server
    work_dir: Path

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.ui_url}/json/", timeout=5) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, logs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.5)
    tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in logs if p.exists())
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{tails}")


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    base = tmp_path_factory.mktemp("spark-cluster")
    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    ports = {name: _free_port() for name in ("master", "ui", "rest", "worker_ui")}
    conf = base / "master.conf"
    conf.write_text("\n".join([
        "spark.master.rest.enabled true", "spark.master.rest.host 127.0.0.1",
        f"spark.master.rest.port {ports['rest']}", "spark.port.maxRetries 0", "",
    ]))
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(spark_class.parent.parent)}
    master_log, worker_log = base / "master.log", base / "worker.log"
    procs = []
    try:
        with master_log.open("wb") as out:
            procs.append(subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(ports["master"]), "--webui-port", str(ports["ui"]), "--properties-file", str(conf)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            ))
        cluster = SparkCluster(
            master_url=f"spark://127.0.0.1:{ports['master']}", ui_url=f"http://127.0.0.1:{ports['ui']}",
            rest_url=f"http://127.0.0.1:{ports['rest']}", work_dir=base / "work",
        )
        _wait(lambda: cluster.state()["status"] == "ALIVE", 90, "the Spark master", [master_log])
        with worker_log.open("wb") as out:
            procs.append(subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", cluster.master_url, "--host",
                 "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(ports["worker_ui"]),
                 "--work-dir", str(cluster.work_dir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            ))
        _wait(lambda: cluster.state()["aliveworkers"] >= 1, 90, "a Spark worker", [master_log, worker_log])
        yield cluster
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
