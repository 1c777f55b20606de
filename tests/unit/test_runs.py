"""Whole runs through the real scheduler loop and task runner, in-process (sequential executor): XCom, branching,
short-circuit, skips, retries with an injected clock, callbacks, the audit trail and try history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.state import RunState, TaskState
from tests.helpers import NOW, Clock, run_dag, states


def test_taskflow_xcom_and_multiple_outputs(settings, metastore, write_dag: Callable[[str, str], Path]) -> None:
    path = write_dag("flow", """
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("flow", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def extract():
                return [1, 2, 3]

            @task(multiple_outputs=True)
            def stats(values):
                return {"total": sum(values), "count": len(values)}

            @task
            def report(total, count, ds=None):
                return f"{ds}: {total}/{count}"

            s = stats(extract())
            report(s["total"], s["count"])
    """)
    run = run_dag(settings, metastore, path, "flow")
    assert run.state is RunState.SUCCESS
    get = lambda task, key="return_value": queries.get_xcom(metastore.db, "flow", run.run_id, task, key).value  # noqa: E731
    assert get("extract") == [1, 2, 3]
    assert get("stats", "total") == 6 and get("stats", "count") == 3
    assert get("report") == "2024-03-01: 6/3"


def test_a_return_value_is_stored_with_the_outcome_as_airflow_pushes_it(settings, metastore, write_dag) -> None:
    """The return value goes in the try's outcome transaction, yet reads as Airflow's pushed one: the task's own
    post_execute pulls it, it stays when post_execute then fails, and a value that is not JSON fails the try."""
    path = write_dag("returns", """
        from datetime import datetime
        from sparkflow import DAG, PythonOperator

        class Checked(PythonOperator):
            def post_execute(self, context, result=None):
                own = context["ti"].xcom_pull(task_ids=self.task_id)
                assert own == result == {"rows": 3}, own
                if self.task_id == "fails_after":
                    raise RuntimeError("post_execute failed")

        with DAG("returns", start_date=datetime(2024, 1, 1)) as dag:
            Checked(task_id="ok", python_callable=lambda: {"rows": 3})
            Checked(task_id="fails_after", python_callable=lambda: {"rows": 3})
            PythonOperator(task_id="not_json", python_callable=lambda: {1, 2})
    """)
    run = run_dag(settings, metastore, path, "returns")
    assert states(metastore, run) == {"ok": "success", "fails_after": "failed", "not_json": "failed"}
    get = lambda task: queries.get_xcom(metastore.db, "returns", run.run_id, task, "return_value")  # noqa: E731
    assert get("ok").value == {"rows": 3} and get("fails_after").value == {"rows": 3}
    assert get("not_json") is None
    error = queries.get_task_instance(metastore.db, TIKey("returns", run.run_id, "not_json")).error
    assert "XCom 'return_value' value of type set is not JSON-serialisable" in error


def test_branching_skips_the_other_branch_and_join_runs(settings, metastore, write_dag) -> None:
    path = write_dag("branchy", """
        from datetime import datetime
        from sparkflow import DAG, BranchPythonOperator, EmptyOperator

        with DAG("branchy", start_date=datetime(2024, 1, 1)) as dag:
            pick = BranchPythonOperator(task_id="pick", python_callable=lambda params: params["way"])
            left = EmptyOperator(task_id="left")
            right = EmptyOperator(task_id="right")
            after_right = EmptyOperator(task_id="after_right")
            join = EmptyOperator(task_id="join", trigger_rule="none_failed_min_one_success")
            pick >> [left, right]
            right >> after_right
            [left, after_right] >> join
    """)
    run = run_dag(settings, metastore, path, "branchy", conf={"way": "left"})
    assert run.state is RunState.SUCCESS
    assert states(metastore, run) == {
        "pick": "success", "left": "success", "right": "skipped", "after_right": "skipped", "join": "success",
    }


def test_short_circuit_skips_everything_downstream(settings, metastore, write_dag) -> None:
    path = write_dag("shorty", """
        from datetime import datetime
        from sparkflow import DAG, ShortCircuitOperator, BashOperator, EmptyOperator

        with DAG("shorty", start_date=datetime(2024, 1, 1)) as dag:
            gate = ShortCircuitOperator(task_id="gate", python_callable=lambda: False)
            a = BashOperator(task_id="a", bash_command="exit 1")
            b = EmptyOperator(task_id="b", trigger_rule="all_done")
            gate >> a >> b
    """)
    run = run_dag(settings, metastore, path, "shorty")
    assert run.state is RunState.SUCCESS
    assert states(metastore, run) == {"gate": "success", "a": "skipped", "b": "skipped"}


def test_bash_exit_99_skips_and_last_line_is_xcom(settings, metastore, write_dag) -> None:
    path = write_dag("bashy", """
        from datetime import datetime
        from sparkflow import DAG, BashOperator

        with DAG("bashy", start_date=datetime(2024, 1, 1)) as dag:
            echo = BashOperator(task_id="echo", bash_command="echo first; echo {{ ds_nodash }}-$GREETING",
                                env={"GREETING": "hi"})
            skip = BashOperator(task_id="skip", bash_command="exit 99")
    """)
    run = run_dag(settings, metastore, path, "bashy")
    assert states(metastore, run) == {"echo": "success", "skip": "skipped"}
    assert queries.get_xcom(metastore.db, "bashy", run.run_id, "echo", "return_value").value == "20240301-hi"
    assert run.state is RunState.SUCCESS


def test_retries_wait_for_retry_delay_then_fail_with_history(settings, metastore, write_dag, tmp_path) -> None:
    marker = tmp_path / "calls.txt"
    path = write_dag("flaky", f"""
        from datetime import datetime, timedelta
        from sparkflow import DAG, PythonOperator

        calls = []

        def boom():
            with open({str(marker)!r}, "a") as fh:
                fh.write("x")
            raise RuntimeError("boom with secret-free message")

        def record_failure(context):
            with open({str(marker)!r} + ".cb", "w") as fh:
                fh.write(type(context["exception"]).__name__)

        with DAG("flaky", start_date=datetime(2024, 1, 1)) as dag:
            PythonOperator(task_id="boom", python_callable=boom, retries=2, retry_delay=timedelta(minutes=1),
                           on_failure_callback=record_failure)
    """)
    clock = Clock(NOW)
    run = run_dag(settings, metastore, path, "flaky", clock=clock)
    assert run.state is RunState.FAILED
    assert marker.read_text() == "xxx"  # 1 try + 2 retries
    assert Path(str(marker) + ".cb").read_text() == "RuntimeError"
    ti = queries.get_task_instance(metastore.db, TIKey("flaky", run.run_id, "boom"))
    assert ti.state is TaskState.FAILED and ti.try_number == 3
    assert "RuntimeError: boom" in (ti.error or "")
    tries = queries.task_tries(metastore.db, ti.key)
    assert [t.state for t in tries] == [TaskState.UP_FOR_RETRY, TaskState.UP_FOR_RETRY, TaskState.FAILED]
    assert clock.now - NOW >= timedelta(minutes=2)  # two retry delays had to pass on the loop's clock
    assert all(Path(t.log_path).is_file() for t in tries)
    events = queries.state_events(metastore.db, "flaky", run.run_id)
    moves = [(e.old_state, e.new_state) for e in events if e.task_id == "boom"]
    assert ("running", "up_for_retry") in moves and moves[-1] == ("running", "failed")


def test_upstream_failure_propagates_and_all_done_still_runs(settings, metastore, write_dag) -> None:
    path = write_dag("chainfail", """
        from datetime import datetime
        from sparkflow import DAG, BashOperator, EmptyOperator

        with DAG("chainfail", start_date=datetime(2024, 1, 1)) as dag:
            bad = BashOperator(task_id="bad", bash_command="echo oops; exit 3")
            mid = EmptyOperator(task_id="mid")
            end = EmptyOperator(task_id="end")
            cleanup = EmptyOperator(task_id="cleanup", trigger_rule="all_done")
            bad >> mid >> end
            bad >> cleanup
    """)
    run = run_dag(settings, metastore, path, "chainfail")
    assert run.state is RunState.FAILED
    assert states(metastore, run) == {
        "bad": "failed", "mid": "upstream_failed", "end": "upstream_failed", "cleanup": "success",
    }
    bad = queries.get_task_instance(metastore.db, TIKey("chainfail", run.run_id, "bad"))
    assert "non-zero exit code 3" in bad.error


def test_execution_timeout_fails_the_try(settings, metastore, write_dag) -> None:
    path = write_dag("slow", """
        from datetime import datetime, timedelta
        from sparkflow import DAG, BashOperator

        with DAG("slow", start_date=datetime(2024, 1, 1)) as dag:
            BashOperator(task_id="sleepy", bash_command="sleep 30", execution_timeout=timedelta(seconds=0.5))
    """)
    run = run_dag(settings, metastore, path, "slow")
    ti = queries.get_task_instance(metastore.db, TIKey("slow", run.run_id, "sleepy"))
    assert ti.state is TaskState.FAILED
    assert "execution_timeout" in ti.error
    assert ti.duration is not None and ti.duration < 15  # the sleep was killed, not waited for


