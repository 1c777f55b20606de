"""Dynamic task mapping on real runs (scheduler loop + sequential executor): expansion at run time, per-instance
XComs and retries, the lazy list downstream, zero-length skips, max_map_length and bad input types."""

from __future__ import annotations

from pathlib import Path

from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.state import RunState, TaskState
from tests.helpers import run_dag


def instances(metastore, run, task_id: str) -> list[tuple[int, str]]:
    return [(ti.map_index, ti.state.value) for ti in queries.task_instances(metastore.db, run.dag_id, run.run_id)
            if ti.task_id == task_id]


def xcom(metastore, run, task_id: str, map_index: int = -1):
    record = queries.get_xcom(metastore.db, run.dag_id, run.run_id, task_id, "return_value", map_index)
    return None if record is None else record.value


def test_taskflow_expand_over_upstream_output_then_reduce(settings, metastore, write_dag) -> None:
    path = write_dag("mapped", """
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("mapped", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def make():
                return [1, 2, 3]

            @task
            def scale(x, factor):
                return x * factor

            @task
            def total(values):
                return {"sum": sum(values), "items": list(values)}

            total(scale.partial(factor=10).expand(x=make()))
    """)
    run = run_dag(settings, metastore, path, "mapped")
    assert run.state is RunState.SUCCESS
    assert sorted(instances(metastore, run, "scale")) == [(0, "success"), (1, "success"), (2, "success")]
    assert [xcom(metastore, run, "scale", i) for i in range(3)] == [10, 20, 30]
    assert xcom(metastore, run, "total") == {"sum": 60, "items": [10, 20, 30]}


def test_classic_operator_cross_product_expand_kwargs_map_and_zip(settings, metastore, write_dag) -> None:
    path = write_dag("classic", """
        from datetime import datetime
        from sparkflow import DAG, BashOperator, PythonOperator, task

        with DAG("classic", start_date=datetime(2024, 1, 1)) as dag:
            BashOperator.partial(task_id="echo", do_xcom_push=True).expand(
                bash_command=["echo a", "echo b"], env=[{"X": "1"}, {"X": "2"}, {"X": "3"}])

            @task
            def pairs():
                return {"a": 1, "b": 2}

            @task
            def show(pair):
                return f"{pair[0]}={pair[1]}"

            show.expand(pair=pairs())
            PythonOperator.partial(task_id="kw", python_callable=lambda a, b: a - b).expand_kwargs(
                [{"op_kwargs": {"a": 5, "b": 1}}, {"op_kwargs": {"a": 9, "b": 4}}])

            @task
            def nums():
                return [1, 2, 3]

            @task
            def ident(v):
                return v

            ident.override(task_id="mapped_plus").expand(v=nums().map(lambda n: n + 100))
            ident.override(task_id="zipped").expand(v=nums().zip(pairs()))
    """)
    run = run_dag(settings, metastore, path, "classic")
    assert run.state is RunState.SUCCESS, queries.task_instances(metastore.db, "classic", run.run_id)
    assert len(instances(metastore, run, "echo")) == 6  # 2 commands x 3 environments
    assert [xcom(metastore, run, "show", i) for i in range(2)] == ["a=1", "b=2"]
    assert [xcom(metastore, run, "kw", i) for i in range(2)] == [4, 5]
    assert [xcom(metastore, run, "mapped_plus", i) for i in range(3)] == [101, 102, 103]
    assert [xcom(metastore, run, "zipped", i) for i in range(2)] == [[1, ["a", 1]], [2, ["b", 2]]]


def test_zero_length_skips_and_downstream_follows(settings, metastore, write_dag) -> None:
    path = write_dag("empty", """
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("empty", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def nothing():
                return []

            @task
            def each(x):
                return x

            @task
            def after(values):
                return len(values)

            after(each.expand(x=nothing()))
    """)
    run = run_dag(settings, metastore, path, "empty")
    assert run.state is RunState.SUCCESS
    assert instances(metastore, run, "each") == [(-1, "skipped")]
    assert instances(metastore, run, "after") == [(-1, "skipped")]


