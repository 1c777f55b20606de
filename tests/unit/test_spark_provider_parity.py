"""apache-airflow-providers-apache-spark 6.3.4 parity, case by case: every constructor argument, connection
resolution, templated conf/application_args, the exception hierarchy, the failure message, spark-sql's queue and
the hooks' public interface."""

from __future__ import annotations

import base64
import inspect
import json
import logging
import os
import stat
import textwrap
from pathlib import Path

import pytest

from sparkflow import DAG, SparkSubmitOperator
from sparkflow.compat.airflow.finder import airflow_finders
from sparkflow.compat.airflow.spark import SparkJDBCHook, SparkSubmitHook
from sparkflow.connections import Connection, connection_from_env
from sparkflow.definitions.loader import collect_dags
from sparkflow.exceptions import AirflowException, DagDefinitionError, InvalidConnection, SparkSubmitFailed
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.operators.spark_jdbc import SparkJDBCOperator
from sparkflow.operators.spark_sql import SparkSqlHook, SparkSqlOperator
from sparkflow.spark.command import build_spark_submit_argv
from sparkflow.spark.spec import (
    HOOK_KEYWORD_ONLY,
    HOOK_POSITIONAL,
    SparkSubmitSpec,
    classify_master,
    master_url,
    resolve_target,
    rest_urls,
)
from sparkflow.spark.submission import OutputTail, SparkSubmission
from sparkflow.spark.submit import submit_environment
from sparkflow.state import TaskState
from tests.helpers import run_dag

# The provider's constructor parameters, in order (read from its 6.3.4 source).
PROVIDER_HOOK_PARAMS = [
    "conf", "conn_id", "files", "py_files", "archives", "driver_class_path", "jars", "java_class", "packages",
    "exclude_packages", "repositories", "total_executor_cores", "executor_cores", "executor_memory", "driver_memory",
    "keytab", "principal", "proxy_user", "name", "num_executors", "status_poll_interval", "application_args",
    "env_vars", "verbose", "spark_binary", "properties_file", "yarn_queue", "deploy_mode",
]
PROVIDER_HOOK_KEYWORD_ONLY = ["use_krb5ccache", "post_submit_commands", "track_driver_via_k8s_api",
                              "yarn_track_via_rm_api", "yarn_rm_auth"]
PROVIDER_OPERATOR_EXTRA = ["openlineage_inject_parent_job_info", "openlineage_inject_transport_info",
                           "reconnect_on_retry", "durable"]


def test_hook_signature_is_the_providers() -> None:
    params = inspect.signature(SparkSubmitHook).parameters
    assert list(HOOK_POSITIONAL) == PROVIDER_HOOK_PARAMS and list(HOOK_KEYWORD_ONLY) == PROVIDER_HOOK_KEYWORD_ONLY
    assert [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD] == PROVIDER_HOOK_PARAMS
    assert [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY] == PROVIDER_HOOK_KEYWORD_ONLY
    assert params["name"].default == "default-name" and params["status_poll_interval"].default == 1
    hook = SparkSubmitHook({"a": "b"}, "spark_x", post_submit_commands=["true"], yarn_rm_auth=("u", "p"))
    assert hook.conn_id == "spark_x" and hook._options["conf"] == {"a": "b"}
    with pytest.raises(TypeError):
        SparkSubmitHook(*range(29))  # one more positional than the provider takes


def test_operator_accepts_every_provider_argument_with_its_defaults() -> None:
    params = inspect.signature(SparkSubmitOperator).parameters
    for name in ["application", *PROVIDER_HOOK_PARAMS, *PROVIDER_HOOK_KEYWORD_ONLY, *PROVIDER_OPERATOR_EXTRA]:
        assert name in params, name
    assert params["name"].default == "arrow-spark" and params["durable"].default is None
    with DAG("parity"):
        op = SparkSubmitOperator(
            task_id="t", application="a.py", durable=False, track_driver_via_k8s_api=True,
            yarn_track_via_rm_api=True, yarn_rm_auth=("u", "p"), openlineage_inject_parent_job_info=True,
            openlineage_inject_transport_info=True, post_submit_commands=["true"], use_krb5ccache=False,
        )
        assert op.durable is False and op.spec().yarn_rm_auth == ("u", "p")
        assert SparkSubmitOperator(task_id="d", application="a.py").durable is True
        with pytest.warns(UserWarning, match="reconnect_on_retry is deprecated"):
            old = SparkSubmitOperator(task_id="r", application="a.py", reconnect_on_retry=False)
        assert old.durable is False


def test_default_args_reach_the_spark_options() -> None:
    with DAG("defaults", default_args={"conn_id": "spark_etl", "executor_memory": "2g", "retries": 1}):
        op = SparkSubmitOperator(task_id="t", application="a.py")
    assert (op.conn_id, op.executor_memory, op.retries) == ("spark_etl", "2g", 1)


