"""A chain of 10 small dependent Spark SQL tasks on the demo's trip data, run in the same run as 10
SparkSubmitOperator tasks on local[2] and as 10 @task.pyspark tasks on a managed Spark Connect server (local[2]
behind it), each through `sparkflow trigger --wait` (local executor). Each task reads the trips CSV, counts the
trips of one pickup hour per day and writes that small result as CSV.

Prints the ratios (goals: the warm Connect chain >= 5x faster than the spark-submit chain, >= 2x including the
server's cold start), the server's start time (counted once, apart), the per-task overhead of a warm Connect task
(its wall time in the chain minus the time its Spark session was busy), and how long one warm @task.pyspark task
whose query takes ~0.2 s takes from trigger to success (goal <= 1 s). "Warm" there is a running `sparkflow
scheduler` whose fork server has run the DAG once (as in production), the server warm too; the figure is the run's
own logical date (set when `sparkflow trigger` creates it) to its end, from the metastore.

    nice python bench/spark_connect_chain.py [--rows 100000] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10
STEP = textwrap.dedent("""
    def count_hour(spark, trips, out, hour):
        hour_trips = spark.read.option("header", True).csv(trips).where(f"hour(pickup_datetime) = {hour}")
        per_day = hour_trips.selectExpr("to_date(pickup_datetime) AS day").groupBy("day").count()
        per_day.coalesce(1).write.mode("overwrite").option("header", True).csv(out)
""")
APP = "import sys\nfrom pyspark.sql import SparkSession\n" + STEP + textwrap.dedent("""
    spark = SparkSession.builder.appName("chain_step").getOrCreate()
    count_hour(spark, sys.argv[1], sys.argv[2], int(sys.argv[3]))
    spark.stop()
