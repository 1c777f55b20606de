"""Places where sparkflow used to differ silently from Airflow (issue 18's numbered list), each run as a user would:
Airflow DAG files through the compatibility layer and the real loop (sequential executor)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.context import task_environment
from sparkflow.exceptions import NotFound
from sparkflow.logs import task_log_path
from sparkflow.metastore import queries
from sparkflow.operators.spark_sql import SparkSqlHook
from sparkflow.runtime.context import metastore_environment
from sparkflow.state import RunState
from tests.helpers import run_dag, states


def run_airflow_dag(settings, metastore, path: Path, dag_id: str):
    with metastore_environment(metastore):
        return run_dag(settings, metastore, path, dag_id, meta_path_finders=airflow_finders())


def xcom(metastore, run, task_id: str, key: str = "return_value"):
    record = queries.get_xcom(metastore.db, run.dag_id, run.run_id, task_id, key)
    return record.value if record is not None else None


def task_log(settings, run, task_id: str) -> str:
    return task_log_path(settings.resolved_log_folder, run.dag_id, run.run_id, task_id, 1).read_text()


def test_1_an_xcomarg_in_an_f_string_pulls_the_value(settings, metastore, write_dag) -> None:
    path = write_dag("fstring", """
        from datetime import datetime
        from airflow import DAG
        from airflow.models import XComArg
        from airflow.operators.bash import BashOperator
        from airflow.decorators import task

        with DAG("fstring", start_date=datetime(2024, 1, 1), schedule=None) as dag:
            @task
            def make() -> str:
                return "forty-two"

            made = make()
            first = BashOperator(task_id="first", bash_command="echo from-bash")
            second = BashOperator(task_id="second", bash_command=f"echo {XComArg(first)} and {made}")
            third = BashOperator(task_id="third", bash_command=f"echo {first.output}")
            [first, made] >> second >> third
    """)
    run = run_airflow_dag(settings, metastore, path, "fstring")
    assert run.state is RunState.SUCCESS, states(metastore, run)
    assert xcom(metastore, run, "second") == "from-bash and forty-two"
    assert xcom(metastore, run, "third") == "from-bash"


def test_2_templates_exts_reads_files_in_fields_templates_dict_and_containers(settings, metastore,
                                                                             write_dag) -> None:
    folder = settings.resolved_dags_folder
    (folder / "query.sql").write_text("SELECT * FROM t WHERE day = '{{ ds }}'")
    (folder / "sql").mkdir()
    (folder / "sql" / "nested.sql").write_text("-- {{ params.who }}")
    searched = folder.parent / "searched"
    searched.mkdir()
    (searched / "elsewhere.sql").write_text("DELETE {{ ds_nodash }}")
    path = write_dag("exts", f"""
        from datetime import datetime
        from airflow import DAG
        from airflow.decorators import task
        from airflow.operators.python import PythonOperator

        def show(sql, templates_dict):
            return {{"sql": sql, "dict": templates_dict}}

        with DAG("exts", start_date=datetime(2024, 1, 1), schedule=None, params={{"who": "me"}},
                 template_searchpath=[{str(searched)!r}]) as dag:
            PythonOperator(task_id="op", python_callable=show, templates_exts=[".sql"],
                           op_kwargs={{"sql": "query.sql"}},
                           templates_dict={{"files": ["sql/nested.sql", "elsewhere.sql"], "plain": "{{{{ ds }}}}"}})

            @task(templates_exts=[".sql"])
            def decorated(sql: str) -> str:
                return sql

            decorated(sql="query.sql")
    """)
    run = run_airflow_dag(settings, metastore, path, "exts")
    assert run.state is RunState.SUCCESS, states(metastore, run)
    assert xcom(metastore, run, "op") == {
        "sql": "SELECT * FROM t WHERE day = '2024-03-01'",
        "dict": {"files": ["-- me", "DELETE 20240301"], "plain": "2024-03-01"},
    }
    assert xcom(metastore, run, "decorated") == "SELECT * FROM t WHERE day = '2024-03-01'"


def test_3_render_template_is_public(settings, metastore, write_dag) -> None:
    (settings.resolved_dags_folder / "hello.sh").write_text("echo {{ params.name }}")
    path = write_dag("render", """
        import jinja2
        from datetime import datetime
        from airflow import DAG
        from airflow.operators.bash import BashOperator
        from airflow.operators.python import PythonOperator

        def use_it(**context):
            task = context["task"]
            own = jinja2.Environment()
            return [task.render_template("{{ ds }}/{{ params.name }}", context),
                    task.render_template({"k": ["{{ ds_nodash }}"]}, context),
                    task.render_template("{{ 1 + 1 }}", context, jinja_env=own),
                    context["dag"].get_task("bash").render_template("hello.sh", context)]

        with DAG("render", start_date=datetime(2024, 1, 1), schedule=None, params={"name": "x"}) as dag:
            PythonOperator(task_id="py", python_callable=use_it)
            BashOperator(task_id="bash", bash_command="true")
    """)
    run = run_airflow_dag(settings, metastore, path, "render")
    assert run.state is RunState.SUCCESS, states(metastore, run)
    assert xcom(metastore, run, "py") == ["2024-03-01/x", {"k": ["20240301"]}, "2", "echo x"]


def test_4_every_loggers_info_lines_reach_the_task_log(settings, metastore, write_dag) -> None:
    path = write_dag("logging_dag", """
        import logging
        from datetime import datetime
        from airflow import DAG
        from airflow.models import BaseOperator
        from airflow.operators.python import PythonOperator

        log = logging.getLogger(__name__)

        class Custom(BaseOperator):
            def execute(self, context):
                self.log.info("self-log-info from %s", self.task_id)
                logging.getLogger("some.library").info("library-info")

        def call():
            log.info("module-logger-info")
            logging.info("root-logging-info")
            logging.debug("root-debug-stays-out")

        with DAG("logging_dag", start_date=datetime(2024, 1, 1), schedule=None) as dag:
            PythonOperator(task_id="py", python_callable=call) >> Custom(task_id="custom")
    """)
    handlers_before = list(logging.getLogger().handlers)
    run = run_airflow_dag(settings, metastore, path, "logging_dag")
    assert logging.getLogger().handlers == handlers_before  # the try's handler left with the try
    assert run.state is RunState.SUCCESS, states(metastore, run)
    py_log = task_log(settings, run, "py")
    assert "module-logger-info" in py_log and "root-logging-info" in py_log
    assert "root-debug-stays-out" not in py_log
    custom_log = task_log(settings, run, "custom")
    assert "self-log-info from custom" in custom_log and "{some.library} INFO - library-info" in custom_log
    assert "library-info" not in py_log  # each try's log holds its own lines only


def test_5_spark_sql_without_its_connection_uses_the_operators_master() -> None:
    def no_connections(conn_id: str):
        raise NotFound(f"connection '{conn_id}' does not exist")

    with task_environment(None, no_connections, None):
        argv = SparkSqlHook(sql="SELECT 1", master="local")._prepare_command()
        assert argv[argv.index("--master") + 1] == "local"
        with pytest.raises(NotFound, match="spark_sql_default"):  # neither: an error, not the provider's yarn
            SparkSqlHook(sql="SELECT 1")._prepare_command()


# Difference 6 (the hint for a missing non-Spark connection) is tests/unit/test_connections.py
# ::test_missing_non_spark_connection_gets_a_hint_of_its_own_type.


def test_7_bash_output_processor(settings, metastore, write_dag) -> None:
    path = write_dag("processed", """
        import json
        from datetime import datetime
        from airflow import DAG
        from airflow.operators.bash import BashOperator
        from airflow.decorators import task

        with DAG("processed", start_date=datetime(2024, 1, 1), schedule=None) as dag:
            BashOperator(task_id="json", bash_command='echo noise; echo \\'{"rows": 3}\\'',
                         output_processor=json.loads)

            @task.bash(output_processor=lambda out: out.upper())
            def shout() -> str:
                return "echo quiet"

            shout()
    """)
    run = run_airflow_dag(settings, metastore, path, "processed")
    assert run.state is RunState.SUCCESS, states(metastore, run)
    assert xcom(metastore, run, "json") == {"rows": 3}
    assert xcom(metastore, run, "shout") == "QUIET"


def test_8_ignored_task_argument_warning_names_the_task(tmp_path) -> None:
    from sparkflow.definitions.loader import load_dag_file

    path = tmp_path / "warned.py"
    path.write_text(
        "from datetime import datetime, timedelta\n"
        "from airflow import DAG\n"
        "from airflow.decorators import task\n"
        "with DAG('warned', start_date=datetime(2024, 1, 1), schedule=None) as dag:\n"
        "    @task(sla=timedelta(hours=1))\n"
        "    def load_orders():\n"
        "        pass\n"
        "    load_orders()\n"
    )
    reported: list[str] = []
    dags, errors = load_dag_file(path, airflow_finders(), warnings_out=reported)
    assert not errors and dags
    assert reported == [f"{path}: ignored arguments sparkflow cannot honour: 'sla' (@task load_orders, line 5)"]


@pytest.fixture(autouse=True)
def _no_stray_root_level():
    """The task logging hook restores the root logger's level after each try."""
    before = logging.getLogger().level
    yield
    assert logging.getLogger().level == before
