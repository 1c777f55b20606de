"""@task.pyspark on a real managed Spark Connect server (started once for the module by sparkflow itself, on
loopback), through the local executor: isolated sessions of parallel tries, per-try progress and metrics, an
execution_timeout that interrupts one try while another keeps running, a kill -9 of the server mid-run (that try
fails, its retry runs on a restarted server), the CLI, and the classic-session path on local[*].

Queries that take a while sleep inside Spark (``reflect('java.lang.Thread', 'sleep', ...)`` per row), so they hold a
job RUNNING on the server for a known time without Python workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sparkflow.definitions.loader import collect_dags
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.scheduler.loop import drive_run
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import load_settings
from sparkflow.spark.connect_config import ManagedServerSpec
from sparkflow.spark.connect_server import ServerDirectory, ServerRecord, acquire_server, stop_server
from tests.services import free_port

pytestmark = pytest.mark.spark
CONN_ID = "sc_test"


class SharedServer:
    def __init__(self, root: Path, conn: dict[str, Any]) -> None:
        self.root = root
        self.conn = conn
        self.directory = ServerDirectory(root, CONN_ID)

    def record(self) -> ServerRecord:
        record = self.directory.read_record()
        assert record is not None, self.directory.log_tail()
        return record

    def jobs(self) -> list[dict[str, Any]]:
        record = self.record()
        url = f"{record.ui_url}/api/v1/applications/{record.app_id}/jobs"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    """One managed server for the module, started the way a task starts it (acquire_server)."""
    root = tmp_path_factory.mktemp("spark-connect")
    port = free_port()
    extra = {"managed": True, "master": "local[2]", "idle_timeout": 900, "driver_memory": "1g",
             "conf": {"spark.sql.shuffle.partitions": "2", "spark.ui.showConsoleProgress": "false"}}
    conn = {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": port, "extra": extra}
    spec = ManagedServerSpec(conn_id=CONN_ID, bind_host="127.0.0.1", port=port, master="local[2]",
                             driver_memory="1g", conf=extra["conf"], idle_timeout=900)  # type: ignore[arg-type]
    directory = ServerDirectory(root, CONN_ID)
    _, _, lease = acquire_server(directory, spec, "tests", "fixture")
    lease.unlink()
    try:
        yield SharedServer(root, conn)
    finally:
        stop_server(directory)


@pytest.fixture
def connect_env(shared_server: SharedServer, metastore, monkeypatch) -> SharedServer:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SPARKFLOW_SPARK_CONNECT_DIR", str(shared_server.root))
    monkeypatch.setenv(f"SPARKFLOW_CONN_{CONN_ID.upper()}", json.dumps(shared_server.conn))
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    return shared_server


def run_dag(metastore, dags_folder: Path, dag_id: str, body: str):  # type: ignore[no-untyped-def]
    path = dags_folder / f"{dag_id}.py"
    path.write_text(textwrap.dedent(f"""
        from datetime import datetime, timedelta
        from sparkflow import DAG, task

        def sleep_rows(spark, rows, ms):
            # a job that stays RUNNING about rows * ms / 2 (local[2]) milliseconds
            # count(s) makes Spark evaluate s for every row (reflect gives a non-null string: n == rows)
            return spark.sql(f"SELECT count(s) AS n FROM (SELECT reflect('java.lang.Thread', "
                             f"'sleep', CAST({{ms}} AS BIGINT)) AS s FROM range(0, {{rows}}, 1, 2))").collect()[0]["n"]

        with DAG({dag_id!r}, start_date=datetime(2024, 1, 1)) as dag:
    """) + textwrap.indent(textwrap.dedent(body), "    "))
    bag = collect_dags(dags_folder, only_file=path)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    metastore.dags.sync_dags([dag], [], [str(path)])
    run = trigger_dag(metastore, dag, datetime.now(UTC))
    final = drive_run(load_settings(), metastore, dag, run, "local")
    return final, run


def task_log(settings, run, task_id: str, try_number: int = 1) -> str:  # type: ignore[no-untyped-def]
    from sparkflow.logs import task_log_path

    path = task_log_path(settings.resolved_log_folder, run.dag_id, run.run_id, task_id, try_number)
    return path.read_text() if path.exists() else f"(no log for {task_id} try {try_number})"


def test_parallel_tries_get_isolated_tagged_sessions_with_their_own_progress_and_metrics(
    connect_env: SharedServer, metastore, settings
) -> None:
    final, run = run_dag(metastore, settings.resolved_dags_folder, "connect_parallel", f"""
        @task.pyspark(conn_id={CONN_ID!r}, config_kwargs={{"spark.sql.shuffle.partitions": "3"}})
        def left(spark, sc, value: str) -> dict:
            spark.sql(f"SELECT '{{value}}' AS v").createOrReplaceTempView("shared_name")
            spark.conf.set("spark.sql.session.timeZone", "Asia/Tokyo")
            slept = sleep_rows(spark, 8, 1000)
            return {{"sc": sc is None, "view": spark.table("shared_name").first()["v"], "slept": slept,
                     "partitions": spark.conf.get("spark.sql.shuffle.partitions")}}

        @task.pyspark(conn_id={CONN_ID!r})
        def right(spark, value: str) -> dict:
            spark.sql(f"SELECT '{{value}}' AS v").createOrReplaceTempView("shared_name")
            sleep_rows(spark, 6, 1000)
            return {{"view": spark.table("shared_name").first()["v"],
                     "tz": spark.conf.get("spark.sql.session.timeZone")}}

        @task.pyspark(conn_id={CONN_ID!r})
        def after(spark) -> bool:
            return spark.catalog.tableExists("shared_name")

        l, r = left("L"), right(value="R")
        [l, r] >> after()
    """)
    assert final.state.value == "success", [task_log(settings, run, t) for t in ("left", "right", "after")]
    xcom = {t: queries.get_xcom(metastore.db, run.dag_id, run.run_id, t, "return_value").value
            for t in ("left", "right", "after")}
    assert xcom["left"] == {"sc": True, "view": "L", "slept": 8, "partitions": "3"}
    assert xcom["right"]["view"] == "R" and xcom["right"]["tz"] != "Asia/Tokyo"  # conf stays in its session
    assert xcom["after"] is False  # temp views die with the try's session

    record = connect_env.record()
    tis = {t: queries.get_task_instance(metastore.db, TIKey(run.dag_id, run.run_id, t)) for t in ("left", "right")}
    left_ti, right_ti = tis["left"], tis["right"]
    assert left_ti.start_date < right_ti.end_date and right_ti.start_date < left_ti.end_date  # they overlapped
    for ti in tis.values():
        assert ti.spark_app_id == record.app_id and ti.spark_ui_url == record.ui_url
    # Metrics and progress per try: each counts its own jobs only (left: sleep job + the others of its session).
    tries = {t: queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, t))[-1] for t in ("left", "right")}
    for task_id, one in tries.items():
        metrics = one.spark_metrics
        assert metrics and metrics["jobs"] >= 1 and metrics["succeeded"] is True, (task_id, metrics)
        log = task_log(settings, run, task_id)
        assert "Spark progress [" in log and "operations tagged 'sparkflow:connect_parallel:" in log
    tagged = {t: [j for j in connect_env.jobs() if any(f":{t}:" in tag for tag in j.get("jobTags", ()))]
              for t in ("left", "right")}
    assert tries["left"].spark_metrics["jobs"] == len(tagged["left"])
    assert tries["right"].spark_metrics["jobs"] == len(tagged["right"])


def test_execution_timeout_interrupts_only_that_tries_operations(connect_env: SharedServer, metastore,
                                                                   settings) -> None:
    final, run = run_dag(metastore, settings.resolved_dags_folder, "connect_timeout", f"""
        # 15 s: the Connect client's imports take seconds on a busy machine; its query must be running by then
        @task.pyspark(conn_id={CONN_ID!r}, execution_timeout=timedelta(seconds=15), retries=0)
        def too_slow(spark):
            return sleep_rows(spark, 240, 1000)  # two minutes

        @task.pyspark(conn_id={CONN_ID!r})
        def steady(spark):
            return sleep_rows(spark, 50, 1000)  # 25 s, through the other's kill

        too_slow()
        steady()
    """)
    slow = queries.get_task_instance(metastore.db, TIKey(run.dag_id, run.run_id, "too_slow"))
    steady = queries.get_task_instance(metastore.db, TIKey(run.dag_id, run.run_id, "steady"))
    assert slow.state.value == "failed" and steady.state.value == "success", task_log(settings, run, "steady")
    assert (slow.end_date - slow.start_date).total_seconds() < 15 + 10
    assert steady.end_date > slow.end_date  # it was running when the other was interrupted
    log = task_log(settings, run, "too_slow")
    assert "exceeded its execution_timeout" in log and "Spark Connect operation(s) of this try" in log
    slow_jobs = [j for j in connect_env.jobs() if any(":too_slow:" in t for t in j.get("jobTags", ()))]
    assert all(j["status"] != "RUNNING" for j in slow_jobs)  # interrupted, not left running on the server
    steady_jobs = [j for j in connect_env.jobs() if any(":steady:" in t for t in j.get("jobTags", ()))]
    assert steady_jobs and all(j["status"] == "SUCCEEDED" for j in steady_jobs)


def test_unmanaged_connection_finds_the_servers_ui_or_says_why_there_is_no_progress(
    connect_env: SharedServer, metastore, settings, monkeypatch
) -> None:
    """A server sparkflow did not start for this connection (the shared one, reached as a plain sc:// address):
    its UI is found from the session's view of the server's conf; one that does not answer gets a note."""
    record = connect_env.record()
    plain = {"conn_type": "spark_connect", "host": "sc://127.0.0.1", "port": record.port}
    monkeypatch.setenv("SPARKFLOW_CONN_SC_PLAIN", json.dumps(plain))
    monkeypatch.setenv("SPARKFLOW_CONN_SC_NO_UI", json.dumps(
        {**plain, "extra": {"ui_url": f"http://127.0.0.1:{free_port()}"}}))
    final, run = run_dag(metastore, settings.resolved_dags_folder, "connect_unmanaged", """
        @task.pyspark(conn_id="sc_plain")
        def plain(spark):
            return sleep_rows(spark, 6, 1000)

        @task.pyspark(conn_id="sc_no_ui")
        def no_ui(spark):
            return spark.range(5).count()

        plain() >> no_ui()
    """)
    logs = {t: task_log(settings, run, t) for t in ("plain", "no_ui")}
    assert final.state.value == "success", logs
    plain_try = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "plain"))[-1]
    assert plain_try.spark_app_id == record.app_id and plain_try.spark_ui_url == record.ui_url
    assert plain_try.spark_metrics and plain_try.spark_metrics["jobs"] >= 1, logs["plain"]
    assert "Spark progress [" in logs["plain"]
    assert "No live Spark progress or metrics for this try" in logs["no_ui"] and "ui_url" in logs["no_ui"]
    no_ui_try = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "no_ui"))[-1]
    assert no_ui_try.spark_metrics is None and no_ui_try.spark_app_id is None


def test_cli_status_start_stop_see_the_managed_server(connect_env: SharedServer, metastore) -> None:
    env = {**os.environ}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sparkflow", "spark-connect", *args], env=env,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)

    record = connect_env.record()
    status = cli("status", CONN_ID, "-o", "json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)[0]
    assert row["state"] == "running" and row["pid"] == record.server_pid and row["spark_ui_url"] == record.ui_url
    started = cli("start", CONN_ID)  # found running: reused, not a second server
    assert started.returncode == 0 and "Already running" in started.stdout
    assert connect_env.record() == record
    wrong = cli("start", "nope")
    assert wrong.returncode == 2 and "nope" in wrong.stderr


def test_server_killed_mid_run_fails_that_try_and_its_retry_runs_on_a_restarted_server(
    connect_env: SharedServer, metastore, settings
) -> None:
    before = connect_env.record()

    def kill_when_running() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if any(j["status"] == "RUNNING" and any(":victim:" in t for t in j.get("jobTags", ()))
                       for j in connect_env.jobs()):
                    os.kill(before.server_pid, signal.SIGKILL)
                    return
            except OSError:
                pass
            time.sleep(0.3)

    killer = threading.Thread(target=kill_when_running, daemon=True)
    killer.start()
    final, run = run_dag(metastore, settings.resolved_dags_folder, "connect_restart", f"""
        @task.pyspark(conn_id={CONN_ID!r}, retries=1, retry_delay=timedelta(0))
        def victim(spark):
            return sleep_rows(spark, 20, 1000)

        victim()
    """)
    killer.join(1)
    first, second = task_log(settings, run, "victim", 1), task_log(settings, run, "victim", 2)
    assert final.state.value == "success", (first, second)
    tries = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "victim"))
    assert [(t.try_number, t.state.value) for t in tries] == [(1, "up_for_retry"), (2, "success")], (first, second)
    assert "ConnectServerLost" in first and "failed during this try" in first
    assert "Restarting the Spark Connect server of" in second or "Starting a Spark Connect server" in second
    after = connect_env.record()
    assert after.server_pid != before.server_pid and after.port == before.port
    assert queries.get_xcom(metastore.db, run.dag_id, run.run_id, "victim", "return_value").value == 20


def test_classic_session_on_local_mode_gets_spark_and_sc_in_the_task_process(metastore, settings,
                                                                              monkeypatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_LOCAL1", json.dumps({"conn_type": "spark", "host": "local[1]"}))
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    final, run = run_dag(metastore, settings.resolved_dags_folder, "classic_session", """
        @task.pyspark(conn_id="spark_local1", config_kwargs={"spark.ui.showConsoleProgress": "false"})
        def classic(spark, sc, n: int) -> list:
            return [sc.master, sc.parallelize(range(n), 2).sum(), spark.range(n).count()]

        classic(10)
    """)
    assert final.state.value == "success", task_log(settings, run, "classic")
    assert queries.get_xcom(metastore.db, run.dag_id, run.run_id, "classic", "return_value").value == [
        "local[1]", 45, 10]
    one = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "classic"))[-1]
    assert one.spark_app_id.startswith("local-") and one.spark_metrics["jobs"] >= 2


PIPELINE_SPEC = """
name: trips_pipeline
storage: {storage}
libraries:
  - glob:
      include: transformations/**
"""


def test_pipeline_spec_runs_on_the_managed_server_and_on_a_standalone_master(
    connect_env: SharedServer, spark_cluster, metastore, settings, tmp_path: Path, monkeypatch  # type: ignore[no-untyped-def]
) -> None:
    project = tmp_path / "pipeline"
    (project / "transformations").mkdir(parents=True)
    (project / "spark-pipeline.yml").write_text(PIPELINE_SPEC.format(storage=(tmp_path / "storage").as_uri()))
    (project / "transformations" / "numbers.sql").write_text(
        "CREATE MATERIALIZED VIEW numbers AS SELECT id, id % 3 AS k FROM range(30);\n"
        "CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM numbers GROUP BY k;\n")
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_CLUSTER", spark_cluster.master_url)
    monkeypatch.chdir(tmp_path)  # the launcher's driver keeps its tables in ./spark-warehouse of the task's cwd
    spec = str(project / "spark-pipeline.yml")
    final, run = run_dag(metastore, settings.resolved_dags_folder, "pipelines", f"""
        from sparkflow import SparkPipelinesOperator

        on_server = SparkPipelinesOperator(task_id="on_server", pipeline_spec={spec!r}, conn_id={CONN_ID!r})
        standalone = SparkPipelinesOperator(
            task_id="standalone", pipeline_spec={spec!r}, pipeline_command="run", conn_id="spark_cluster",
            executor_memory="512m", conf={{"spark.ui.showConsoleProgress": "false", "spark.cores.max": "1",
                                           "spark.sql.shuffle.partitions": "2"}})
        on_server >> standalone
    """)
    logs = {t: task_log(settings, run, t) for t in ("on_server", "standalone")}
    assert final.state.value == "success", logs
    assert "spark-pipelines run finished with code 0" in logs["on_server"]
    assert "Run is COMPLETED" in logs["on_server"]
    server_try = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "on_server"))[-1]
    assert server_try.spark_app_id == connect_env.record().app_id and server_try.spark_metrics["jobs"] >= 1
    pipeline_jobs = [j for j in connect_env.jobs()
                     if any("_User_sparkflow-pipelines-on_server-try1_" in t for t in j.get("jobTags", ()))]
    assert len(pipeline_jobs) == server_try.spark_metrics["jobs"]
    # The launcher's driver ran on the standalone master
    assert "spark-pipelines finished with code 0" in logs["standalone"] and "Run is COMPLETED" in logs["standalone"]
    assert f"--remote {spark_cluster.master_url}" in logs["standalone"]
    # ... and its try recorded the application, its UI and its metrics, as a spark-submit try does
    standalone_try = queries.task_tries(metastore.db, TIKey(run.dag_id, run.run_id, "standalone"))[-1]
    assert standalone_try.spark_app_id and standalone_try.spark_app_id.startswith("app-"), logs["standalone"]
    assert standalone_try.spark_ui_url and standalone_try.spark_metrics, logs["standalone"]
    assert standalone_try.spark_metrics["app_id"] == standalone_try.spark_app_id
    assert standalone_try.spark_metrics["tasks"] >= 2 and standalone_try.spark_metrics["succeeded"]