def test_a_provider_dag_file_with_the_new_arguments_loads(tmp_path: Path) -> None:
    (tmp_path / "new_args.py").write_text(textwrap.dedent("""
        from datetime import datetime
        from airflow import DAG
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

        with DAG("new_args", start_date=datetime(2024, 1, 1), schedule=None):
            SparkSubmitOperator(task_id="t", application="a.py", durable=True, track_driver_via_k8s_api=False,
                                yarn_track_via_rm_api=False, yarn_rm_auth=None,
                                openlineage_inject_parent_job_info=False, openlineage_inject_transport_info=False,
                                conf="{{ var.json.spark_conf }}", application_args="{{ params.args }}")
        HOOK = SparkSubmitHook(conn_id="x", post_submit_commands=["curl -X POST localhost:15020/quitquitquit"])
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    assert "new_args" in bag.dags


def test_templated_conf_and_args_render_at_run_time(settings, metastore, write_dag, tmp_path, monkeypatch) -> None:
    binary = tmp_path / "fake-spark-submit"
    binary.write_text('#!/usr/bin/env bash\necho "argv: $*"\n')
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_TEST", "spark://local%5B2%5D")
    metastore.variables.set_variable("spark_conf", json.dumps({"spark.sql.shuffle.partitions": "7"}))
    path = write_dag("templated", f"""
        from datetime import datetime
        from sparkflow import DAG, SparkSubmitOperator

        with DAG("templated", start_date=datetime(2024, 1, 1), params={{"args": ["--day", "x y"]}}) as dag:
            SparkSubmitOperator(task_id="t", application="/jobs/app.py", conn_id="spark_test",
                                spark_binary={str(binary)!r}, conf="{{{{ var.json.spark_conf }}}}",
                                application_args="{{{{ params.args }}}}")
    """)
    run = run_dag(settings, metastore, path, "templated")
    ti = queries.get_task_instance(metastore.db, TIKey("templated", run.run_id, "t"))
    log = Path(ti.log_path).read_text()
    assert ti.state is TaskState.SUCCESS, ti.error
    assert "--conf spark.sql.shuffle.partitions=7" in log and "/jobs/app.py --day x y" in log


def test_bad_template_result_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="conf rendered to 'not a dict', which is neither JSON"):
        SparkSubmitSpec.from_values({"application": "a.py", "conf": "not a dict"})


@pytest.mark.parametrize(
    ("uri", "master", "manager"),
    [
        ("k8s://https://k8s-host:443", "k8s://https://k8s-host:443", "k8s"),
        ("k8s://k8s-host:6443", "k8s://k8s-host:6443", "k8s"),
        ("yarn://rm-host", "yarn://rm-host", "yarn"),
        ("spark://spark-master:7077", "spark://spark-master:7077", "standalone"),
        ("spark://local%5B4%5D", "local[4]", "local"),
        ("spark://yarn", "yarn", "yarn"),
    ],
)
def test_master_from_an_airflow_conn_uri(uri: str, master: str, manager: str) -> None:
    conn = connection_from_env("x", {"AIRFLOW_CONN_X": uri})
    assert conn is not None and master_url(conn) == master and classify_master(master) == manager


def test_yarn_env_vars_reach_spark_submits_own_environment() -> None:
    spec = SparkSubmitSpec(application="a.py", env_vars={"HADOOP_USER_NAME": "etl"}, deploy_mode="cluster")
    yarn = resolve_target(Connection("c", "yarn", host="rm"), spec)
    assert build_spark_submit_argv(spec, yarn)[3:5] == ["--conf", "spark.yarn.appMasterEnv.HADOOP_USER_NAME=etl"]
    assert submit_environment(yarn, spec.env_vars, {})["HADOOP_USER_NAME"] == "etl"
    k8s = resolve_target(Connection("c", "k8s", host="https://h", port=443), spec)
    assert "HADOOP_USER_NAME" not in submit_environment(k8s, spec.env_vars, {})


def test_base64_keytab_extra_goes_to_a_private_file_for_the_run(tmp_path: Path) -> None:
    content = b"\x05\x02keytab-bytes"
    conn = Connection("kerb", "spark", host="local[1]",
                      extra=json.dumps({"keytab": base64.b64encode(content).decode(), "principal": "etl@R"}))
    binary = tmp_path / "spark-submit"
    binary.write_text(f'#!/usr/bin/env bash\nfor a; do [ -f "$a" ] && stat -c %a "$a" > {tmp_path}/mode && '
                      f'cp "$a" {tmp_path}/seen; done; echo "$@" > {tmp_path}/argv\n')
    binary.chmod(0o755)
    spec = SparkSubmitSpec(application="a.py", spark_binary=str(binary))
    SparkSubmission(spec, conn, None, logging.getLogger("t")).run()
    argv = (tmp_path / "argv").read_text().split()
    keytab = argv[argv.index("--keytab") + 1]
    assert (tmp_path / "seen").read_bytes() == content and (tmp_path / "mode").read_text().strip() == "600"
    assert not os.path.exists(keytab)  # removed after the run
    with pytest.raises(InvalidConnection, match="extra 'keytab' is not base64"):
        resolve_target(Connection("kerb", "spark", host="yarn", extra=json.dumps({"keytab": "/etc/x.keytab"})), spec)


def test_rest_urls_bracket_ipv6_and_cover_every_ha_master() -> None:
    spec = SparkSubmitSpec(application="a.jar")
    ipv6 = resolve_target(Connection("c", "spark", host="spark://[::1]:7077"), spec)
    assert rest_urls(ipv6) == ["http://[::1]:6066"] and ipv6.master_web_ui == "http://[::1]:8080"
    ha = resolve_target(Connection("c", "spark", host="spark://a:7077,b:7077", extra='{"rest-port": "6166"}'), spec)
    assert rest_urls(ha) == ["http://a:6166", "http://b:6166"]


def test_failure_keeps_the_jvm_exception_line_of_a_long_trace() -> None:
    tail = OutputTail()
    for line in ["INFO starting"] * 5 + ['Exception in thread "main" java.lang.IllegalStateException: bad input',
                                         "\tat demo.Main.main(Main.java:3)"] + ["\tat x.y.z(Q.java:1)"] * 200:
        tail.add(line)
    text = tail.text()
    assert text.startswith('Exception in thread "main" java.lang.IllegalStateException: bad input')
    assert "more lines)" in text and len(text.splitlines()) <= 32


def test_spark_failures_are_airflow_exceptions_under_the_compat_layer(tmp_path: Path) -> None:
    assert issubclass(SparkSubmitFailed, AirflowException)
    (tmp_path / "catch.py").write_text(textwrap.dedent("""
        from airflow.exceptions import AirflowException
        from sparkflow.exceptions import SparkSubmitFailed
        assert issubclass(SparkSubmitFailed, AirflowException)
        from datetime import datetime
        from airflow import DAG
        with DAG("catch", start_date=datetime(2024, 1, 1), schedule=None):
            pass
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors


def test_spark_sql_queue_default_on_yarn_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SQL_YARN", "spark://yarn")
    monkeypatch.setenv("SPARKFLOW_CONN_SQL_LOCAL", "spark://local%5B1%5D")
    on_yarn = SparkSqlHook("SELECT 1", conn_id="sql_yarn")._prepare_command()
    assert on_yarn[-2:] == ["--queue", "default"]
    assert "--queue" not in SparkSqlHook("SELECT 1", conn_id="sql_local")._prepare_command()
    hook = SparkSqlHook("SELECT 1", None, "sql_yarn", yarn_queue="etl")
    assert (hook._sql, hook._conn_id, hook._yarn_queue, hook._verbose) == ("SELECT 1", "sql_yarn", "etl", True)
    assert hook._prepare_command("--hiveconf a=b")[-4:] == ["--queue", "etl", "--hiveconf", "a=b"]
    assert hook.get_conn() is None and SparkSqlHook.default_conn_name == "spark_sql_default"
    assert "conn_id" in inspect.signature(SparkSqlOperator).parameters


def test_jdbc_hook_and_operator_interfaces() -> None:
    hook = SparkJDBCHook("copy", "spark_x", None, None, None, None, 2, cmd_type="jdbc_to_spark", jdbc_table="t",
                         metastore_table="m", deploy_mode="client")
    assert (hook.spark_conn_id, hook.jdbc_conn_id, hook._options["num_executors"]) == ("spark_x", "jdbc-default", 2)
    assert hook._options["name"] == "copy" and hook._options["deploy_mode"] == "client"
    assert callable(hook.submit_jdbc_job) and callable(hook.submit) and callable(hook.on_kill)
    assert SparkJDBCHook.conn_name_attr == "spark_conn_id" and SparkJDBCHook.conn_type == "spark_jdbc"
    params = inspect.signature(SparkJDBCOperator).parameters
    assert params["spark_conn_id"].default == "spark-default" and params["jdbc_conn_id"].default == "jdbc-default"
    with DAG("jdbc"), pytest.raises(DagDefinitionError, match="cmd_type has bad value"):
        SparkJDBCOperator(task_id="j", cmd_type="copy", jdbc_table="a", metastore_table="b")


def test_post_submit_commands_run_once_after_success_and_kill(tmp_path: Path) -> None:
    marker = tmp_path / "post"
    binary = tmp_path / "spark-submit"
    binary.write_text("#!/usr/bin/env bash\nexit 0\n")
    binary.chmod(0o755)
    spec = SparkSubmitSpec(application="a.py", spark_binary=str(binary),
                           post_submit_commands=(f"sh -c 'echo x >> {marker}'",))
    submission = SparkSubmission(spec, Connection("c", "spark", host="local[1]"), None, logging.getLogger("t"))
    submission.run()
    submission.kill()
    assert marker.read_text() == "x\n"


def test_spark_options_can_be_mapped() -> None:
    """partial()/expand() check the names against the constructor: the derived signature names every option."""
    with DAG("mapped"):
        mapped = SparkSubmitOperator.partial(task_id="m", application="a.py", executor_memory="1g").expand(
            application_args=[["--day", "1"], ["--day", "2"]])
    assert mapped.partial_kwargs["executor_memory"] == "1g"
