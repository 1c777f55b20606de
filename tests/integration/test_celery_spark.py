"""The demo DAG scaled out: count_trips_sql with the CeleryExecutor (a `sparkflow worker` process), the PostgreSQL
metastore and a real Spark standalone cluster on loopback (conn spark_local overridden to spark://...). Spark's
progress is polled by the submitting worker's task process; the metrics come from the try's event log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sparkflow.metastore import queries
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TIKey
from sparkflow.state import TaskState
from tests.integration.deployment import Deployment

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.celery, pytest.mark.postgres, pytest.mark.spark]


def test_count_trips_sql_on_celery_postgres_and_a_spark_cluster(tmp_path, pg_server, redis_server,  # type: ignore[no-untyped-def]
                                                               spark_cluster) -> None:
    deploy = Deployment(tmp_path, pg_server, redis_server, SPARKFLOW_DAGS_FOLDER=str(ROOT / "jobs"),
                        SPARKFLOW_CONN_SPARK_LOCAL=spark_cluster.master_url)
    db = Database(deploy.env["SPARKFLOW_DB_URL"])
    try:
        trips = Path(deploy.env["SPARKFLOW_HOME"]) / "data" / "fhvhv_tripdata_2024-01.csv"
        subprocess.run([sys.executable, str(ROOT / "jobs" / "generate_trips.py"), str(trips), "--rows", "5000"],
                       check=True, capture_output=True)
        assert deploy.cli("db", "init").returncode == 0
        imported = deploy.cli("connections", "import", str(ROOT / "conf" / "connections.yaml"))
        assert imported.returncode == 0, imported.stderr
        deploy.start_worker("w1", concurrency=2)

        result = deploy.cli("trigger", "count_trips_sql", "--wait", "--run-id", "celery_run", timeout=400)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + deploy.all_logs()
        assert "report_busiest_days -> success" in result.stdout and "Busiest days: " in result.stdout

        ti = queries.get_task_instance(db, TIKey("count_trips_sql", "celery_run", "submit_job"))
        assert ti.state is TaskState.SUCCESS and ti.executor == "celery"
        assert ti.spark_app_id and ti.spark_app_id.startswith("app-")
        assert ti.spark_progress and ti.spark_progress["jobs_total"] >= 1
        assert ti.spark_progress["jobs_done"] == ti.spark_progress["jobs_total"]
        assert ti.spark_metrics and ti.spark_metrics["succeeded"] is True and ti.spark_metrics["tasks"] >= 1
        assert ti.spark_app_id in {app["id"] for app in spark_cluster.state()["completedapps"]}  # ran on the cluster
        logs = deploy.cli("logs", "count_trips_sql", "celery_run", "submit_job")  # written by the worker
        assert logs.returncode == 0 and "spark-submit finished with code 0" in logs.stdout
        assert spark_cluster.master_url in logs.stdout
        assert "w1@" in (Path(deploy.env["SPARKFLOW_HOME"]).parent / "w1.log").read_text()
    finally:
        db.dispose()
        deploy.stop()
