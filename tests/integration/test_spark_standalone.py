"""SparkSubmitOperator against a real standalone cluster on loopback, through the local executor (a process per
task): the app id, live progress and metrics land on the task instance; a timeout kills the application."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sparkflow.definitions.loader import collect_dags
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.scheduler.loop import drive_run
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.settings import load_settings
from sparkflow.state import RunState, TaskState

pytestmark = pytest.mark.spark
SLOW_APP = Path(__file__).parent / "apps" / "slow_app.py"


def run_spark_dag(metastore, dags_folder: Path, dag_id: str, body: str, dag_args: str = ""):  # type: ignore[no-untyped-def]
    path = dags_folder / f"{dag_id}.py"
    path.write_text(textwrap.dedent(f"""
        from datetime import datetime, timedelta
        from sparkflow import DAG, SparkSubmitOperator

        with DAG({dag_id!r}, start_date=datetime(2024, 1, 1){dag_args}) as dag:
    """) + textwrap.indent(textwrap.dedent(body), "    "))
    bag = collect_dags(dags_folder, only_file=path)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags[dag_id]
    metastore.dags.sync_dags([dag], [], [str(path)])
    run = trigger_dag(metastore, dag, datetime.now(UTC))
    started = time.monotonic()
    final = drive_run(load_settings(), metastore, dag, run, "local")
    return final, time.monotonic() - started


@pytest.fixture
def cluster_env(spark_cluster, metastore, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_CLUSTER", spark_cluster.master_url)
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    return spark_cluster


def test_client_mode_records_app_id_progress_and_metrics(cluster_env, metastore, settings) -> None:
    """The 20 s job shows in the progress at once from the event log, and per stage from the driver's REST API
    once it has run 10 s (REST_AFTER_JOB_SECONDS); the short SQL job after it never needs REST."""
    final, _ = run_spark_dag(metastore, settings.resolved_dags_folder, "standalone_ok", f"""
        SparkSubmitOperator(task_id="slow", application={str(SLOW_APP)!r}, application_args=["20"],
                            conn_id="spark_cluster", name="slow_app", executor_memory="512m",
                            total_executor_cores=2, status_poll_interval=1)
    """)
    ti = queries.get_task_instance(metastore.db, TIKey("standalone_ok", final.run_id, "slow"))
    log = Path(ti.log_path).read_text()
    assert final.state is RunState.SUCCESS, log[-3000:]
    assert ti.spark_app_id and ti.spark_app_id.startswith("app-")
    assert ti.spark_ui_url and ti.spark_ui_url.startswith("http://127.0.0.1:")
    before_rest, switch, after_rest = log.partition("Following Spark progress through the driver's REST API")
    assert switch, log[-3000:]
    assert "Spark progress [--------------------]   0% jobs 0/1, tasks 0/2" in before_rest  # from the event log
    assert "stage 0 (sum at " in after_rest.split("Spark metrics:")[0]  # the running stage, polled from REST
    assert ti.spark_progress["jobs_total"] >= 2 and ti.spark_progress["jobs_done"] == ti.spark_progress["jobs_total"]
    metrics = ti.spark_metrics
    assert metrics["app_id"] == ti.spark_app_id and metrics["succeeded"] is True
    assert metrics["tasks"] >= 3 and metrics["executor_run_time_ms"] >= 2 * 20000 * 0.9
    tries = queries.task_tries(metastore.db, ti.key)
    assert tries[-1].spark_metrics == metrics and tries[-1].spark_app_id == ti.spark_app_id
    completed = {app["id"]: app for app in cluster_env.state()["completedapps"]}
    assert ti.spark_app_id in completed


def test_timeout_kills_the_application_on_the_cluster(cluster_env, metastore, settings) -> None:
    final, elapsed = run_spark_dag(metastore, settings.resolved_dags_folder, "standalone_kill", f"""
        SparkSubmitOperator(task_id="slow", application={str(SLOW_APP)!r}, application_args=["300"],
                            conn_id="spark_cluster", name="slow_app_killed", executor_memory="512m",
                            total_executor_cores=2, execution_timeout=timedelta(seconds=30))
    """)
    ti = queries.get_task_instance(metastore.db, TIKey("standalone_kill", final.run_id, "slow"))
    assert final.state is RunState.FAILED and ti.state is TaskState.FAILED
    assert "execution_timeout" in ti.error
    assert elapsed < 30 + 25  # the task ended within seconds of its timeout, not after the 300 s job
    assert_gone_from_the_cluster(cluster_env, ti.spark_app_id)


def test_dagrun_timeout_skips_the_task_and_kills_the_application_on_the_cluster(cluster_env, metastore, settings):
    """The run's time-out comes from the scheduler, not from inside the task (SIGTERM to the task's process group,
    as `tasks mark` sends): the application goes all the same."""
    final, elapsed = run_spark_dag(metastore, settings.resolved_dags_folder, "standalone_run_timeout", f"""
        SparkSubmitOperator(task_id="slow", application={str(SLOW_APP)!r}, application_args=["300"],
                            conn_id="spark_cluster", name="slow_app_run_timeout", executor_memory="512m",
                            total_executor_cores=2)
    """, dag_args=", dagrun_timeout=timedelta(seconds=30)")
    ti = queries.get_task_instance(metastore.db, TIKey("standalone_run_timeout", final.run_id, "slow"))
    log = Path(ti.log_path).read_text()
    assert final.state is RunState.FAILED and ti.state is TaskState.SKIPPED, log[-3000:]
    assert "dagrun_timeout of 0:00:30; the scheduler skipped the task (process group" in log
    assert elapsed < 30 + 25
    assert_gone_from_the_cluster(cluster_env, ti.spark_app_id)


def assert_gone_from_the_cluster(cluster, app_id: str | None) -> None:
    assert app_id and app_id.startswith("app-")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        active = [app["id"] for app in cluster.state()["activeapps"]]
        if app_id not in active:
            break
        time.sleep(0.5)
    assert app_id not in active, "the application still runs on the cluster"


def test_python_app_in_cluster_mode_goes_through_the_rest_server(cluster_env, metastore, settings, monkeypatch):
    """spark-submit refuses this; sparkflow submits it to the master's REST server and tracks the driver."""
    rest_port = cluster_env.rest_url.rsplit(":", 1)[1]
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_REST", json.dumps({
        "conn_type": "spark", "host": cluster_env.master_url,
        "extra": {"deploy-mode": "cluster", "rest-port": rest_port, "master-web-ui": cluster_env.ui_url},
    }))
    final, _ = run_spark_dag(metastore, settings.resolved_dags_folder, "standalone_rest", f"""
        SparkSubmitOperator(task_id="slow", application={str(SLOW_APP)!r}, application_args=["2"],
                            conn_id="spark_rest", name="slow_app_rest", driver_memory="512m",
                            executor_memory="512m", total_executor_cores=1)
    """)
    ti = queries.get_task_instance(metastore.db, TIKey("standalone_rest", final.run_id, "slow"))
    log = Path(ti.log_path).read_text()
    assert final.state is RunState.SUCCESS, log[-3000:]
    assert ti.spark_driver_id and ti.spark_driver_id.startswith("driver-")
    assert f"Driver {ti.spark_driver_id} is FINISHED" in log
    assert "slow_app: counted 1000 rows" in log  # the driver's own output, read from its worker
    completed = {d["id"]: d for d in cluster_env.state()["completeddrivers"]}
    assert completed[ti.spark_driver_id]["state"] == "FINISHED"