def test_non_list_input_and_too_many_items_fail_the_mapped_task(settings, metastore, write_dag,
                                                                monkeypatch) -> None:
    monkeypatch.setenv("SPARKFLOW_MAX_MAP_LENGTH", "4")
    from sparkflow.settings import load_settings

    path = write_dag("bad", """
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("bad", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def text():
                return "abc"

            @task
            def many():
                return list(range(5))

            @task
            def each(x):
                return x

            each.override(task_id="over_text").expand(x=text())
            each.override(task_id="over_many").expand(x=many())
    """)
    run = run_dag(load_settings(), metastore, path, "bad")
    assert run.state is RunState.FAILED
    text_ti = queries.get_task_instance(metastore.db, TIKey("bad", run.run_id, "over_text"))
    assert text_ti.state is TaskState.FAILED
    assert "is a str, not a list or dict" in (text_ti.error or "")
    many_ti = queries.get_task_instance(metastore.db, TIKey("bad", run.run_id, "over_many"))
    assert "would have 5 instances, more than max_map_length 4" in (many_ti.error or "")


def test_instance_one_fails_and_is_retried_alone(settings, metastore, write_dag, tmp_path) -> None:
    marker = tmp_path / "failed-once"
    path = write_dag("retry_one", f"""
        from datetime import datetime
        from pathlib import Path
        from sparkflow import DAG, task

        with DAG("retry_one", start_date=datetime(2024, 1, 1)) as dag:
            @task(retries=1, retry_delay=1)
            def work(x):
                marker = Path({str(marker)!r})
                if x == "b" and not marker.exists():
                    marker.write_text("once")
                    raise RuntimeError("instance 1 fails its first try")
                return x.upper()

            work.expand(x=["a", "b", "c"])
    """)
    run = run_dag(settings, metastore, path, "retry_one")
    assert run.state is RunState.SUCCESS
    tis = {ti.map_index: ti for ti in queries.task_instances(metastore.db, "retry_one", run.run_id)}
    assert {i: ti.try_number for i, ti in tis.items()} == {0: 1, 1: 2, 2: 1}
    tries = queries.task_tries(metastore.db, TIKey("retry_one", run.run_id, "work", 1))
    assert [(t.try_number, t.state.value) for t in tries] == [(1, "up_for_retry"), (2, "success")]
    assert [xcom(metastore, run, "work", i) for i in range(3)] == ["A", "B", "C"]
    log_path = tries[0].log_path or ""
    assert "map_index=1" in log_path and "instance 1 fails" in Path(log_path).read_text()


def test_mapped_task_group_runs_each_instance_through_the_group(settings, metastore, write_dag) -> None:
    path = write_dag("group", """
        from datetime import datetime
        from sparkflow import DAG, task, task_group

        with DAG("group", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def inc(v):
                return v + 1

            @task
            def square(v):
                return v * v

            @task_group
            def pipeline(v):
                return square(inc(v))

            @task
            def collect(values):
                return list(values)

            collect(pipeline.expand(v=[1, 2, 3]))
    """)
    run = run_dag(settings, metastore, path, "group")
    assert run.state is RunState.SUCCESS, queries.task_instances(metastore.db, "group", run.run_id)
    assert [xcom(metastore, run, "pipeline.square", i) for i in range(3)] == [4, 9, 16]
    assert xcom(metastore, run, "collect") == [4, 9, 16]


