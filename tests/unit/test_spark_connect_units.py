"""Spark Connect without a server: connection resolution and validation, the server's argv, per-session job
filtering and metrics, leases, argument binding around ``spark``, the decorator and the Airflow provider imports.
(tests/integration/test_spark_connect.py runs all of it against a real server.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from sparkflow.compat.airflow import airflow_finders
from sparkflow.connections import Connection
from sparkflow.definitions.loader import collect_dags
from sparkflow.exceptions import InvalidConnection
from sparkflow.operators.pyspark import PySparkDecoratedOperator, PySparkOperator, bind_around_spark, try_tag
from sparkflow.spark.connect_config import ManagedServerSpec, resolve_connect
from sparkflow.spark.connect_server import ServerDirectory, ServerRecord
from sparkflow.spark.connect_supervisor import server_argv
from sparkflow.spark.connect_tracking import (
    find_ui,
    metrics_from_stages,
    session_jobs,
    session_marker,
    ui_candidates,
    user_marker,
)
from sparkflow.spark.tracking import Unavailable


def conn(host: str = "sc://127.0.0.1", port: int | None = 15002, extra: dict | None = None, **fields) -> Connection:
    return Connection("sc", "spark_connect", host=host, port=port, extra=json.dumps(extra) if extra else None,
                      **fields)


def test_url_follows_the_providers_spark_connect_hook() -> None:
    target = resolve_connect(conn(login="ann", password="s3cr=t", extra={"use_ssl": True}))
    assert target.url == "sc://127.0.0.1:15002/;user_id=ann;token=s3cr%3Dt;use_ssl=True"
    assert resolve_connect(conn(host="spark.example", port=None)).url == "sc://spark.example:15002/"
    assert resolve_connect(conn(host="sc://h:16000", port=None)).port == 16000
    assert target.managed is None


def test_managed_extras_become_the_server_spec() -> None:
    target = resolve_connect(conn(host="localhost", extra={
        "managed": True, "master": "local[2]", "driver_memory": "2g", "idle_timeout": 60,
        "conf": {"spark.sql.shuffle.partitions": 4}, "spark.sql.ansi.enabled": "false"}))
    spec = target.managed
    assert spec == ManagedServerSpec(conn_id="sc", bind_host="127.0.0.1", port=15002, master="local[2]",
                                     driver_memory="2g", conf={"spark.sql.shuffle.partitions": "4"},
                                     idle_timeout=60.0)
    assert target.session_conf == {"spark.sql.ansi.enabled": "false"}
    changed = ManagedServerSpec.from_json({**spec.to_json(), "master": "local[1]"})
    assert changed.fingerprint() != spec.fingerprint()
    assert ManagedServerSpec.from_json({**spec.to_json(), "idle_timeout": 5}).fingerprint() == spec.fingerprint()


@pytest.mark.parametrize(("fields", "message"), [
    ({"host": "http://h"}, "is not a Spark Connect address; use sc://HOST"),
    ({"host": "sc://h/path"}, "has a path"),
    ({"host": None}, "has no host"),
    ({"extra": {"managed": "yes"}}, "extra 'managed' has bad value 'yes'; use true or false"),
    ({"extra": {"master": "local[*]"}}, "applies to managed servers only"),
    ({"extra": {"managed": True, "driver_memory": "lots"}}, "use a size such as 512m"),
    ({"extra": {"managed": True, "idle_timeout": -1}}, "use a positive number of seconds"),
    ({"extra": {"managed": True, "conf": ["x"]}}, "use a JSON object of Spark properties"),
    ({"extra": {"managed": True, "ui_port": 70000}}, "use a port number"),
    ({"extra": {"ui_url": "spark-host:4040"}}, "use the server's Spark UI address"),
    ({"extra": {"managed": True, "ui_url": "http://h:4040"}}, "a managed server's UI is known"),
])
def test_bad_connections_are_named_with_the_fix(fields: dict, message: str) -> None:
    with pytest.raises(InvalidConnection, match="connection 'sc'") as raised:
        resolve_connect(conn(**fields))
    assert message in str(raised.value)


def test_server_argv_runs_the_connect_server_in_the_foreground_on_the_spec() -> None:
    spec = ManagedServerSpec(conn_id="sc", bind_host="127.0.0.1", port=15002, master="local[2]",
                             driver_memory="1g", conf={"spark.ui.port": "4999", "spark.x": "y"})
    assert server_argv("/bin/spark-submit", spec, 4050) == [
        "/bin/spark-submit", "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master", "local[2]", "--name", "sparkflow-connect-sc", "--driver-memory", "1g",
        "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf", "spark.connect.grpc.binding.port=15002",
        "--conf", "spark.ui.port=4999",  # the user's conf wins
        "--conf", "spark.port.maxRetries=0",
        "--conf", "spark.x=y",
        "spark-internal",
    ]


JOBS = [
    {"jobId": 3, "status": "RUNNING", "stageIds": [5], "numTasks": 4, "numCompletedTasks": 1,
     "jobTags": ["SparkConnect_SessionTag_User__Session_aaa_Tag_sparkflow:d:t:r:try1"]},
    {"jobId": 2, "status": "SUCCEEDED", "stageIds": [3, 4], "numTasks": 3, "numCompletedTasks": 3,
     "jobTags": ["SparkConnect_OperationTag_User__Session_aaa_Operation_x"]},
    {"jobId": 1, "status": "SUCCEEDED", "stageIds": [1], "numTasks": 1, "numCompletedTasks": 1,
     "jobTags": ["SparkConnect_SessionTag_User__Session_bbb_Tag_other"]},
]


def test_a_sessions_jobs_are_those_tagged_with_its_session_id() -> None:
    assert [j["jobId"] for j in session_jobs(JOBS, session_marker("aaa"))] == [3, 2]
    assert [j["jobId"] for j in session_jobs(JOBS, session_marker("bbb"))] == [1]
    assert session_jobs(JOBS, session_marker("aa")) == []
    assert session_jobs(JOBS, user_marker("")) == JOBS and session_jobs(JOBS, user_marker("u")) == []


def test_an_unmanaged_servers_ui_is_looked_for_where_the_client_connects_then_at_the_driver() -> None:
    assert ui_candidates("spark.example", "10.0.0.5", "4050") == ["http://spark.example:4050",
                                                                 "http://10.0.0.5:4050"]
    assert ui_candidates("127.0.0.1", "127.0.0.1", None) == ["http://127.0.0.1:4040"]
    assert ui_candidates("::1", None, "0") == ["http://[::1]:4040"]
    assert resolve_connect(conn(extra={"ui_url": "http://ui.example:8080/"})).ui_url == "http://ui.example:8080"

    def fetch(url: str) -> object:
        if url.startswith("http://a"):
            raise Unavailable(url)
        return {"id": "app-1"} if url.startswith("http://b") else {"id": "other"}

    assert find_ui(["http://a:1", "http://c:1", "http://b:1"], "app-1", fetch) == "http://b:1"
    assert find_ui(["http://a:1", "http://c:1"], "app-1", fetch) is None


def test_metrics_sum_the_sessions_stages() -> None:
    stages = [
        {"stageId": 3, "status": "COMPLETE", "numCompleteTasks": 2, "inputBytes": 100, "shuffleWriteBytes": 7,
         "executorCpuTime": 3_000_000, "peakExecutionMemory": 10},
        {"stageId": 4, "status": "FAILED", "numCompleteTasks": 0, "numFailedTasks": 1, "shuffleReadBytes": 7,
         "jvmGcTime": 5, "peakExecutionMemory": 30},
    ]
    metrics = metrics_from_stages("local-1", session_jobs(JOBS, session_marker("aaa"))[1:], stages, 1234)
    assert (metrics.app_id, metrics.jobs, metrics.stages, metrics.stages_failed) == ("local-1", 1, 2, 1)
    assert (metrics.tasks, metrics.tasks_failed, metrics.input_bytes) == (3, 1, 100)
    assert (metrics.shuffle_read_bytes, metrics.shuffle_write_bytes, metrics.executor_cpu_time_ms) == (7, 7, 3)
    assert (metrics.jvm_gc_time_ms, metrics.peak_execution_memory_bytes, metrics.duration_ms) == (5, 30, 1234)
    assert metrics.succeeded is True


def test_leases_of_dead_processes_do_not_keep_a_server(tmp_path: Path) -> None:
    directory = ServerDirectory(tmp_path, "sc")
    mine = directory.take_lease("me")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (directory.leases / f"{dead.stdout.strip()}-gone").write_text("a try whose process died")
    assert directory.live_leases() == [mine]
    assert sorted(p.name for p in directory.leases.iterdir()) == [mine.name]


def test_a_record_is_removed_only_while_it_is_still_the_current_one(tmp_path: Path) -> None:
    directory = ServerDirectory(tmp_path, "sc")
    directory.ensure()
    old = ServerRecord("sc", 1, 2, "127.0.0.1", 15002, 4050, "local-1", 0.0, 1.0, "f", "me")
    new = ServerRecord("sc", 3, 4, "127.0.0.1", 15002, 4051, "local-2", 5.0, 6.0, "f", "me")
    directory.write_record(new)
    directory.remove_record(old)
    assert directory.read_record() == new
    assert new.address == "sc://127.0.0.1:15002" and new.ui_url == "http://127.0.0.1:4051"
    directory.remove_record(new)
    assert directory.read_record() is None


def test_op_args_bind_around_spark_and_sc() -> None:
    def f(spark, path, n=1):  # type: ignore[no-untyped-def]
        return path, n

    assert bind_around_spark(f, ["/data", 3]) == ([], {"path": "/data", "n": 3})
    assert bind_around_spark(lambda a, b: None, [1, 2]) == ([1, 2], {})

    def g(spark, sc, path, *rest):  # type: ignore[no-untyped-def]
        return path

    assert bind_around_spark(g, ["/p", "x", "y"]) == (["x", "y"], {"path": "/p"})


def test_decorator_and_tag() -> None:
    from sparkflow import DAG, task

    with DAG("d", schedule=None) as dag:
        @task.pyspark(conn_id="sc", config_kwargs={"spark.sql.shuffle.partitions": "2"})
        def count(spark, path: str) -> int:
            return 1

        count("/x")
    op = dag.get_task("count")
    assert isinstance(op, PySparkDecoratedOperator) and isinstance(op, PySparkOperator)
    assert (op.conn_id, op.config_kwargs, op.op_args) == ("sc", {"spark.sql.shuffle.partitions": "2"}, ["/x"])
    assert "conn_id" in op.template_fields and "config_kwargs" in op.template_fields

    class Ti:
        dag_id, task_id, run_id, try_number = "d", "t", "manual__a,b", 2

    assert try_tag(Ti()) == "sparkflow:d:t:manual__a_b:try2"  # type: ignore[arg-type]


def test_provider_imports_load_through_the_compat_layer(tmp_path: Path) -> None:
    (tmp_path / "connect.py").write_text(textwrap.dedent("""
        from datetime import datetime
        from airflow.sdk import DAG, task
        from airflow.providers.apache.spark.decorators.pyspark import pyspark_task
        from airflow.providers.apache.spark.operators.spark_pyspark import PySparkOperator, SPARK_CONTEXT_KEYS
        from airflow.providers.apache.spark.hooks.spark_connect import SparkConnectHook
        from airflow.providers.apache.spark.operators.spark_pipelines import SparkPipelinesOperator
        from airflow.providers.apache.spark.hooks.spark_pipelines import SparkPipelinesHook

        def total(spark):
            return spark.range(3).count()

        with DAG("connect_compat", start_date=datetime(2024, 1, 1), schedule=None):
            PySparkOperator(task_id="op", python_callable=total, conn_id="spark_connect_default")

            @task.pyspark(conn_id="spark_connect_default")
            def decorated(spark, sc=None):
                return 1

            @pyspark_task(conn_id="spark_connect_default")
            def by_name(spark):
                return 2

            decorated()
            by_name()
            SparkPipelinesOperator(task_id="pipe", pipeline_spec="pipeline.yml", pipeline_command="dry-run")
        assert SPARK_CONTEXT_KEYS == ("spark", "sc") and SparkConnectHook.conn_type == "spark_connect"
        assert SparkPipelinesHook is not None
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["connect_compat"]
    assert sorted(dag.task_dict) == ["by_name", "decorated", "op", "pipe"]
    assert all(isinstance(dag.get_task(t), PySparkOperator) for t in ("op", "decorated", "by_name"))


