"""SparkSubmitOperator against a fake spark-submit: exit codes, streamed output, ids recorded at once, masking,
load-time validation. The real spark-submit runs in tests/integration."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sparkflow import DAG, SparkSubmitOperator
from sparkflow.connections import Connection
from sparkflow.exceptions import DagDefinitionError
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.operators.spark_jdbc import SparkJDBCOperator
from sparkflow.state import RunState, TaskState
from tests.helpers import run_dag


def fake_spark_submit(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "fake-spark-submit"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


DAG_CODE = """
    from datetime import datetime
    from sparkflow import DAG, SparkSubmitOperator

    with DAG("sparky", start_date=datetime(2024, 1, 1)) as dag:
        SparkSubmitOperator(task_id="submit", application="/jobs/app.py", conn_id="spark_test",
                            spark_binary={binary!r}, application_args=["{{{{ ds }}}}", "two words"])
"""


def test_failure_names_exit_code_and_last_lines_with_secrets_masked(
    settings, metastore, write_dag, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_TEST", "spark://user:s3cr3t-pass@master:7077")
    binary = fake_spark_submit(tmp_path, """
echo "args: $*"
echo "INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID app-20240101000000-0007"
echo "INFO JettyUtils: Start Jetty 127.0.0.1:4040 for SparkUI"
echo "WARN Utils: Service 'SparkUI' could not bind on port 4040. Attempting port 4041."
echo "INFO Utils: Successfully started service 'SparkUI' on port 4041."
echo "ERROR connecting with s3cr3t-pass failed" >&2
exit 3
""")
    path = write_dag("sparky", DAG_CODE.format(binary=str(binary)))
    run = run_dag(settings, metastore, path, "sparky")
    assert run.state is RunState.FAILED
    ti = queries.get_task_instance(metastore.db, TIKey("sparky", run.run_id, "submit"))
    assert ti.state is TaskState.FAILED
    assert "spark-submit exited with code 3" in ti.error
    assert "ERROR connecting with *** failed" in ti.error and "s3cr3t-pass" not in ti.error
    assert ti.spark_app_id == "app-20240101000000-0007"
    assert ti.spark_ui_url == "http://127.0.0.1:4041"  # the port Spark really bound, not the one it tried first
    log = Path(ti.log_path).read_text()
    assert "s3cr3t-pass" not in log
    # argv reached the binary intact: templated first arg, the arg with a space kept whole
    assert "--master spark://master:7077" in log
    assert "/jobs/app.py 2024-03-01 two words" in log


def test_success_returns_app_id_as_xcom(settings, metastore, write_dag, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_TEST", "spark://local%5B2%5D")
    binary = fake_spark_submit(tmp_path, 'echo "Logging events to file:/tmp/ev/local-1732880000123"\n')
    path = write_dag("sparky", DAG_CODE.format(binary=str(binary)))
    run = run_dag(settings, metastore, path, "sparky")
    assert run.state is RunState.SUCCESS
    xcom = queries.get_xcom(metastore.db, "sparky", run.run_id, "submit", "return_value")
    assert xcom is not None and xcom.value == "local-1732880000123"


def test_unknown_connection_lists_known_spark_connections(settings, metastore, write_dag, tmp_path) -> None:
    metastore.connections.add_connections([Connection("spark_local", "spark", host="local[*]")])
    binary = fake_spark_submit(tmp_path, "exit 0\n")
    path = write_dag("sparky", DAG_CODE.format(binary=str(binary)))
    run = run_dag(settings, metastore, path, "sparky")
    ti = queries.get_task_instance(metastore.db, TIKey("sparky", run.run_id, "submit"))
    assert ti.state is TaskState.FAILED
    assert "connection 'spark_test' does not exist" in ti.error
    assert "known Spark connections: spark_local" in ti.error


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"application": ""}, "application must be the path"),
        ({"application": "a.py", "num_executors": 0}, "num_executors must be a positive integer, got 0"),
        ({"application": "a.py", "deploy_mode": "both"}, "deploy_mode has bad value 'both'"),
        ({"application": "a.py", "conf": ["x"]}, "conf must be a dict"),
    ],
)
def test_bad_arguments_fail_at_load_time(kwargs: dict, message: str) -> None:
    with DAG("v"), pytest.raises(DagDefinitionError, match=message):
        SparkSubmitOperator(task_id="t", **kwargs)


def test_provider_defaults() -> None:
    op = SparkSubmitOperator(task_id="t", application="a.py")
    assert (op.conn_id, op.name, op.status_poll_interval, op.verbose) == ("spark_default", "arrow-spark", 1, False)
    assert "application_args" in op.template_fields and "post_submit_commands" in op.template_fields


def test_jdbc_operator_validates_and_keeps_provider_defaults() -> None:
    op = SparkJDBCOperator(task_id="t", jdbc_table="a", metastore_table="b")
    assert (op.conn_id, op.jdbc_conn_id, op.name, op.cmd_type) == (
        "spark-default", "jdbc-default", "airflow-spark-jdbc", "spark_to_jdbc"
    )
    assert op.application.endswith("sparkflow/spark/jdbc_app.py")
    with pytest.raises(DagDefinitionError, match="cmd_type has bad value 'copy'"):
        SparkJDBCOperator(task_id="t2", cmd_type="copy", jdbc_table="a", metastore_table="b")
    with pytest.raises(DagDefinitionError, match="jdbc_table and metastore_table are both required"):
        SparkJDBCOperator(task_id="t3", jdbc_table="a")


def test_post_submit_commands_run_after_a_failed_submit_too(settings, metastore, write_dag, tmp_path,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_TEST", "spark://local%5B2%5D")
    binary = fake_spark_submit(tmp_path, "exit 4\n")
    marker = tmp_path / "post.txt"
    path = write_dag("posty", f"""
        from datetime import datetime
        from sparkflow import DAG, SparkSubmitOperator

        with DAG("posty", start_date=datetime(2024, 1, 1)) as dag:
            SparkSubmitOperator(task_id="submit", application="/jobs/app.py", conn_id="spark_test",
                                spark_binary={str(binary)!r},
                                post_submit_commands=["touch {marker}", "false", "no-such-binary-xyz"])
    """)
    run = run_dag(settings, metastore, path, "posty")
    ti = queries.get_task_instance(metastore.db, TIKey("posty", run.run_id, "submit"))
    assert ti.state is TaskState.FAILED and "exited with code 4" in ti.error
    assert marker.exists()  # ran although the submission failed; the failing commands were only logged
    log = Path(ti.log_path).read_text()
    assert "post_submit_command 'false' exited with 1" in log and "'no-such-binary-xyz' failed" in log