def test_serialized_dag_keeps_what_the_scheduler_needs_to_expand() -> None:
    from sparkflow import DAG, BashOperator, task, task_group
    from sparkflow.definitions.serialization import deserialize_dag, serialize_dag
    from sparkflow.scheduler.planner import plan_run

    with DAG("ser") as dag:
        @task
        def make():
            return [1, 2]

        @task
        def each(x, y):
            return x

        each.expand(x=make(), y=[1, 2, 3])
        BashOperator.partial(task_id="zipped").expand_kwargs(make().zip(make(), fillvalue=None).map(str))

        @task_group
        def grp(v):
            return each.override(task_id="inner")(v, 0)

        grp.expand(v=[7, 8, 9, 10])

    copy = deserialize_dag(serialize_dag(dag))
    lengths = {"make": 2, "make__1": 3, "make__2": 5}

    def source_length(arg) -> int:
        return lengths[arg.operator.task_id]

    assert sorted(t.task_id for t in copy.tasks if t.is_mapped) == ["each", "grp.inner", "zipped"]
    assert copy.task_dict["each"].map_length(source_length) == 6
    assert copy.task_dict["zipped"].map_length(source_length) == 5  # zip with a fillvalue: the longest
    assert copy.task_dict["grp.inner"].map_length(source_length) == 4
    assert copy.task_dict["grp.inner"].mapped_group_id == "grp"
    done = {tid: TaskState.SUCCESS for tid in lengths}
    plan = plan_run(copy, {**done, "each": TaskState.NONE, "zipped": TaskState.NONE, "grp.inner": TaskState.NONE},
                    {}, None)  # type: ignore[arg-type]
    assert sorted(plan.expand) == ["each", "grp.inner", "zipped"]


def test_max_active_tis_limits_count_mapped_instances(settings, metastore, write_dag) -> None:
    from datetime import timedelta

    from sparkflow.scheduler.loop import SchedulerLoop
    from sparkflow.scheduler.runs import trigger_dag
    from tests.helpers import NOW, Clock
    from tests.unit.test_scheduler_tasks import HoldingExecutor, load

    path = write_dag("limited", """
        from datetime import datetime
        from sparkflow import DAG, task

        with DAG("limited", start_date=datetime(2024, 1, 1), max_active_runs=2) as dag:
            @task(max_active_tis_per_dag=3, max_active_tis_per_dagrun=2)
            def each(x):
                return x

            each.expand(x=[1, 2, 3, 4, 5])
    """)
    dags = load(path, metastore)
    trigger_dag(metastore, dags["limited"], NOW, run_id="one")
    trigger_dag(metastore, dags["limited"], NOW + timedelta(minutes=1), run_id="two")
    executor = HoldingExecutor()
    loop = SchedulerLoop(metastore, executor, dags.get, clock=Clock(NOW))
    loop.tick()
    loop.tick()
    queued = sorted((w.key.run_id, w.key.map_index) for w in executor.queued)
    assert queued == [("one", 0), ("one", 1), ("two", 0)]  # two per run, three over the DAG


def test_classic_operator_in_a_mapped_task_group_uses_the_group_arguments(settings, metastore, write_dag) -> None:
    path = write_dag("bash_group", """
        from datetime import datetime
        from sparkflow import DAG, BashOperator, task, task_group

        with DAG("bash_group", start_date=datetime(2024, 1, 1)) as dag:
            @task
            def tables():
                return ["trips", "zones"]

            @task_group
            def load(table, cmd, day):
                echo = BashOperator(task_id="echo", env={"TABLE": table},
                                    bash_command="echo {{ ds }}-$TABLE-{{ params.suffix }}-" + day,
                                    params={"suffix": "v1"})
                direct = BashOperator(task_id="direct", bash_command=cmd)
                echo >> direct

            load.partial(day="d").expand(table=tables(), cmd=["echo a", "echo b"])
    """)
    run = run_dag(settings, metastore, path, "bash_group")
    assert run.state is RunState.SUCCESS, queries.task_instances(metastore.db, "bash_group", run.run_id)
    assert sorted(instances(metastore, run, "load.echo")) == [(i, "success") for i in range(4)]
    ds = run.logical_date.date().isoformat()
    assert [xcom(metastore, run, "load.echo", i) for i in range(4)] == [
        f"{ds}-trips-v1-d", f"{ds}-trips-v1-d", f"{ds}-zones-v1-d", f"{ds}-zones-v1-d"]
    assert [xcom(metastore, run, "load.direct", i) for i in range(4)] == ["a", "b", "a", "b"]