def test_spark_connect_hook_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkflow.compat.airflow.spark_connect import SparkConnectHook

    monkeypatch.setenv("SPARKFLOW_CONN_SC_HOOK", json.dumps(
        {"conn_type": "spark_connect", "host": "10.0.0.5", "port": 15003, "login": "u"}))
    assert SparkConnectHook("sc_hook").get_connection_url() == "sc://10.0.0.5:15003/;user_id=u"


def test_connections_add_checks_spark_connect_fields(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFLOW_")}
    env["SPARKFLOW_HOME"] = str(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "sparkflow", *args], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    assert cli("db", "init").returncode == 0
    bad = cli("connections", "add", "scx", "--conn-type", "spark_connect", "--conn-host", "sc://127.0.0.1",
              "--conn-extra", '{"managed": true, "idle_timeout": "soon"}')
    assert bad.returncode == 2 and "extra 'idle_timeout' has bad value 'soon'" in bad.stderr
    good = cli("connections", "add", "scx", "--conn-type", "spark_connect", "--conn-host", "sc://127.0.0.1",
               "--conn-port", "15002", "--conn-extra", '{"managed": true, "master": "local[*]"}')
    assert good.returncode == 0, good.stderr
    status = cli("spark-connect", "status", "scx", "-o", "json")
    assert status.returncode == 0 and json.loads(status.stdout)[0]["state"] == "stopped"
    stop = cli("spark-connect", "stop", "scx")
    assert stop.returncode == 0 and "No Spark Connect server runs for 'scx'" in stop.stdout
    unmanaged = cli("connections", "add", "plain", "--conn-type", "spark_connect", "--conn-host", "sc://h")
    assert unmanaged.returncode == 0
    refused = cli("spark-connect", "start", "plain")
    assert refused.returncode == 2 and "is not managed by sparkflow" in refused.stderr


def test_pipelines_argv_for_the_launcher_and_for_spark_connect() -> None:
    from sparkflow.exceptions import UserError
    from sparkflow.spark.pipelines import (
        build_connect_pipelines_argv,
        build_pipelines_argv,
        driver_submit_args,
        pipelines_submit_flags,
        run_user_id,
        with_user_id,
    )
    from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget

    spec = SparkSubmitSpec(conf={"spark.x": "1"}, driver_memory="1g", deploy_mode="client")
    assert build_pipelines_argv("dry-run", "p.yml", spec, SparkTarget(master="local[2]"), "/bin/spark-pipelines") == [
        "/bin/spark-pipelines", "dry-run", "--spec", "p.yml", "--remote", "local[2]", "--conf", "spark.x=1",
        "--driver-memory", "1g"]
    assert build_pipelines_argv("run", None, spec, SparkTarget(master="spark://h:7077"))[:3] == [
        "spark-pipelines", "run", "--remote"]
    for master, deploy_mode in (("yarn", None), ("spark://h:7077", "cluster")):
        with pytest.raises(UserError, match="with a local or standalone master in client mode only"):
            build_pipelines_argv("run", None, spec, SparkTarget(master=master, deploy_mode=deploy_mode))
    assert build_connect_pipelines_argv("run", "p.yml", "/py") == ["/py", "-m", "pyspark.pipelines.cli", "run",
                                                                   "--spec", "p.yml"]
    # Every flag also reaches the pipeline's driver JVM (pyspark keeps only the launcher's last ten confs)
    flags = pipelines_submit_flags(replace(spec, conf={"spark.x": "a b"}), SparkTarget(master="local[2]"))
    assert flags == ["--conf", "spark.x=a b", "--driver-memory", "1g"]
    assert driver_submit_args(flags) == "--conf 'spark.x=a b' --driver-memory 1g pyspark-shell"
    assert driver_submit_args(flags, "--conf spark.y=2 pyspark-shell").endswith("1g --conf spark.y=2 pyspark-shell")
    user = run_user_id("d", "t.x", 2)
    assert user == "sparkflow-d-t-x-try2"
    assert with_user_id("sc://h:1/", user) == "sc://h:1/;user_id=sparkflow-d-t-x-try2"
    assert with_user_id("sc://h:1/;user_id=a;token=t", "u") == "sc://h:1/;user_id=u;token=t"


@pytest.mark.parametrize(("conf", "added", "ui_url"), [
    ({}, {"spark.ui.port": "4321"}, "http://127.0.0.1:4321"),
    ({"spark.ui.port": "5000"}, {}, "http://127.0.0.1:5000"),
    ({"spark.ui.port": "0"}, {}, None),
    ({"spark.ui.enabled": "False"}, {}, None),
])
def test_a_pipeline_driver_gets_a_ui_port_of_the_try_unless_the_user_chose(conf: dict, added: dict,
                                                                            ui_url: str | None) -> None:
    from sparkflow.spark.pipelines import driver_conf

    assert driver_conf(conf, 4321) == (added, ui_url)


def test_a_server_started_by_a_try_is_spared_by_the_tries_leftover_clean_up(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The first try that needs a managed server starts it; the try's end kills what it left, but not the server."""
    from sparkflow.runtime import leftovers
    from sparkflow.spark import connect_server

    started: dict[str, dict[str, str]] = {}

    def fake_run(argv: list[str], **kwargs: object) -> None:
        started["env"] = kwargs["env"]  # type: ignore[assignment]
        raise RuntimeError("stop here")

    monkeypatch.setattr(connect_server.subprocess, "run", fake_run)
    spec = ManagedServerSpec(conn_id="sc", bind_host="127.0.0.1", port=1, master="local[1]")
    directory = ServerDirectory(tmp_path, "sc")
    directory.ensure()
    with pytest.raises(RuntimeError, match="stop here"):
        connect_server._start(directory, spec, "tests", None)
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                             env=started["env"], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"  # exec'd: its own environment
        assert leftovers._detached(child.pid)
    finally:
        child.kill()
        child.communicate()


def test_the_fork_server_imports_the_connect_client_of_a_pyspark_dag_ahead_without_starting_threads() -> None:
    """Every worker forked afterwards inherits the client's imports (seconds a @task.pyspark try does not pay)."""
    script = textwrap.dedent("""
        import os, sys, threading
        from datetime import datetime
        from sparkflow import DAG, task
        from sparkflow.runtime.dag_parses import warm_imports

        with DAG("warm", start_date=datetime(2024, 1, 1)) as dag:
            @task.pyspark(conn_id="sc")
            def step(spark):
                return 1
            step()
        assert "pyspark.sql.connect.session" not in sys.modules
        warm_imports(dag)
        assert "pyspark.sql.connect.session" in sys.modules and "grpc" in sys.modules
        assert threading.active_count() == 1
        assert not [t for t in os.listdir("/proc/self/task")
                    if open(f"/proc/self/task/{t}/comm").read().startswith(("grpc", "default-executo"))]
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
