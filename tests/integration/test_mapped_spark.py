"""A mapped SparkSubmitOperator on real spark-submit (local mode, local executor): three instances from one
`.partial(...).expand(application_args=...)`, each with its own application id and metrics, and an asset event
whose extra carries them. Three small spark-submits, two at a time: about a minute on an idle 2-core machine,
several on a busy one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

APP = Path(__file__).parent / "apps" / "write_rows.py"
pytestmark = pytest.mark.spark


def sparkflow(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sparkflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_mapped_spark_submit_instances_have_their_own_app_ids_and_metrics(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    (home / "dags").mkdir(parents=True)
    (home / "dags" / "mapped_spark.py").write_text(textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, Asset, SparkSubmitOperator

        with DAG("mapped_spark", start_date=datetime(2024, 1, 1), max_active_tasks=2) as dag:
            SparkSubmitOperator.partial(
                task_id="write", conn_id="spark_local", application={str(APP)!r}, driver_memory="512m",
                conf={{"spark.sql.shuffle.partitions": "1", "spark.default.parallelism": "1"}},
                outlets=[Asset("file://{out}", extra={{"format": "csv"}})],
            ).expand(application_args=[["10", {str(out / "a")!r}], ["20", {str(out / "b")!r}],
                                       ["30", {str(out / "c")!r}]])
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFLOW_")}
    env.update(SPARKFLOW_HOME=str(home), SPARKFLOW_DAGS_FOLDER=str(home / "dags"), SPARK_LOCAL_IP="127.0.0.1")
    assert sparkflow(env, "db", "init").returncode == 0
    assert sparkflow(env, "connections", "add", "spark_local", "--conn-type", "spark",
                     "--conn-host", "local[1]").returncode == 0

    result = sparkflow(env, "trigger", "mapped_spark", "--wait", "--run-id", "fan")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "write[2] -> success" in result.stdout

    states = json.loads(sparkflow(env, "tasks", "states", "mapped_spark", "fan", "-o", "json").stdout)
    instances = sorted((s for s in states if s["task_id"] == "write"), key=lambda s: s["map_index"])
    assert [(s["map_index"], s["state"]) for s in instances] == [(0, "success"), (1, "success"), (2, "success")]
    app_ids = [s["spark_app_id"] for s in instances]
    assert all(a and a.startswith("local-") for a in app_ids) and len(set(app_ids)) == 3

    for i, rows in enumerate((10, 20, 30)):
        metrics = json.loads(sparkflow(env, "tasks", "metrics", "mapped_spark", "fan", "write", "--map-index",
                                       str(i), "-o", "json").stdout)
        assert metrics[0]["map_index"] == i and metrics[0]["spark_app_id"] == app_ids[i]
        assert metrics[0]["succeeded"] is True and metrics[0]["output_records"] == rows
        log = sparkflow(env, "logs", "mapped_spark", "fan", "write", "--map-index", str(i)).stdout
        assert "spark-submit finished with code 0" in log and f"write_rows.py {rows}" in log

    events = json.loads(sparkflow(env, "assets", "events", f"file://{out}", "-o", "json").stdout)
    assert sorted((e["source_map_index"], e["extra"]["spark_app_id"], e["extra"]["output_records"],
                   e["extra"]["format"]) for e in events) == [
        (i, app_ids[i], rows, "csv") for i, rows in enumerate((10, 20, 30))]
    assert all(e["extra"]["output_bytes"] > 0 for e in events)
