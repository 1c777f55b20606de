"""Unmodified Airflow DAG files (tests/fixtures/airflow_dags) load through the real loader and run end to end."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.compat.airflow import (
    FINDER,
    NotProvidedError,
    airflow_finders,
    forget_alias_modules,
    real_airflow_installed,
)
from sparkflow.connections import Connection
from sparkflow.definitions.context import task_environment
from sparkflow.definitions.loader import collect_dags, load_dag_file
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore, init_metastore
from sparkflow.metastore.records import TIKey
from sparkflow.operators.bash import BashOperator
from sparkflow.operators.python import PythonOperator
from sparkflow.operators.spark_submit import SparkSubmitOperator
from sparkflow.runtime.context import metastore_environment
from sparkflow.runtime.task_runner import load_task_dag
from sparkflow.settings import Settings, load_settings
from sparkflow.state import RunState
from tests.helpers import parse_folder, run_dag, states

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "airflow_dags"


@pytest.fixture
def dags_folder(settings: Settings) -> Path:
    """The Airflow fixture DAGs copied into the test's DAG folder."""
    folder = settings.resolved_dags_folder
    for path in FIXTURES.glob("*.py"):
        shutil.copy(path, folder / path.name)
    return folder


def dag_file_module(stem: str) -> object:
    """The module the loader made of DAG file ``stem``.py (named sparkflow_dagfile_<digest>_<stem>)."""
    return next(m for n, m in sys.modules.items() if n.startswith("sparkflow_dagfile_") and n.endswith(f"_{stem}"))


def run(settings: Settings, metastore: Metastore, folder: Path, dag_id: str, name: str | None = None):
    with metastore_environment(metastore):  # DAG files read Variables at the top level, as the DAG processor allows
        return run_dag(settings, metastore, folder / f"{name or dag_id}.py", dag_id,
                       meta_path_finders=airflow_finders())


# -- loading ---------------------------------------------------------------------------------------------------


def test_the_fixture_folder_loads_with_only_the_unsupported_file_failing(
    settings: Settings, metastore: Metastore, dags_folder: Path
) -> None:
    bag = parse_folder(settings, metastore)
    assert sorted(bag.dags) == [
        "branching", "classic_etl", "legacy_arguments", "sdk_style", "sensors_dag", "spark_etl", "taskflow_xcom",
        "variables_dag",
    ]
    (error,) = bag.import_errors
    assert error.filename.endswith("unsupported_kubernetes.py")
    assert error.lineno == 5
    assert "airflow.providers.cncf is not provided by sparkflow" in error.message
    recorded = queries.list_import_errors(metastore.db)
    assert [e.filename for e in recorded] == [error.filename]


