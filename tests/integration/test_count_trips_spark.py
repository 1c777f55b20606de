"""The demo DAG for real: `sparkflow trigger count_trips_sql --wait` with the real spark-submit from pyspark in
local mode, through the local executor (a process per task). One spark-submit (~25 s on 2 cores)."""

from __future__ import annotations

import collections
import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.spark


def sparkflow(env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sparkflow", *args], env=env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_count_trips_sql_runs_end_to_end_with_real_spark_submit(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFLOW_")}
    env.update(SPARKFLOW_HOME=str(home), SPARKFLOW_DAGS_FOLDER=str(ROOT / "jobs"), SPARK_LOCAL_IP="127.0.0.1")
    trips = home / "data" / "fhvhv_tripdata_2024-01.csv"
    subprocess.run([sys.executable, str(ROOT / "jobs" / "generate_trips.py"), str(trips), "--rows", "5000"],
                   check=True, capture_output=True)
    assert sparkflow(env, "db", "init").returncode == 0
    assert sparkflow(env, "connections", "import", str(ROOT / "conf" / "connections.yaml")).returncode == 0

    result = sparkflow(env, "trigger", "count_trips_sql", "--wait", "--run-id", "it_run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "submit_job -> success" in out and "report_busiest_days -> success" in out
    assert "submit_job | " in out and "SparkContext" in out  # Spark's own log lines were followed live
    assert "Busiest days: " in out

    expected = collections.Counter()
    with trips.open(newline="") as fh:
        for row in csv.DictReader(fh):
            expected[row["pickup_datetime"][:10]] += 1

    states = json.loads(sparkflow(env, "tasks", "states", "count_trips_sql", "it_run", "-o", "json").stdout)
    by_task = {s["task_id"]: s for s in states}
    assert {t: s["state"] for t, s in by_task.items()} == {
        "check_input": "success", "submit_job": "success", "report_busiest_days": "success",
    }
    assert by_task["submit_job"]["spark_ui_url"].startswith("http://127.0.0.1:")
    assert by_task["submit_job"]["pid"] and by_task["submit_job"]["duration"] > 0

    # The Python task read what Spark wrote; its XCom is the per-day count, equal to counting the CSV here.
    db = sqlite3_rows(home / "sparkflow.db",
                      "SELECT value FROM xcom WHERE task_id = 'report_busiest_days' AND key = 'return_value'")
    assert json.loads(db[0][0]) == dict(expected)

    # The application id (from the event log in local mode) and the metrics of the try are on record.
    assert by_task["submit_job"]["spark_app_id"].startswith("local-")
    metrics_out = sparkflow(env, "tasks", "metrics", "count_trips_sql", "it_run", "submit_job", "-o", "json")
    metrics = json.loads(metrics_out.stdout)
    assert metrics[0]["spark_app_id"] == by_task["submit_job"]["spark_app_id"]
    assert metrics[0]["succeeded"] is True and metrics[0]["input_records"] >= 5000 and metrics[0]["jobs"] >= 2

    logs = sparkflow(env, "logs", "count_trips_sql", "it_run", "submit_job")
    assert logs.returncode == 0 and "spark-submit finished with code 0" in logs.stdout


def sqlite3_rows(path: Path, query: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query).fetchall()