def test_retry_reattaches_to_a_cluster_driver_that_is_still_running(cluster_env, metastore, settings, monkeypatch):
    """The task process dies (kill -9) while its cluster-mode driver runs on: the retry polls that driver instead
    of submitting a duplicate, and the run succeeds with exactly one driver submitted."""
    rest_port = cluster_env.rest_url.rsplit(":", 1)[1]
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_REST", json.dumps({
        "conn_type": "spark", "host": cluster_env.master_url,
        "extra": {"deploy-mode": "cluster", "rest-port": rest_port, "master-web-ui": cluster_env.ui_url},
    }))
    drivers_before = {d["id"] for d in cluster_env.state()["completeddrivers"] + cluster_env.state()["activedrivers"]}
    result: dict[str, object] = {}

    def run() -> None:
        result["final"], _ = run_spark_dag(metastore, settings.resolved_dags_folder, "standalone_reattach", f"""
            SparkSubmitOperator(task_id="slow", application={str(SLOW_APP)!r}, application_args=["15"],
                                conn_id="spark_rest", name="slow_app_reattach", driver_memory="512m",
                                executor_memory="512m", total_executor_cores=1, retries=1, retry_delay=0)
        """)

    runner = threading.Thread(target=run)
    runner.start()
    deadline = time.monotonic() + 120
    killed = None
    while time.monotonic() < deadline and killed is None:
        runs = queries.list_runs(metastore.db, "standalone_reattach")
        if runs:
            ti = queries.get_task_instance(metastore.db, TIKey("standalone_reattach", runs[0].run_id, "slow"))
            if ti.spark_driver_id and ti.try_number == 1 and ti.pid:
                os.kill(ti.pid, signal.SIGKILL)  # the task process dies; its driver on the cluster does not
                killed = ti.spark_driver_id
        time.sleep(0.5)
    runner.join(timeout=240)
    assert killed, "the first try never recorded a driver id"
    final = result["final"]
    ti = queries.get_task_instance(metastore.db, TIKey("standalone_reattach", final.run_id, "slow"))
    log = Path(ti.log_path).read_text()
    assert final.state is RunState.SUCCESS, log[-3000:]
    assert ti.try_number == 2 and ti.spark_driver_id == killed
    assert f"Reattaching to driver {killed}" in log
    drivers = {d["id"] for d in cluster_env.state()["completeddrivers"] + cluster_env.state()["activedrivers"]}
    assert drivers - drivers_before == {killed}  # no duplicate submission


