"""Setup/teardown tasks and edge labels on real runs (scheduler loop + sequential executor), with Airflow's
semantics: a teardown runs after failed work and does not decide the run; a failed setup skips its teardown;
`with teardown.as_teardown(setups=...)` wires the work between them; clearing work clears its setup and teardown.
Labels are plain dependencies that the DAG keeps for the graph."""

from __future__ import annotations

from sparkflow.cli import main
from sparkflow.metastore import queries
from sparkflow.state import RunState
from tests.helpers import run_dag, states

SETUP_TEARDOWN_DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator, setup, task, teardown

with DAG("{dag_id}", start_date=datetime(2024, 1, 1)) as dag:
    @setup
    def create_cluster():
        {setup_body}

    @task
    def work():
        {work_body}

    @teardown(on_failure_fail_dagrun={fail_dagrun})
    def delete_cluster():
        {teardown_body}

    cluster = create_cluster()
    with delete_cluster().as_teardown(setups=cluster):
        work() >> BashOperator(task_id="after_work", bash_command="echo after")
"""


def write(write_dag, dag_id: str, setup_body: str = "return 'c1'", work_body: str = "return 1",
          teardown_body: str = "return None", fail_dagrun: bool = False):  # type: ignore[no-untyped-def]
    return write_dag(dag_id, SETUP_TEARDOWN_DAG.format(dag_id=dag_id, setup_body=setup_body, work_body=work_body,
                                                       teardown_body=teardown_body, fail_dagrun=fail_dagrun))


def test_teardown_runs_after_failed_work_and_the_work_fails_the_run(settings, metastore, write_dag) -> None:
    path = write(write_dag, "td_after_failure", work_body="raise RuntimeError('work broke')")
    run = run_dag(settings, metastore, path, "td_after_failure")
    assert states(metastore, run) == {"create_cluster": "success", "work": "failed", "after_work": "upstream_failed",
                                      "delete_cluster": "success"}
    assert run.state is RunState.FAILED
    dag = __import__("sparkflow.definitions.loader", fromlist=["x"]).collect_dags(path.parent, only_file=path)
    teardown = dag.dags["td_after_failure"].task_dict["delete_cluster"]
    assert teardown.is_teardown and teardown.trigger_rule.value == "all_done_setup_success"
    assert teardown.upstream_task_ids == {"create_cluster", "after_work"}


def test_a_failed_teardown_does_not_fail_the_run_unless_asked(settings, metastore, write_dag) -> None:
    path = write(write_dag, "td_fails", teardown_body="raise RuntimeError('cleanup broke')")
    run = run_dag(settings, metastore, path, "td_fails")
    assert states(metastore, run)["delete_cluster"] == "failed"
    assert run.state is RunState.SUCCESS
    path = write(write_dag, "td_fails_run", teardown_body="raise RuntimeError('cleanup broke')", fail_dagrun=True)
    assert run_dag(settings, metastore, path, "td_fails_run").state is RunState.FAILED


def test_a_failed_setup_skips_its_teardown(settings, metastore, write_dag) -> None:
    path = write(write_dag, "setup_fails", setup_body="raise RuntimeError('no cluster')")
    run = run_dag(settings, metastore, path, "setup_fails")
    assert states(metastore, run) == {"create_cluster": "failed", "work": "upstream_failed",
                                      "after_work": "upstream_failed", "delete_cluster": "skipped"}
    assert run.state is RunState.FAILED


def test_clearing_work_clears_its_setup_and_teardown(settings, metastore, write_dag, capsys) -> None:
    path = write(write_dag, "td_clear", work_body="raise RuntimeError('work broke')")
    run = run_dag(settings, metastore, path, "td_clear")
    assert main(["tasks", "clear", "td_clear", "-t", "^work$", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "Cleared 3 task instance(s)" in out
    assert states(metastore, run) == {"create_cluster": "none", "work": "none", "after_work": "upstream_failed",
                                      "delete_cluster": "none"}


def test_labels_are_plain_dependencies_shown_on_the_graph(settings, metastore, write_dag) -> None:
    path = write_dag("labelled", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator, Label
        from sparkflow.operators.python import BranchPythonOperator

        with DAG("labelled", start_date=datetime(2024, 1, 1)) as dag:
            check = BranchPythonOperator(task_id="check", python_callable=lambda: "big")
            big = EmptyOperator(task_id="big")
            small = EmptyOperator(task_id="small")
            check >> Label("more than 1 GB") >> big
            check.set_downstream(small, edge_modifier=Label("small"))
            [big, small] >> Label("merge") >> EmptyOperator(task_id="done", trigger_rule="none_failed")
    """)
    run = run_dag(settings, metastore, path, "labelled")
    assert states(metastore, run) == {"check": "success", "big": "success", "small": "skipped", "done": "success"}
    from sparkflow.definitions.loader import collect_dags
    from sparkflow.definitions.serialization import deserialize_dag, serialize_dag
    from sparkflow.web import svg

    dag = collect_dags(path.parent, only_file=path).dags["labelled"]
    assert dag.get_edge_info("check", "big") == {"label": "more than 1 GB"}
    assert dag.get_edge_info("small", "done") == {"label": "merge"}
    assert dag.task_dict["done"].upstream_task_ids == {"big", "small"}
    copy = deserialize_dag(serialize_dag(dag))
    assert copy.get_edge_info("check", "small") == {"label": "small"}
    node = svg.GraphNode("big", "EmptyOperator", ("check",), edge_labels=(("check", "more than 1 GB"),))
    assert "more than 1 GB" in str(svg.graph([svg.GraphNode("check", "X", ()), node]))
    assert queries.get_run(metastore.db, "labelled", run.run_id).state is RunState.SUCCESS
