"""SparkPipelinesOperator with the wheel's real spark-pipelines launcher on local[2]: one DAG runs two pipelines,
one to its end (app id, UI link, progress and metrics recorded on its try), then one marked failed by hand once
its task shows a job running (live app id and progress), after which no process of either is left. (One after
the other: the pipelines CLI always reaches its driver on port 15002.)

The standalone master and the Spark Connect server variants share their clusters in test_spark_connect.py."""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sparkflow.definitions.loader import collect_dags
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.scheduler.interventions import mark
from sparkflow.scheduler.loop import drive_run
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import load_settings
from sparkflow.state import TaskState
from tests.integration.test_spark_connect import PIPELINE_SPEC, task_log

pytestmark = pytest.mark.spark

NUMBERS_SQL = ("CREATE MATERIALIZED VIEW numbers AS SELECT id, id % 3 AS k FROM range(30);\n"
               "CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM numbers GROUP BY k;\n")
# One job that stays RUNNING for minutes (each of 600 rows sleeps 1 s, two at a time) unless it is killed.
SLOW_SQL = ("CREATE MATERIALIZED VIEW slow AS SELECT count(s) AS n FROM (SELECT reflect('java.lang.Thread', 'sleep',"
            " CAST(1000 AS BIGINT)) AS s FROM range(0, 600, 1, 2));\n")
DEADLINE = 300.0


def write_project(root: Path, sql: str) -> str:
    (root / "transformations").mkdir(parents=True)
    (root / "spark-pipeline.yml").write_text(PIPELINE_SPEC.format(storage=(root / "storage").as_uri()))
    (root / "transformations" / "flows.sql").write_text(sql)
    return str(root / "spark-pipeline.yml")


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(f"{entry}: {cmdline[:200]}")
    return found


def test_a_pipeline_try_records_app_id_progress_and_metrics_and_a_kill_leaves_no_jvm(
    metastore, settings, tmp_path: Path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_LOCAL2", json.dumps({"conn_type": "spark", "host": "local[2]"}))
    monkeypatch.chdir(tmp_path)  # the drivers keep their tables in ./spark-warehouse of the task's cwd
    quick = write_project(tmp_path / "quick", NUMBERS_SQL)
    slow = write_project(tmp_path / "slow", SLOW_SQL)
    dags_folder = settings.resolved_dags_folder
    path = dags_folder / "pipelines_local.py"
    path.write_text(textwrap.dedent(f"""
        from datetime import datetime
        from sparkflow import DAG, SparkPipelinesOperator

        with DAG("pipelines_local", start_date=datetime(2024, 1, 1)) as dag:
            conf = {{"spark.ui.showConsoleProgress": "false", "spark.sql.shuffle.partitions": "2"}}
            quick = SparkPipelinesOperator(task_id="quick", pipeline_spec={quick!r}, conn_id="spark_local2",
                                           conf=conf, status_poll_interval=0.5)
            slow = SparkPipelinesOperator(task_id="slow", pipeline_spec={slow!r}, conn_id="spark_local2", conf=conf,
                                          status_poll_interval=0.5, retries=0)
            quick >> slow
    """))
    bag = collect_dags(dags_folder, only_file=path)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["pipelines_local"]
    metastore.dags.sync_dags([dag], [], [str(path)])
    run = trigger_dag(metastore, dag, datetime.now(UTC))
    slow_key = TIKey(run.dag_id, run.run_id, "slow")
    seen_while_running: list[object] = []

    def mark_failed_once_a_job_runs() -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            latest = queries.get_task_instance(metastore.db, slow_key)
            if latest.spark_app_id and (latest.spark_progress or {}).get("jobs_running"):
                seen_while_running.append(latest)
                mark(metastore, slow_key, TaskState.FAILED, "test")
                return
            time.sleep(0.5)

    marker = threading.Thread(target=mark_failed_once_a_job_runs, daemon=True)
    marker.start()
    final = drive_run(load_settings(), metastore, dag, run, "local")
    marker.join(5)
    logs = {t: task_log(settings, run, t) for t in ("quick", "slow")}

    quick_try = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "quick"))[-1]
    assert quick_try.state is TaskState.SUCCESS, logs["quick"]
    assert quick_try.spark_app_id and quick_try.spark_app_id.startswith("local-"), logs["quick"]
    assert quick_try.spark_ui_url and quick_try.spark_ui_url.startswith("http://127.0.0.1:"), logs["quick"]
    metrics = quick_try.spark_metrics or {}
    assert metrics.get("app_id") == quick_try.spark_app_id and metrics["jobs"] >= 2 and metrics["tasks"] >= 2
    assert metrics["succeeded"] and metrics["shuffle_write_records"] > 0, metrics
    quick_ti = queries.get_task_instance(metastore.db, TIKey(run.dag_id, run.run_id, "quick"))
    assert (quick_ti.spark_progress or {}).get("jobs_done") == metrics["jobs"]
    assert "spark-pipelines finished with code 0" in logs["quick"] and "Spark metrics:" in logs["quick"]
    assert "Spark progress [" in logs["quick"]

    # The slow try had its app id and a running job recorded while it ran; the mark ended it and its JVMs
    assert seen_while_running, logs["slow"]
    slow_try = queries.task_tries(metastore.db, slow_key)[-1]
    assert slow_try.state is TaskState.FAILED and final.state.value == "failed", logs["slow"]
    assert slow_try.spark_app_id == seen_while_running[0].spark_app_id  # type: ignore[attr-defined]
    assert processes_mentioning(str(tmp_path)) == []