DEMO_MAIN = """
package demo;

public class Main {
    public static void main(String[] args) throws Exception {
        System.out.println("demo.Main started with " + String.join(" ", args));
        if (args[0].equals("fail")) {
            throw new IllegalStateException("demo.Main was asked to fail");
        }
        if (args[0].equals("sleep")) {
            Thread.sleep(Long.parseLong(args[1]) * 1000);
        }
        System.out.println("demo.Main done");
    }
}
"""


@pytest.fixture(scope="session")
def demo_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-class jar compiled here (the pyspark wheel ships no examples jar); plain Java, no Spark classes."""
    base = tmp_path_factory.mktemp("demo-jar")
    source = base / "src" / "demo" / "Main.java"
    source.parent.mkdir(parents=True)
    source.write_text(DEMO_MAIN)
    javac, jar = shutil.which("javac"), shutil.which("jar")
    assert javac and jar, "the JDK (javac, jar) is missing: run scripts/system-packages.sh"
    subprocess.run([javac, "--release", "17", "-d", str(base / "classes"), str(source)], check=True)
    subprocess.run([jar, "cf", str(base / "demo.jar"), "-C", str(base / "classes"), "."], check=True)
    return base / "demo.jar"


@pytest.fixture
def cluster_mode_conn(cluster_env, monkeypatch):  # type: ignore[no-untyped-def]
    rest_port = cluster_env.rest_url.rsplit(":", 1)[1]
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_REST", json.dumps({
        "conn_type": "spark", "host": cluster_env.master_url,
        "extra": {"deploy-mode": "cluster", "rest-port": rest_port, "master-web-ui": cluster_env.ui_url},
    }))
    return cluster_env


def driver_states(cluster) -> dict[str, str]:  # type: ignore[no-untyped-def]
    state = cluster.state()
    return {d["id"]: d["state"] for d in state["completeddrivers"] + state["activedrivers"]}


@pytest.mark.parametrize(("argument", "run_state", "driver_state"),
                         [("ok", RunState.SUCCESS, "FINISHED"), ("fail", RunState.FAILED, "FAILED")])
def test_jar_app_in_cluster_mode_follows_the_driver(cluster_mode_conn, metastore, settings, demo_jar, argument,
                                                    run_state, driver_state) -> None:
    """A JVM application in standalone cluster mode: the driver's final state decides the task's outcome."""
    dag_id = f"standalone_jar_{argument}"
    final, _ = run_spark_dag(metastore, settings.resolved_dags_folder, dag_id, f"""
        SparkSubmitOperator(task_id="jar", application={str(demo_jar)!r}, java_class="demo.Main",
                            application_args=[{argument!r}], conn_id="spark_rest", name="demo_jar",
                            driver_memory="512m")
    """)
    ti = queries.get_task_instance(metastore.db, TIKey(dag_id, final.run_id, "jar"))
    log = Path(ti.log_path).read_text()
    assert final.state is run_state, log[-3000:]
    assert ti.spark_driver_id and driver_states(cluster_mode_conn)[ti.spark_driver_id] == driver_state
    assert f"demo.Main started with {argument}" in log  # the driver's own output, read from its worker
    if argument == "fail":
        assert f"Spark driver {ti.spark_driver_id} ended FAILED" in ti.error
        assert 'Exception in thread "main"' in ti.error and "demo.Main was asked to fail" in log


def test_jar_app_timeout_kills_the_driver(cluster_mode_conn, metastore, settings, demo_jar) -> None:
    final, elapsed = run_spark_dag(metastore, settings.resolved_dags_folder, "standalone_jar_timeout", f"""
        SparkSubmitOperator(task_id="jar", application={str(demo_jar)!r}, java_class="demo.Main",
                            application_args=["sleep", "300"], conn_id="spark_rest", name="demo_jar_sleep",
                            driver_memory="512m", execution_timeout=timedelta(seconds=20))
    """)
    ti = queries.get_task_instance(metastore.db, TIKey("standalone_jar_timeout", final.run_id, "jar"))
    assert final.state is RunState.FAILED and "execution_timeout" in ti.error
    assert elapsed < 20 + 30
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and driver_states(cluster_mode_conn)[ti.spark_driver_id] == "RUNNING":
        time.sleep(0.5)
    assert driver_states(cluster_mode_conn)[ti.spark_driver_id] == "KILLED"
    assert ti.spark_driver_id not in {d["id"] for d in cluster_mode_conn.state()["activedrivers"]}