def test_task_ids_and_dependencies_are_airflows(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    bag = parse_folder(settings, metastore)

    def edges(dag_id: str) -> set[tuple[str, str]]:
        return {(up, t.task_id) for t in bag.dags[dag_id].tasks for up in t.upstream_task_ids}

    assert edges("classic_etl") == {
        ("start", "extract"), ("extract", "transform"), ("transform", "load"), ("load", "cleanup"),
    }
    assert edges("sdk_style") == {
        ("start", "ingest.download"), ("ingest.download", "ingest.validate"),
        ("ingest.validate", "publish.announce"), ("publish.announce", "publish.remember"),
        ("publish.remember", "should_report"), ("should_report", "report"),
    }
    assert edges("spark_etl") == {
        ("spark_jobs.count_trips", "spark_jobs.on_default"), ("spark_jobs.on_default", "report"),
    }
    classic = bag.dags["classic_etl"]
    assert classic.max_active_tasks == 4  # concurrency
    assert classic.timetable.description.startswith("@daily")  # schedule_interval
    assert classic.get_task("extract").retries == 1  # default_args
    assert classic.get_task("start").owner == "data-eng"
    assert bag.dags["spark_etl"].timetable.description == "cron 0 2 * * *"
    assert bag.dags["sdk_style"].params == {"region": "eu"}


def test_operators_are_sparkflows_own_classes(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    bag = parse_folder(settings, metastore)
    classic = bag.dags["classic_etl"]
    assert isinstance(classic.get_task("load"), BashOperator)
    assert isinstance(classic.get_task("extract"), PythonOperator)
    assert type(classic.get_task("load")).__name__ == "BashOperator"
    assert isinstance(bag.dags["spark_etl"].get_task("spark_jobs.count_trips"), SparkSubmitOperator)


def test_unsupported_arguments_give_one_warning_per_file_naming_them(
    settings: Settings, metastore: Metastore, dags_folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bag = parse_folder(settings, metastore)
    assert "legacy_arguments" in bag.dags
    (warning,) = bag.warnings
    assert warning.startswith(str(dags_folder / "legacy_arguments.py"))
    for argument in ("'access_control'", "'default_view'", "'sla'", "'executor_config'"):
        assert warning.count(argument) == 1, warning
    assert "task 'a', line 16; task 'b', line 16; task 'c', line 16" in warning
    assert [r.getMessage() for r in caplog.records if r.name == "sparkflow.loader"] == [warning]
    assert bag.dags["legacy_arguments"].timetable.description == "every 6:00:00"


def test_schedule_and_schedule_interval_together_is_an_import_error(tmp_path: Path) -> None:
    (tmp_path / "both.py").write_text(textwrap.dedent("""
        from airflow import DAG
        DAG("both", schedule="@daily", schedule_interval="@hourly")
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    (error,) = bag.import_errors
    assert "DAG 'both': give only one of schedule, schedule_interval and timetable" in error.message


def test_unknown_name_in_a_known_module_names_what_is_provided(tmp_path: Path) -> None:
    (tmp_path / "venv.py").write_text("from airflow.operators.python import PythonDockerOperator\n# DAG\n")
    (error,) = collect_dags(tmp_path, airflow_finders()).import_errors
    assert "airflow.operators.python.PythonDockerOperator is not provided by sparkflow" in error.message
    assert "BranchPythonOperator" in error.message and error.lineno == 1


def test_missing_implementation_module_fails_only_when_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_airflow_modules: None
) -> None:
    (tmp_path / "sql.py").write_text(textwrap.dedent("""
        from airflow import DAG
        from airflow.providers.apache.spark.operators import spark_sql
        DAG("imports_module_only")
        spark_sql.SparkSqlOperator
    """))
    monkeypatch.setitem(sys.modules, "sparkflow.operators.spark_sql", None)  # as if not written yet
    forget_alias_modules()  # nothing resolved earlier is cached
    (error,) = collect_dags(tmp_path, airflow_finders()).import_errors
    assert "SparkSqlOperator is not available in this sparkflow" in error.message
    assert "sparkflow.operators.spark_sql" in error.message and error.lineno == 5


def test_spark_sql_operator_from_the_provider_path_loads(tmp_path: Path) -> None:
    (tmp_path / "sql.py").write_text(textwrap.dedent("""
        from datetime import datetime
        from airflow import DAG
        from airflow.providers.apache.spark.operators.spark_sql import SparkSqlOperator

        with DAG("spark_sql_dag", start_date=datetime(2024, 1, 1), schedule_interval=None):
            SparkSqlOperator(task_id="count", sql="SELECT 1", master="local[*]", provide_context=True)
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    assert type(bag.dags["spark_sql_dag"].get_task("count")).__name__ == "SparkSqlOperator"


def test_timetable_and_trigger_rule_aliases(tmp_path: Path) -> None:
    (tmp_path / "tt.py").write_text(textwrap.dedent("""
        import pendulum
        from airflow import DAG
        from airflow.operators.empty import EmptyOperator
        from airflow.timetables.trigger import CronTriggerTimetable

        with DAG("tt", timetable=CronTriggerTimetable("30 2 * * *", timezone="Europe/Amsterdam"),
                 start_date=pendulum.datetime(2024, 1, 1, tz="UTC")):
            EmptyOperator(task_id="old_rule", trigger_rule="none_failed_or_skipped")
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    tt = bag.dags["tt"]
    assert tt.timetable.description == "cron 30 2 * * *"
    assert tt.get_task("old_rule").trigger_rule == "none_failed_min_one_success"


def test_task_process_reloads_an_airflow_dag(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    parse_folder(settings, metastore)
    dag = load_task_dag(metastore, "spark_etl")
    assert dag.get_task("spark_jobs.count_trips").application == "/jobs/spark/count_trips.py"


def test_runtime_import_inside_a_callable_works_after_the_finder_is_gone(tmp_path: Path) -> None:
    (tmp_path / "late.py").write_text(textwrap.dedent("""
        from airflow import DAG

        def later():
            from airflow.utils.trigger_rule import TriggerRule
            return TriggerRule.ALL_DONE

        dag = DAG("late")
    """))
    forget_alias_modules()
    assert not collect_dags(tmp_path, airflow_finders()).import_errors
    assert FINDER not in sys.meta_path
    module = dag_file_module("late")
    assert module.later() == "all_done"


# -- running ---------------------------------------------------------------------------------------------------


def test_classic_etl_runs(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    result = run(settings, metastore, dags_folder, "classic_etl")
    assert result.state is RunState.SUCCESS, states(metastore, result)
    assert set(states(metastore, result).values()) == {"success"}
    xcom = queries.get_xcom(metastore.db, "classic_etl", result.run_id, "load", "return_value")
    assert xcom is not None and xcom.value.startswith("loading total=12 for ")


def test_taskflow_runs_with_xcom_passing(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    result = run(settings, metastore, dags_folder, "taskflow_xcom")
    assert result.state is RunState.SUCCESS, states(metastore, result)
    xcom = queries.get_xcom(metastore.db, "taskflow_xcom", result.run_id, "load", "return_value")
    assert xcom is not None and xcom.value == 1236.7


def test_branching_runs(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    result = run(settings, metastore, dags_folder, "branching")
    assert result.state is RunState.SUCCESS, states(metastore, result)
    assert states(metastore, result) == {
        "branch": "success", "weekday_path": "success", "weekend_path": "skipped", "join": "success",
        "pick_size": "success", "small": "success", "large": "skipped", "gate": "success", "never": "skipped",
    }


def test_airflow3_sdk_dag_runs_with_groups_and_variables(
    settings: Settings, metastore: Metastore, dags_folder: Path
) -> None:
    metastore.variables.set_variable("environment", "prod")
    result = run(settings, metastore, dags_folder, "sdk_style")
    assert result.state is RunState.SUCCESS, states(metastore, result)
    assert set(states(metastore, result).values()) == {"success"}

    def xcom(task_id: str) -> object:
        record = queries.get_xcom(metastore.db, "sdk_style", result.run_id, task_id, "return_value")
        return record.value if record else None

    assert xcom("start") == "prod-eu"  # Variable.get at parse time, params through get_current_context()
    assert xcom("ingest.validate") == "raw-file.csv"
    assert xcom("publish.announce") == "announcing v1"  # @task.bash: the last output line
    assert xcom("publish.remember") == "announcing v1"  # Variable.set then Variable.get inside a task
    assert queries.get_variable(metastore.db, "last_published", metastore.secrets) == "announcing v1"


def test_variables_dag_runs(settings: Settings, metastore: Metastore, dags_folder: Path) -> None:
    metastore.variables.set_variable("target_table", "orders")
    metastore.variables.set_variable("etl_settings", json.dumps({"batch": 5}))
    result = run(settings, metastore, dags_folder, "variables_dag")
    assert result.state is RunState.SUCCESS, states(metastore, result)
    xcom = queries.get_xcom(metastore.db, "variables_dag", result.run_id, "use_variables", "return_value")
    assert xcom is not None and xcom.value == "orders:5:5"
    assert queries.get_variable(metastore.db, "last_batch", metastore.secrets) == "10"
    assert queries.get_variable(metastore.db, "last_settings", metastore.secrets) == '{"ok": true}'


def fake_spark_submit(folder: Path) -> Path:
    """A `spark-submit` on PATH that prints what a local-mode run prints, and its arguments."""
    folder.mkdir()
    script = folder / "spark-submit"
    script.write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        echo "args: $*"
        echo "INFO SparkContext: Submitted application: fake"
        echo "Logging events to file:/tmp/ev/local-1732880000123"
        exit 0
    """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_spark_dag_runs_with_the_provider_operator_and_hook(
    sf_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPARKFLOW_LOAD_DEFAULT_CONNECTIONS", "true")  # spark_default = local[*], as db init makes
    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        folder = settings.resolved_dags_folder
        shutil.copy(FIXTURES / "spark_etl.py", folder / "spark_etl.py")
        fake = fake_spark_submit(tmp_path / "bin")
        monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
        monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOCAL", "spark://local%5B2%5D")  # Airflow's env connection
        result = run(settings, metastore, folder, "spark_etl")
        assert result.state is RunState.SUCCESS, states(metastore, result)
        for task_id in ("spark_jobs.count_trips", "spark_jobs.on_default", "report"):
            ti = queries.get_task_instance(metastore.db, TIKey("spark_etl", result.run_id, task_id))
            assert ti.spark_app_id == "local-1732880000123", task_id
        log = Path(queries.get_task_instance(
            metastore.db, TIKey("spark_etl", result.run_id, "spark_jobs.count_trips")).log_path).read_text()
        assert "--master local[2]" in log and "--name count-trips-20240301" in log
        assert "/jobs/spark/count_trips.py --date 2024-03-01" in log
        default_log = Path(queries.get_task_instance(
            metastore.db, TIKey("spark_etl", result.run_id, "spark_jobs.on_default")).log_path).read_text()
        assert "--master local[*]" in default_log
        hook_log = Path(queries.get_task_instance(
            metastore.db, TIKey("spark_etl", result.run_id, "report")).log_path).read_text()
        assert "submitting to local[2]" in hook_log and "--name from-hook" in hook_log
    finally:
        metastore.db.dispose()


def test_sensors_dag_runs_with_fs_default(sf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKFLOW_LOAD_DEFAULT_CONNECTIONS", "true")  # fs_default = /
    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        folder = settings.resolved_dags_folder
        shutil.copy(FIXTURES / "sensors_dag.py", folder / "sensors_dag.py")
        result = run(settings, metastore, folder, "sensors_dag")
        assert result.state is RunState.SUCCESS, states(metastore, result)
        assert set(states(metastore, result).values()) == {"success"}
    finally:
        metastore.db.dispose()


def test_dags_test_and_dags_list_through_the_cli(
    sf_home: Path, dags_folder: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["db", "init"]) == 0
    capsys.readouterr()
    assert main(["dags", "list", "-o", "json"]) == 0
    out, err = capsys.readouterr()
    listed = {row["dag_id"] for row in json.loads(out)}
    assert {"classic_etl", "taskflow_xcom", "sdk_style", "spark_etl", "branching", "variables_dag"} <= listed
    assert "1 DAG file(s) failed to import" not in err  # -o json prints no table hint
    assert any("legacy_arguments.py: ignored arguments" in r.getMessage() for r in caplog.records)
    assert main(["dags", "test", "classic_etl", "2024-01-05"]) == 0
    out, _ = capsys.readouterr()
    assert "success" in out


def test_custom_operator_subclassing_airflows_base_operator_runs(
    settings: Settings, metastore: Metastore, write_dag
) -> None:
    path = write_dag("custom_op", """
        from datetime import datetime
        from airflow.models.baseoperator import BaseOperator
        from airflow.models import DAG

        class GreetOperator(BaseOperator):
            template_fields = ("who",)

            def __init__(self, who, **kwargs):
                super().__init__(**kwargs)
                self.who = who

            def execute(self, context):
                return f"hello {self.who} on {context['ds']}"

        with DAG("custom_op", start_date=datetime(2024, 1, 1), default_args={"provide_context": True}) as dag:
            GreetOperator(task_id="greet", who="{{ params.name }}", params={"name": "ada"}, task_concurrency=1)
    """)
    result = run(settings, metastore, path.parent, "custom_op")
    assert result.state is RunState.SUCCESS, states(metastore, result)
    xcom = queries.get_xcom(metastore.db, "custom_op", result.run_id, "greet", "return_value")
    assert xcom is not None and xcom.value == "hello ada on 2024-03-01"


def test_unprovided_task_decorator_variant_is_an_import_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "docker.py").write_text(textwrap.dedent("""
        from airflow.decorators import dag, task

        @dag(schedule=None)
        def docker_dag():
            @task.docker(image="python:3.12")
            def inside():
                return 1
            inside()

        docker_dag()
    """))
    (error,) = collect_dags(tmp_path, airflow_finders()).import_errors
    assert "@task.docker is not provided by sparkflow" in error.message and error.lineno == 6


# -- default connections and environment ------------------------------------------------------------------------


def test_db_init_creates_airflows_default_connections_once(sf_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKFLOW_LOAD_DEFAULT_CONNECTIONS", "true")
    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        metastore.connections.delete_connection("spark_default")
        metastore.connections.add_connections([Connection("spark_default", "spark", host="yarn")])
        init_metastore(settings).db.dispose()  # again: absent ones added, existing ones kept
        conns = {c.conn_id: c for c in queries.list_connections(metastore.db, metastore.secrets)}
        assert conns["fs_default"].conn_type == "fs" and conns["fs_default"].extra_dejson == {"path": "/"}
        assert conns["spark_default"].host == "yarn"
    finally:
        metastore.db.dispose()


def test_airflow_conn_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MY_PG", "postgres://u:p@db:5432/warehouse")
    (tmp_path / "hook.py").write_text(textwrap.dedent("""
        from airflow import DAG
        from airflow.hooks.base import BaseHook
        CONN = BaseHook.get_connection("my_pg")
        DAG("hooked")
    """))
    with task_environment(None, None, None):
        dags, errors = load_dag_file(tmp_path / "hook.py", airflow_finders())
    assert not errors, errors
    module = dag_file_module("hook")
    assert (module.CONN.host, module.CONN.port, module.CONN.schema) == ("db", 5432, "warehouse")


def test_connections_import_reads_airflows_export(
    sf_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "airflow_connections.json"
    export.write_text(json.dumps({  # what `airflow connections export connections.json` writes
        "spark_local": {"conn_type": "spark", "description": "", "login": None, "password": None,
                        "host": "local[*]", "port": None, "schema": "", "extra": ""},
        "pg": {"conn_type": "postgres", "description": "warehouse", "login": "etl", "password": "pw",
               "host": "db", "port": 5432, "schema": "dw", "extra": "{\"sslmode\": \"require\"}"},
    }))
    assert main(["db", "init"]) == 0
    assert main(["connections", "import", str(export)]) == 0, capsys.readouterr().err
    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        conns = {c.conn_id: c for c in queries.list_connections(metastore.db, metastore.secrets)}
        assert conns["spark_local"].host == "local[*]"
        assert (conns["pg"].password, conns["pg"].extra_dejson) == ("pw", {"sslmode": "require"})
    finally:
        metastore.db.dispose()


# -- never shadow a real Airflow ------------------------------------------------------------------------------


@pytest.fixture
def clean_airflow_modules() -> Iterator[None]:
    """Restore sys.modules' airflow entries (ours or a fake real one) after the test."""
    saved = {n: m for n, m in sys.modules.items() if n == "airflow" or n.startswith("airflow.")}
    yield
    for name in [n for n in sys.modules if n == "airflow" or n.startswith("airflow.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_a_real_airflow_is_never_shadowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_airflow_modules: None
) -> None:
    airflow_finders()  # our aliases may be cached in sys.modules from other tests
    site = tmp_path / "site"
    (site / "airflow").mkdir(parents=True)
    (site / "airflow" / "__init__.py").write_text("REAL = True\nfrom sparkflow import DAG\n")
    monkeypatch.syspath_prepend(str(site))
    assert real_airflow_installed()
    assert airflow_finders() == []
    dags_dir = tmp_path / "dags"
    dags_dir.mkdir()
    (dags_dir / "uses_real.py").write_text("import airflow\nassert airflow.REAL\ndag = airflow.DAG('real')\n")
    bag = collect_dags(dags_dir, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    assert "real" in bag.dags


def test_without_airflow_the_finder_is_offered(clean_airflow_modules: None) -> None:
    forget_alias_modules()
    assert not real_airflow_installed()
    assert airflow_finders() == [FINDER]
    with pytest.raises(NotProvidedError, match="module airflow.contrib.operators.kubernetes_pod_operator is not"):
        FINDER.find_spec("airflow.contrib.operators.kubernetes_pod_operator")


# -- every module and name issue 7 lists -------------------------------------------------------------------------


def test_every_module_and_name_the_issue_lists_imports_inside_a_dag_file(tmp_path: Path) -> None:
    (tmp_path / "everything.py").write_text(textwrap.dedent("""
        from airflow import DAG
        from airflow.models import DAG as ModelsDAG, BaseOperator, Variable, Param
        from airflow.models.dag import DAG as DagDAG
        from airflow.models.baseoperator import chain, cross_downstream
        from airflow.models.param import Param as ParamParam
        from airflow.decorators import dag, task
        from airflow.sdk import (
            DAG as SdkDAG, dag as sdk_dag, task as sdk_task, chain as sdk_chain, BaseOperator as SdkBaseOperator,
            Variable as SdkVariable, Param as SdkParam, get_current_context as sdk_get_current_context,
            TaskGroup as SdkTaskGroup,
        )
        from airflow.operators.bash import BashOperator
        from airflow.operators.python import (
            PythonOperator, BranchPythonOperator, ShortCircuitOperator, get_current_context,
        )
        from airflow.operators.empty import EmptyOperator
        from airflow.operators.dummy import DummyOperator
        from airflow.providers.standard.operators.bash import BashOperator as StdBashOperator
        from airflow.providers.standard.operators.python import (
            PythonOperator as StdPythonOperator, BranchPythonOperator as StdBranchPythonOperator,
            ShortCircuitOperator as StdShortCircuitOperator, get_current_context as std_get_current_context,
        )
        from airflow.providers.standard.operators.empty import EmptyOperator as StdEmptyOperator
        from airflow.providers.standard.sensors.filesystem import FileSensor as StdFileSensor
        from airflow.providers.standard.sensors.external_task import ExternalTaskSensor as StdExternalTaskSensor
        from airflow.providers.standard.sensors.time_delta import TimeDeltaSensor as StdTimeDeltaSensor
        from airflow.sensors.filesystem import FileSensor
        from airflow.sensors.external_task import ExternalTaskSensor
        from airflow.sensors.time_delta import TimeDeltaSensor
        from airflow.utils.dates import days_ago
        from airflow.utils.trigger_rule import TriggerRule
        from airflow.utils.task_group import TaskGroup
        from airflow.exceptions import (
            AirflowException, AirflowSkipException, AirflowFailException, AirflowSensorTimeout,
        )
        from airflow.hooks.base import BaseHook
        from airflow.models.connection import Connection
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
        from airflow.providers.apache.spark.operators.spark_sql import SparkSqlOperator
        from airflow.providers.apache.spark.operators.spark_jdbc import SparkJDBCOperator
        from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
        from airflow.providers.apache.spark.hooks.spark_sql import SparkSqlHook
        from airflow.providers.apache.spark.hooks.spark_jdbc import SparkJDBCHook

        VARIANTS = (task.branch, task.short_circuit, task.bash, sdk_task.branch)
        GET_CONNECTION = BaseHook.get_connection
        IMPORTED = dict(globals())

        with DAG("everything", start_date=days_ago(1), schedule_interval=None):
            EmptyOperator(task_id="one")
    """))
    forget_alias_modules()
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    assert not bag.warnings, bag.warnings
    assert "everything" in bag.dags
    got = dag_file_module("everything").IMPORTED

    from sparkflow.compat.airflow import models, spark, translate
    from sparkflow.definitions import baseoperator, context, taskgroup, trigger_rule
    from sparkflow.exceptions import AirflowException, FailTaskNoRetry, SensorTimeout, SkipTask
    from sparkflow.operators import empty, python, sensors, spark_jdbc, spark_sql, spark_submit

    def wraps(name: str, cls: type) -> None:  # an Airflow-arguments subclass of sparkflow's own class
        assert issubclass(got[name], cls) and got[name].__name__ == cls.__name__, name

    for name in ("DAG", "ModelsDAG", "DagDAG", "SdkDAG"):
        assert got[name] is translate.DAG, name
    for name in ("BaseOperator", "SdkBaseOperator"):
        assert got[name] is translate.BaseOperator, name
    assert got["dag"] is got["sdk_dag"] is translate.dag and got["task"] is got["sdk_task"] is translate.task
    assert got["chain"] is got["sdk_chain"] is baseoperator.chain
    assert got["cross_downstream"] is baseoperator.cross_downstream
    assert got["Variable"] is got["SdkVariable"] is models.Variable
    assert got["Param"] is got["ParamParam"] is got["SdkParam"] is models.Param
    for name in ("get_current_context", "sdk_get_current_context", "std_get_current_context"):
        assert got[name] is context.get_current_context, name
    assert got["TaskGroup"] is got["SdkTaskGroup"] is translate.TaskGroup
    assert issubclass(translate.TaskGroup, taskgroup.TaskGroup)
    assert got["TriggerRule"] is trigger_rule.TriggerRule and got["days_ago"] is models.days_ago
    for name, cls in (
        ("BashOperator", BashOperator), ("StdBashOperator", BashOperator),
        ("PythonOperator", PythonOperator), ("StdPythonOperator", PythonOperator),
        ("BranchPythonOperator", python.BranchPythonOperator),
        ("StdBranchPythonOperator", python.BranchPythonOperator),
        ("ShortCircuitOperator", python.ShortCircuitOperator),
        ("StdShortCircuitOperator", python.ShortCircuitOperator),
        ("EmptyOperator", empty.EmptyOperator), ("StdEmptyOperator", empty.EmptyOperator),
        ("FileSensor", sensors.FileSensor), ("StdFileSensor", sensors.FileSensor),
        ("ExternalTaskSensor", sensors.ExternalTaskSensor), ("StdExternalTaskSensor", sensors.ExternalTaskSensor),
        ("TimeDeltaSensor", sensors.TimeDeltaSensor), ("StdTimeDeltaSensor", sensors.TimeDeltaSensor),
        ("SparkSubmitOperator", spark_submit.SparkSubmitOperator),
        ("SparkSqlOperator", spark_sql.SparkSqlOperator), ("SparkJDBCOperator", spark_jdbc.SparkJDBCOperator),
    ):
        wraps(name, cls)
    assert got["DummyOperator"] is got["EmptyOperator"]
    assert (got["AirflowException"], got["AirflowSkipException"], got["AirflowFailException"],
            got["AirflowSensorTimeout"]) == (AirflowException, SkipTask, FailTaskNoRetry, SensorTimeout)
    assert got["BaseHook"] is models.BaseHook and got["GET_CONNECTION"] == models.BaseHook.get_connection
    assert got["Connection"] is Connection
    assert got["SparkSubmitHook"] is spark.SparkSubmitHook and got["SparkJDBCHook"] is spark.SparkJDBCHook
    assert got["SparkSqlHook"] is spark_sql.SparkSqlHook
    assert issubclass(spark.SparkJDBCHook, spark.SparkSubmitHook)


def test_pre_and_post_execute_arguments_are_reported_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "hooks.py").write_text(textwrap.dedent("""
        from datetime import datetime
        from airflow import DAG
        from airflow.operators.bash import BashOperator

        with DAG("hooks", start_date=datetime(2024, 1, 1), schedule=None):
            BashOperator(task_id="a", bash_command="echo", pre_execute=print, post_execute=print)
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    (warning,) = bag.warnings
    assert "'pre_execute'" in warning and "'post_execute'" in warning


def test_spark_jdbc_hook_submits_the_operators_jdbc_job(
    sf_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        folder = settings.resolved_dags_folder
        (folder / "jdbc_hook.py").write_text(textwrap.dedent("""
            from datetime import datetime
            from airflow import DAG
            from airflow.operators.python import PythonOperator
            from airflow.providers.apache.spark.hooks.spark_jdbc import SparkJDBCHook

            def copy_table():
                hook = SparkJDBCHook(
                    spark_app_name="copy-orders", spark_conn_id="spark_local", cmd_type="jdbc_to_spark",
                    jdbc_table="public.orders", jdbc_conn_id="pg", metastore_table="dw.orders",
                    save_mode="overwrite", fetch_size=500, executor_memory="1g",
                )
                assert (hook.conn_id, hook.spark_conn_id, hook.jdbc_conn_id) == ("spark_local", "spark_local", "pg")
                return hook.submit_jdbc_job()

            with DAG("jdbc_hook", start_date=datetime(2024, 1, 1), schedule=None):
                PythonOperator(task_id="copy", python_callable=copy_table)
        """))
        fake = fake_spark_submit(tmp_path / "bin")
        monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
        monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOCAL", "spark://local%5B2%5D")
        monkeypatch.setenv("AIRFLOW_CONN_PG", "postgres://etl:s3cret@db:5432/warehouse")
        result = run(settings, metastore, folder, "jdbc_hook")
        assert result.state is RunState.SUCCESS, states(metastore, result)
        ti = queries.get_task_instance(metastore.db, TIKey("jdbc_hook", result.run_id, "copy"))
        assert ti.spark_app_id == "local-1732880000123"
        log = Path(ti.log_path).read_text()
        assert "--master local[2]" in log and "--name copy-orders" in log and "--executor-memory 1g" in log
        assert "-cmdType jdbc_to_spark -url db:5432/warehouse -metastoreTable dw.orders" in log
        assert "-jdbcTable public.orders" in log and "-fetchsize 500" in log
        assert "s3cret" not in log
    finally:
        metastore.db.dispose()


def test_connections_import_reads_airflows_yaml_export(
    sf_home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "connections.yaml"
    export.write_text(textwrap.dedent("""\
        spark_yarn:
          conn_type: spark
          description: ''
          extra: '{"queue": "etl", "deploy-mode": "cluster"}'
          host: yarn
          login: null
          password: null
          port: null
          schema: ''
        pg:
          conn_type: postgres
          description: warehouse
          extra: ''
          host: db
          login: etl
          password: pw
          port: 5432
          schema: dw
    """))
    assert main(["db", "init"]) == 0
    assert main(["connections", "import", str(export)]) == 0, capsys.readouterr().err
    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        conns = {c.conn_id: c for c in queries.list_connections(metastore.db, metastore.secrets)}
        assert conns["spark_yarn"].host == "yarn"
        assert conns["spark_yarn"].extra_dejson == {"queue": "etl", "deploy-mode": "cluster"}
        assert (conns["pg"].login, conns["pg"].password, conns["pg"].port) == ("etl", "pw", 5432)
    finally:
        metastore.db.dispose()


def test_concurrency_wins_over_max_active_tasks_as_in_airflow_2(tmp_path: Path) -> None:
    (tmp_path / "conc.py").write_text(textwrap.dedent("""
        from airflow import DAG
        DAG("both_limits", concurrency=3, max_active_tasks=10)
        DAG("only_max", max_active_tasks=10)
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    assert (bag.dags["both_limits"].max_active_tasks, bag.dags["only_max"].max_active_tasks) == (3, 10)


def test_task_group_default_args_are_translated_and_reported(tmp_path: Path) -> None:
    (tmp_path / "groups.py").write_text(textwrap.dedent("""
        from datetime import datetime, timedelta
        from airflow import DAG
        from airflow.decorators import task, task_group
        from airflow.operators.bash import BashOperator
        from airflow.utils.task_group import TaskGroup

        with DAG("groups", start_date=datetime(2024, 1, 1), schedule=None):
            with TaskGroup("tg", default_args={"sla": timedelta(hours=1), "retries": 2}):
                BashOperator(task_id="a", bash_command="echo", trigger_rule="dummy")

            @task_group(default_args={"provide_context": True, "retries": 3, "executor_config": {}})
            def deco():
                @task
                def b():
                    return 1
                b()

            deco()
    """))
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    groups = bag.dags["groups"]
    assert groups.get_task("tg.a").retries == 2 and groups.get_task("tg.a").trigger_rule == "always"
    assert groups.get_task("deco.b").retries == 3
    (warning,) = bag.warnings
    assert "'sla' (TaskGroup 'tg' default_args" in warning
    assert "'executor_config' (@task_group deco default_args" in warning
