"""Task groups: prefixed ids as in Airflow, nesting, default_args, @task_group, and >> between groups."""

from __future__ import annotations

from datetime import datetime

import pytest

from sparkflow import DAG, BashOperator, EmptyOperator, TaskGroup, chain, task, task_group
from sparkflow.exceptions import DagDefinitionError


def edges(dag: DAG) -> set[tuple[str, str]]:
    return {(up, t.task_id) for t in dag.tasks for up in t.upstream_task_ids}


def test_tasks_in_a_group_get_prefixed_ids_and_groups_link_leaves_to_roots() -> None:
    with DAG("g", start_date=datetime(2024, 1, 1)) as dag:
        start = EmptyOperator(task_id="start")
        with TaskGroup("extract") as extract:
            a = EmptyOperator(task_id="a")
            b = EmptyOperator(task_id="b")
            c = EmptyOperator(task_id="c")
            a >> c
        with TaskGroup("load", tooltip="loads") as load:
            EmptyOperator(task_id="x")
        end = EmptyOperator(task_id="end")
        start >> extract >> load >> end
    dag.validate()
    assert (a.task_id, b.task_id, c.task_id) == ("extract.a", "extract.b", "extract.c")
    assert a.task_group is extract
    assert sorted(t.task_id for t in extract.roots) == ["extract.a", "extract.b"]
    assert sorted(t.task_id for t in extract.leaves) == ["extract.b", "extract.c"]
    assert edges(dag) == {
        ("start", "extract.a"), ("start", "extract.b"), ("extract.a", "extract.c"),
        ("extract.b", "load.x"), ("extract.c", "load.x"), ("load.x", "end"),
    }
    assert dag.task_group_dict == {"extract": extract, "load": load}


def test_nested_groups_default_args_and_no_prefix() -> None:
    with DAG("n", start_date=datetime(2024, 1, 1), default_args={"retries": 1}) as dag:
        with TaskGroup("outer", default_args={"retries": 3, "owner": "ops"}) as outer:
            with TaskGroup("inner") as inner:
                deep = BashOperator(task_id="deep", bash_command="true")
            mid = EmptyOperator(task_id="mid", retries=0)
        with TaskGroup("flat", prefix_group_id=False):
            flat = EmptyOperator(task_id="flat_task")
    assert inner.group_id == "outer.inner"
    assert deep.task_id == "outer.inner.deep"
    assert (deep.retries, deep.owner, mid.retries) == (3, "ops", 0)
    assert flat.task_id == "flat_task"
    assert outer.children.keys() == {"outer.inner", "outer.mid"}
    assert set(dag.task_dict) == {"outer.inner.deep", "outer.mid", "flat_task"}


def test_list_and_chain_with_groups() -> None:
    with DAG("l", start_date=datetime(2024, 1, 1)) as dag:
        first = EmptyOperator(task_id="first")
        with TaskGroup("g1") as g1:
            EmptyOperator(task_id="t")
        with TaskGroup("g2") as g2:
            EmptyOperator(task_id="t")
        last = EmptyOperator(task_id="last")
        first >> [g1, g2]
        [g1, g2] >> last
        with TaskGroup("g3") as g3:
            EmptyOperator(task_id="t")
        chain(last, g3)
    assert edges(dag) == {
        ("first", "g1.t"), ("first", "g2.t"), ("g1.t", "last"), ("g2.t", "last"), ("last", "g3.t"),
    }


def test_task_group_decorator_with_taskflow_and_repeated_calls() -> None:
    with DAG("d", start_date=datetime(2024, 1, 1)) as dag:

        @task
        def produce() -> int:
            return 1

        @task_group
        def process(value: int):
            @task
            def double(v: int) -> int:
                return v * 2

            @task
            def report(v: int) -> None:
                print(v)

            report(double(value))

        @task_group(group_id="returns_output")
        def returns_output():
            @task
            def inner() -> int:
                return 2

            return inner()

        value = produce()
        first = process(value)
        second = process(value)
        output = returns_output()
        done = EmptyOperator(task_id="done")
        first >> done
        output >> done
    dag.validate()
    assert isinstance(first, TaskGroup) and isinstance(second, TaskGroup)
    assert (first.group_id, second.group_id) == ("process", "process__1")
    assert {"process.double", "process.report", "process__1.double", "process__1.report"} <= set(dag.task_dict)
    assert ("produce", "process.double") in edges(dag)
    assert ("process.report", "done") in edges(dag)
    assert ("returns_output.inner", "done") in edges(dag)  # the function's output, not the group, is returned


def test_same_taskflow_function_twice_in_a_group_gets_unique_ids() -> None:
    with DAG("u", start_date=datetime(2024, 1, 1)) as dag:

        @task
        def step() -> None:
            return None

        with TaskGroup("grp"):
            step()
            step()
    assert set(dag.task_dict) == {"grp.step", "grp.step__1"}


def test_bad_and_duplicate_group_ids_are_definition_errors() -> None:
    with DAG("e", start_date=datetime(2024, 1, 1)):
        TaskGroup("same")
        with pytest.raises(DagDefinitionError, match=r"DAG 'e' task group 'same': duplicate group_id"):
            TaskGroup("same")
        with pytest.raises(DagDefinitionError, match=r"group_id 'has space' is invalid"):
            TaskGroup("has space")
    with pytest.raises(DagDefinitionError, match="must be created inside a DAG"):
        TaskGroup("orphan")


def test_duplicate_task_id_inside_a_group_names_the_prefixed_id() -> None:
    with DAG("dup", start_date=datetime(2024, 1, 1)), TaskGroup("grp"):
        EmptyOperator(task_id="t")
        with pytest.raises(DagDefinitionError, match=r"task 'grp.t': duplicate task_id"):
            EmptyOperator(task_id="t")
