"""Airflow DAG files that use dynamic task mapping, setup/teardown and edge labels load and run unchanged through
the compatibility layer (Airflow 2 and Airflow 3 module paths)."""

from __future__ import annotations

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.loader import collect_dags
from sparkflow.metastore import queries
from sparkflow.state import RunState
from tests.helpers import run_dag, states


def test_airflow2_file_with_mapping_setup_teardown_and_labels_runs(settings, metastore, write_dag) -> None:
    path = write_dag("af2_mapped", """
        from datetime import datetime
        from airflow import DAG
        from airflow.decorators import setup, task, task_group, teardown
        from airflow.models.mappedoperator import MappedOperator
        from airflow.operators.bash import BashOperator
        from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
        from airflow.utils.edgemodifier import Label

        with DAG("af2_mapped", start_date=datetime(2024, 1, 1), schedule_interval=None) as dag:
            @setup
            def make_table():
                return "tmp_table"

            @task
            def partitions():
                return ["2024-01-01", "2024-01-02"]

            @task
            def load(day, table):
                return f"{table}/{day}"

            @teardown
            def drop_table(name):
                print("dropping", name)

            table = make_table()
            loaded = load.partial(table=table).expand(day=partitions())
            loaded >> drop_table(table)
            spark = SparkSubmitOperator.partial(task_id="spark", conn_id="spark_local",
                                                application="job.py").expand(application_args=[["a"], ["b"]])
            assert isinstance(spark, MappedOperator)
            BashOperator(task_id="start", bash_command="echo start") >> Label("then count") >> BashOperator(
                task_id="end", bash_command="echo end")

            @task_group
            def per_file(name):
                @task
                def size(n):
                    return len(n)
                return size(name)

            per_file.expand(name=["a", "bb", "ccc"])
    """)
    bag = collect_dags(path.parent, airflow_finders(), only_file=path)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["af2_mapped"]
    assert dag.get_edge_info("start", "end") == {"label": "then count"}
    assert dag.task_dict["spark"].is_mapped and dag.task_dict["spark"].task_type == "SparkSubmitOperator"
    run = run_dag(settings, metastore, path, "af2_mapped", meta_path_finders=airflow_finders())
    # No Spark connection here, so the mapped Spark task fails (test_mapped_spark runs one on real spark-submit);
    # everything else ran.
    assert run.state is RunState.FAILED and states(metastore, run)["spark"] == "failed"
    got = states(metastore, run)
    assert got["make_table"] == "success" and got["drop_table"] == "success" and got["load"] == "success"
    values = [x.value for x in queries.list_xcoms(metastore.db, "af2_mapped", run.run_id) if x.task_id == "load"]
    assert sorted(values) == ["tmp_table/2024-01-01", "tmp_table/2024-01-02"]
    sizes = sorted(x.value for x in queries.list_xcoms(metastore.db, "af2_mapped", run.run_id)
                   if x.task_id == "per_file.size")
    assert sizes == [1, 2, 3]


def test_airflow3_sdk_names(tmp_path) -> None:
    (tmp_path / "sdk.py").write_text(
        "from datetime import datetime\n"
        "from airflow.sdk import DAG, Label, setup, task, teardown\n"
        "with DAG('sdk_names', start_date=datetime(2024, 1, 1), schedule=None):\n"
        "    @setup\n"
        "    def s(): return 1\n"
        "    @teardown\n"
        "    def t(): return 1\n"
        "    @task\n"
        "    def w(x): return x\n"
        "    with t().as_teardown(setups=s()):\n"
        "        w.expand(x=[1, 2]) >> Label('done') >> w.override(task_id='last')(0)\n"
    )
    bag = collect_dags(tmp_path, airflow_finders())
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["sdk_names"]
    assert dag.task_dict["s"].is_setup and dag.task_dict["t"].is_teardown and dag.task_dict["w"].is_mapped
    assert dag.task_dict["w"].upstream_task_ids == {"s"} and dag.task_dict["t"].upstream_task_ids == {"s", "last"}
    assert dag.get_edge_info("w", "last") == {"label": "done"}