""")


def dag_files(dags: Path, app: Path, trips: Path, out: Path, steps: int) -> None:
    (dags / "chain_submit.py").write_text(textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, SparkSubmitOperator, chain

        with DAG("chain_submit", start_date=datetime(2024, 1, 1)) as dag:
            chain(*[SparkSubmitOperator(task_id=f"hour_{{h}}", application={str(app)!r}, conn_id="spark_bench",
                                        application_args=[{str(trips)!r}, f"{out}/submit/{{h}}", str(h)],
                                        conf={{"spark.sql.shuffle.partitions": "2",
                                              "spark.ui.showConsoleProgress": "false"}})
                    for h in range({steps})])
    """))
    (dags / "chain_connect.py").write_text(STEP + textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, chain, task

        def make(h):
            @task.pyspark(task_id=f"hour_{{h}}", conn_id="sc_bench",
                          config_kwargs={{"spark.sql.shuffle.partitions": "2"}})
            def step(spark, trips, out, hour):
                count_hour(spark, trips, out, hour)
            return step({str(trips)!r}, f"{out}/connect/{{h}}", h)

        with DAG("chain_connect", start_date=datetime(2024, 1, 1)) as dag:
            chain(*[make(h) for h in range({steps})])
    """))
    (dags / "one_connect.py").write_text(textwrap.dedent("""
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("one_connect", start_date=datetime(2024, 1, 1)) as dag:
            @task.pyspark(conn_id="sc_bench")
            def small(spark):
                return spark.range(0, 200_000, 1, 2).selectExpr("sum(id) AS s").first()["s"]

            small()
    """))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, base: Path, rows: int, steps: int) -> None:
        self.base = base
        self.home = base / "home"
        dags = base / "dags"
        dags.mkdir()
        trips = base / "trips.csv"
        subprocess.run([sys.executable, str(ROOT / "jobs" / "generate_trips.py"), str(trips), "--rows", str(rows)],
                       check=True, capture_output=True)
        app = base / "chain_app.py"
        app.write_text(APP)
        dag_files(dags, app, trips, base / "out", steps)
        connect = {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": free_port(),
                   "extra": {"managed": True, "master": "local[2]", "idle_timeout": 900}}
        self.env = {**os.environ, "SPARKFLOW_HOME": str(self.home), "SPARKFLOW_DAGS_FOLDER": str(dags),
                    "SPARKFLOW_CONN_SPARK_BENCH": "spark://local%5B2%5D",
                    "SPARKFLOW_CONN_SC_BENCH": json.dumps(connect),
                    "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
                    "PYSPARK_DRIVER_PYTHON": sys.executable}
        self.cli("db", "init")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "sparkflow", *args], env=self.env, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"sparkflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}"
                     f"{result.stderr[-2000:]}")
        return result

    def trigger(self, dag_id: str, run_id: str) -> float:
        start = time.perf_counter()
        self.cli("trigger", dag_id, "--wait", "--run-id", run_id)
        return time.perf_counter() - start

    def overheads(self, dag_id: str, run_id: str) -> list[float]:
        """Per task: its duration minus the time its Spark session was busy (recorded metrics)."""
        states = json.loads(self.cli("tasks", "states", dag_id, run_id, "-o", "json").stdout)
        found = []
        for state in states:
            metrics = json.loads(self.cli("tasks", "metrics", dag_id, run_id, state["task_id"], "-o", "json").stdout)
            busy = (metrics[-1].get("duration_ms") or 0) / 1000 if metrics else 0.0
            found.append(float(state["duration"]) - busy)
        return found

    def warm_single_runs(self, count: int) -> list[float]:
        """Trigger-to-success of one_connect under a running scheduler, ``count`` times after one warm-up run."""
        scheduler = subprocess.Popen([sys.executable, "-m", "sparkflow", "scheduler"], env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        spans = []
        try:
            for i in range(count + 1):
                run_id = f"daemon_{i}"
                self.trigger_when_parsed("one_connect", run_id)
                self.wait_run(run_id, scheduler)
                if i > 0:
                    spans.append(self.trigger_to_end("one_connect", run_id))
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            scheduler.wait(120)
        return spans

    def trigger_when_parsed(self, dag_id: str, run_id: str, timeout: float = 300) -> None:
        """``sparkflow trigger`` once the scheduler's DAG processor has stored the DAG."""
        deadline = time.monotonic() + timeout
        while True:
            result = subprocess.run([sys.executable, "-m", "sparkflow", "trigger", dag_id, "--run-id", run_id],
                                    env=self.env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                sys.exit(f"sparkflow trigger {dag_id} failed: {result.stderr[-2000:]}")
            time.sleep(1)

    def wait_run(self, run_id: str, scheduler: subprocess.Popen[bytes], timeout: float = 900) -> None:
        deadline = time.monotonic() + timeout
        with contextlib.closing(sqlite3.connect(self.home / "sparkflow.db", timeout=30)) as db:
            while time.monotonic() < deadline:
                row = db.execute("SELECT state FROM dag_run WHERE run_id = ?", (run_id,)).fetchone()
                if row and row[0] in ("success", "failed"):
                    if row[0] != "success":
                        sys.exit(f"run {run_id} ended {row[0]}; see {self.home / 'logs'}")
                    return
                if scheduler.poll() is not None:
                    sys.exit(f"the scheduler ended with code {scheduler.returncode}")
                time.sleep(0.2)
        sys.exit(f"run {run_id} did not end within {timeout:.0f} s")

    def trigger_to_end(self, dag_id: str, run_id: str) -> float:
        runs = json.loads(self.cli("runs", "list", dag_id, "-o", "json").stdout)
        run = next(r for r in runs if r["run_id"] == run_id)
        return (datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["logical_date"])).total_seconds()

    def server_start_seconds(self) -> float:
        record = json.loads((self.home / "spark-connect" / "sc_bench" / "server.json").read_text())
        return float(record["ready_at"]) - float(record["started_at"])

    def stop_server(self) -> None:
        subprocess.run([sys.executable, "-m", "sparkflow", "spark-connect", "stop", "sc_bench"], env=self.env,
                       capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS, help="tasks in each chain (the goal is set for 10)")
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="sparkflow-bench-connect-") as tmp:
        bench = Bench(Path(tmp), args.rows, args.steps)
        try:
            submit = bench.trigger("chain_submit", "submit_1")
            print(f"spark-submit chain ({args.steps} tasks):                {submit:7.1f} s", flush=True)
            cold = bench.trigger("chain_connect", "connect_cold")
            server_start = bench.server_start_seconds()
            print(f"Spark Connect chain, server cold (start included): {cold:7.1f} s "
                  f"(server start {server_start:.1f} s)", flush=True)
            warm_runs = [bench.trigger("chain_connect", f"connect_warm_{i}") for i in range(args.warm_runs)]
            warm = statistics.median(warm_runs)
            print(f"Spark Connect chain, server warm (median of {len(warm_runs)}): {warm:7.1f} s "
                  f"({', '.join(f'{w:.1f}' for w in warm_runs)})", flush=True)
            overhead = statistics.median(bench.overheads("chain_connect", f"connect_warm_{args.warm_runs - 1}"))
            spans = bench.warm_single_runs(5)
            span = statistics.median(spans)
        finally:
            bench.stop_server()
    print(f"per-task overhead of a warm @task.pyspark task (duration - busy session time, median): {overhead:.2f} s")
    print(f"one warm @task.pyspark task (~0.2 s query) under a running scheduler, trigger to success: median "
          f"{span:.2f} s ({', '.join(f'{x:.2f}' for x in spans)})")
    warm_ratio, cold_ratio = submit / warm, submit / cold
    print(f"ratio spark-submit chain / warm Connect chain: {warm_ratio:.2f}x (goal >= 5x: "
          f"{'met' if warm_ratio >= 5 else 'NOT met'})")
    print(f"ratio spark-submit chain / cold Connect chain: {cold_ratio:.2f}x (goal >= 2x: "
          f"{'met' if cold_ratio >= 2 else 'NOT met'})")
    print(f"warm task trigger-to-success <= 1 s: {span:.2f} s {'met' if span <= 1 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
