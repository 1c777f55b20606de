"""SparkSqlOperator with the real spark-sql from pyspark, local mode: SQL text and a templated .sql file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.state import RunState
from tests.helpers import run_dag

pytestmark = pytest.mark.spark


def test_spark_sql_runs_a_templated_sql_file(settings, metastore, write_dag, monkeypatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_SQL_DEFAULT", "spark://local%5B1%5D")
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    sql_file = settings.resolved_dags_folder / "answer.sql"
    sql_file.write_text("SELECT 40 + {{ params.two }} AS answer_for_{{ ds_nodash }}")
    path = write_dag("sql_dag", """
        from datetime import datetime
        from sparkflow import DAG
        from sparkflow.operators.spark_sql import SparkSqlOperator

        with DAG("sql_dag", start_date=datetime(2024, 1, 1), params={"two": 2}) as dag:
            SparkSqlOperator(task_id="answer", sql="answer.sql", name="answer")
    """)
    run = run_dag(settings, metastore, path, "sql_dag")
    ti = queries.get_task_instance(metastore.db, TIKey("sql_dag", run.run_id, "answer"))
    log = Path(ti.log_path).read_text()
    assert run.state is RunState.SUCCESS, log[-2000:]
    assert "-e SELECT 40 + 2 AS answer_for_20240301" in log  # the file was rendered, then run as text
    assert any(line.rstrip().endswith(" - 42") for line in log.splitlines())  # spark-sql printed the answer
    assert ti.spark_app_id and ti.spark_app_id.startswith("local-")
    assert ti.spark_metrics and ti.spark_metrics["succeeded"] is True
