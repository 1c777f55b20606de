"""The authoring layer: DAG and @dag, default_args, dependencies, chain, TaskFlow @task, retries, trigger rules."""

import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

import sparkflow
from sparkflow import (
    DAG,
    BashOperator,
    BranchPythonOperator,
    EmptyOperator,
    PythonOperator,
    ShortCircuitOperator,
    SparkSubmitOperator,
    chain,
    dag,
    task,
)
from sparkflow.definitions.baseoperator import BaseOperator, cross_downstream
from sparkflow.definitions.dag import current_dag
from sparkflow.definitions.trigger_rule import TriggerRule
from sparkflow.definitions.xcom_arg import XComArg
from sparkflow.exceptions import DagDefinitionError, UserError

START = datetime(2024, 1, 1, tzinfo=UTC)


def edges(the_dag: DAG) -> set[tuple[str, str]]:
    """Every (upstream, downstream) pair of the DAG, checked from both ends so the two sets agree."""
    down = {(t.task_id, d) for t in the_dag.tasks for d in t.downstream_task_ids}
    up = {(u, t.task_id) for t in the_dag.tasks for u in t.upstream_task_ids}
    assert down == up
    return down


# -- public API ---------------------------------------------------------------------------------------------------


def test_public_import_exposes_the_airflow_names() -> None:
    from sparkflow import (  # noqa: F401 - the import itself is the test
        DAG,
        BashOperator,
        BranchPythonOperator,
        EmptyOperator,
        PythonOperator,
        ShortCircuitOperator,
        SparkSubmitOperator,
        chain,
        dag,
        task,
    )

    for name in ("DAG", "dag", "task", "chain", "BashOperator", "PythonOperator", "EmptyOperator",
                 "BranchPythonOperator", "ShortCircuitOperator", "SparkSubmitOperator"):
        assert name in sparkflow.__all__
    assert issubclass(BranchPythonOperator, PythonOperator)
    assert issubclass(ShortCircuitOperator, PythonOperator)
    for cls in (BashOperator, EmptyOperator, PythonOperator, SparkSubmitOperator):
        assert issubclass(cls, BaseOperator)


# -- DAG as a context manager -------------------------------------------------------------------------------------


def test_dag_context_manager_collects_tasks_and_restores_the_stack() -> None:
    assert current_dag() is None
    with DAG("ctx", schedule=None, start_date=START) as d:
        assert current_dag() is d
        a = EmptyOperator(task_id="a")
        b = BashOperator(task_id="b", bash_command="echo hi")
    outside = EmptyOperator(task_id="outside")

    assert current_dag() is None
    assert a.dag is d and b.dag is d
    assert outside.dag is None
    assert d.task_ids == ["a", "b"]
    assert d.get_task("b") is b


def test_nested_dag_contexts_send_tasks_to_the_innermost() -> None:
    with DAG("outer") as outer:
        o = EmptyOperator(task_id="o")
        with DAG("inner") as inner:
            i = EmptyOperator(task_id="i")
        o2 = EmptyOperator(task_id="o2")
    assert i.dag is inner and o.dag is outer and o2.dag is outer
    assert inner.task_ids == ["i"]
    assert outer.task_ids == ["o", "o2"]


def test_task_with_explicit_dag_argument_joins_it() -> None:
    d = DAG("explicit")
    t = EmptyOperator(task_id="t", dag=d)
    assert t.dag is d and d.task_dict == {"t": t}


def test_get_task_names_known_tasks_when_missing() -> None:
    with DAG("lookup") as d:
        EmptyOperator(task_id="extract")
        EmptyOperator(task_id="load")
    with pytest.raises(UserError, match=r"DAG 'lookup' has no task 'transform'; known: extract, load"):
        d.get_task("transform")


@pytest.mark.parametrize("bad", ["has space", "semi;colon", "", "x" * 251, "slash/no"])
def test_invalid_dag_id_is_rejected(bad: str) -> None:
    with pytest.raises(DagDefinitionError, match="is invalid; use letters, digits") as info:
        DAG(bad)
    assert repr(bad) in str(info.value)


def test_dag_start_date_comes_from_default_args_and_is_made_aware() -> None:
    d = DAG("sd", default_args={"start_date": datetime(2024, 5, 1)})
    assert d.start_date == datetime(2024, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize("name", ["max_active_runs", "max_active_tasks"])
def test_dag_concurrency_limits_must_be_positive(name: str) -> None:
    with pytest.raises(DagDefinitionError, match=rf"DAG 'lim': {name} must be a positive integer, got 0"):
        DAG("lim", **{name: 0})


# -- @dag decorator -----------------------------------------------------------------------------------------------


def test_dag_decorator_uses_function_name_and_arguments_as_params() -> None:
    seen: dict[str, object] = {}

    @dag(schedule="@daily", start_date=START, tags=["etl"])
    def nightly_sales(region: str = "eu", days: int = 7) -> None:
        """Nightly sales rollup."""
        seen.update(region=region, days=days)
        EmptyOperator(task_id="start") >> EmptyOperator(task_id="end")

    d = nightly_sales()
    assert isinstance(d, DAG)
    assert d.dag_id == "nightly_sales"
    assert d.params == {"region": "eu", "days": 7}
    assert d.tags == ["etl"]
    assert d.doc_md == "Nightly sales rollup."
    assert edges(d) == {("start", "end")}
    assert seen == {"region": "eu", "days": 7}

    other = nightly_sales(region="us")
    assert other.params == {"region": "us", "days": 7}
    assert seen["region"] == "us"


def test_dag_decorator_explicit_id_and_params_merge_with_arguments() -> None:
    @dag("custom_id", params={"owner_team": "data", "days": 1})
    def factory(days: int = 3) -> None:
        EmptyOperator(task_id="only")

    d = factory()
    assert d.dag_id == "custom_id"
    # The function's arguments win over params of the same name, as in Airflow.
    assert d.params == {"owner_team": "data", "days": 3}
    assert current_dag() is None


# -- default_args -------------------------------------------------------------------------------------------------


def test_default_args_fill_base_operator_arguments() -> None:
    default_args = {
        "owner": "data-eng",
        "retries": 3,
        "retry_delay": timedelta(minutes=2),
        "queue": "spark",
        "pool": "etl",
    }
    with DAG("defaults", default_args=default_args):
        bash = BashOperator(task_id="bash", bash_command="true")
        py = PythonOperator(task_id="py", python_callable=lambda: 1)
        empty = EmptyOperator(task_id="empty")

    for t in (bash, py, empty):
        assert t.owner == "data-eng"
        assert t.retries == 3
        assert t.retry_delay == timedelta(minutes=2)
        assert t.queue == "spark"
        assert t.pool == "etl"


def test_default_args_fill_subclass_specific_arguments_only_where_accepted() -> None:
    default_args = {"env": {"MODE": "test"}, "cwd": "/tmp", "conn_id": "spark_prod", "retries": 1}
    with DAG("subclass_defaults", default_args=default_args):
        bash = BashOperator(task_id="bash", bash_command="env")
        spark = SparkSubmitOperator(task_id="spark", application="job.py")
        py = PythonOperator(task_id="py", python_callable=print)

    assert bash.env == {"MODE": "test"}
    assert bash.cwd == "/tmp"
    assert spark.conn_id == "spark_prod"
    # Keys an operator does not accept are ignored, not passed on (PythonOperator has no env/cwd/conn_id).
    assert not hasattr(py, "env") and not hasattr(py, "conn_id")
    assert py.retries == 1


def test_explicit_arguments_beat_default_args_even_when_falsy() -> None:
    with DAG("explicit_wins", default_args={"retries": 5, "env": {"A": "1"}, "owner": "x"}):
        t = BashOperator(task_id="t", bash_command="true", retries=0, env=None, owner="me")
    assert t.retries == 0
    assert t.env is None
    assert t.owner == "me"


def test_default_args_apply_with_explicit_dag_argument_and_per_task_default_args() -> None:
    d = DAG("by_arg", default_args={"retries": 2, "owner": "dag"})
    t = EmptyOperator(task_id="t", dag=d, default_args={"owner": "task", "priority_weight": 9})
    assert t.retries == 2
    assert t.owner == "task"  # operator-level default_args override the DAG's
    assert t.priority_weight == 9


def test_default_args_apply_to_taskflow_tasks() -> None:
    @task
    def work() -> int:
        return 1

    with DAG("tf_defaults", default_args={"retries": 4, "retry_delay": 30}):
        out = work()
    assert out.operator.retries == 4
    assert out.operator.retry_delay == timedelta(seconds=30)


# -- dependencies -------------------------------------------------------------------------------------------------


def test_rshift_and_lshift_between_single_tasks() -> None:
    with DAG("shift") as d:
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        result = a >> b
        c << b
    assert result is b
    assert edges(d) == {("a", "b"), ("b", "c")}
    assert [t.task_id for t in c.upstream_list] == ["b"]
    assert [t.task_id for t in a.downstream_list] == ["b"]
    assert [t.task_id for t in d.roots] == ["a"]
    assert [t.task_id for t in d.leaves] == ["c"]


def test_shift_with_lists_on_either_side() -> None:
    with DAG("lists") as d:
        a, b, c, e, f, g = (EmptyOperator(task_id=x) for x in "abcefg")
        a >> [b, c] >> e  # list on the right, then list on the left
        [b, c] << f  # list on the left of <<: f is upstream of both
        g << [e, f]
    assert edges(d) == {
        ("a", "b"), ("a", "c"), ("b", "e"), ("c", "e"), ("f", "b"), ("f", "c"), ("e", "g"), ("f", "g"),
    }


def test_linking_to_a_task_without_dag_adopts_it() -> None:
    with DAG("adopt") as d:
        a = EmptyOperator(task_id="a")
    loose = EmptyOperator(task_id="loose")
    a >> loose
    assert loose.dag is d
    assert edges(d) == {("a", "loose")}


def test_linking_tasks_of_different_dags_is_an_error() -> None:
    with DAG("one"):
        a = EmptyOperator(task_id="a")
    with DAG("two"):
        b = EmptyOperator(task_id="b")
    with pytest.raises(DagDefinitionError, match=r"cannot link to task 'b' of another DAG 'two'"):
        a >> b


def test_linking_to_something_that_is_not_a_task_is_an_error() -> None:
    with DAG("notatask"):
        a = EmptyOperator(task_id="a")
    with pytest.raises(DagDefinitionError, match=r"task 'a': cannot set a dependency on 42; expected a task"):
        a >> 42


def test_upstream_by_id_is_resolved_at_validate() -> None:
    with DAG("by_id") as d:
        extract = EmptyOperator(task_id="extract")
        load = EmptyOperator(task_id="load")
        load.set_upstream("extract")
    assert load.upstream_task_ids == set()  # not resolved until validate()
    d.validate()
    assert edges(d) == {("extract", "load")}
    assert extract.downstream_task_ids == {"load"}


def test_unknown_upstream_by_id_names_dag_task_value_and_known_ids() -> None:
    with DAG("daily") as d:
        EmptyOperator(task_id="extract")
        EmptyOperator(task_id="transform")
        load = EmptyOperator(task_id="load")
        load.set_upstream("extarct")
    with pytest.raises(DagDefinitionError) as info:
        d.validate()
    assert str(info.value) == (
        "DAG 'daily' task 'load': upstream 'extarct' does not exist; known: extract, load, transform"
    )
    assert info.value.dag_id == "daily" and info.value.task_id == "load"


def test_task_id_reference_without_dag_is_an_error() -> None:
    t = EmptyOperator(task_id="orphan")
    with pytest.raises(DagDefinitionError, match=r"cannot refer to task 'x' by id before the task is in a DAG"):
        t.set_downstream("x")


def test_cycle_is_reported_with_its_path() -> None:
    with DAG("cyclic") as d:
        a, b, c = (EmptyOperator(task_id=x) for x in "abc")
        a >> b >> c >> a
    with pytest.raises(DagDefinitionError, match=r"DAG 'cyclic' task 'a': cycle detected: a >> b >> c >> a"):
        d.validate()


def test_duplicate_task_id_names_the_first_definition() -> None:
    with DAG("dupes"):
        EmptyOperator(task_id="same")
        with pytest.raises(DagDefinitionError, match=r"DAG 'dupes' task 'same': duplicate task_id") as info:
            EmptyOperator(task_id="same")
    assert "first defined at line" in str(info.value)
    assert info.value.dag_id == "dupes" and info.value.task_id == "same"


def test_topological_order_and_downstream_of() -> None:
    with DAG("topo") as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        e >> c
        a >> b >> c
    order = [t.task_id for t in d.topological_order()]
    assert order.index("a") < order.index("b") < order.index("c")
    assert order.index("e") < order.index("c")
    assert d.downstream_of("a") == {"b", "c"}
    assert d.downstream_of("c") == set()


# -- chain and cross_downstream -----------------------------------------------------------------------------------


def test_chain_single_tasks_and_fan_in_out() -> None:
    with DAG("chain1") as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        chain(a, [b, c], e)
    assert edges(d) == {("a", "b"), ("a", "c"), ("b", "e"), ("c", "e")}


def test_chain_two_equal_lists_links_pairwise() -> None:
    with DAG("chain2") as d:
        start = EmptyOperator(task_id="start")
        x1, x2 = EmptyOperator(task_id="x1"), EmptyOperator(task_id="x2")
        y1, y2 = EmptyOperator(task_id="y1"), EmptyOperator(task_id="y2")
        end = EmptyOperator(task_id="end")
        chain(start, [x1, x2], [y1, y2], end)
    assert edges(d) == {
        ("start", "x1"), ("start", "x2"), ("x1", "y1"), ("x2", "y2"), ("y1", "end"), ("y2", "end"),
    }


def test_chain_unequal_lists_is_a_clear_error() -> None:
    with DAG("chain3") as d:
        a, b = EmptyOperator(task_id="a"), EmptyOperator(task_id="b")
        c, e, f = (EmptyOperator(task_id=x) for x in "cef")
        with pytest.raises(DagDefinitionError, match=r"chain\(\): adjacent lists must have the same length, "
                                                     r"got 2 and 3"):
            chain([a, b], [c, e, f])
    assert edges(d) == set()


def test_chain_accepts_taskflow_outputs() -> None:
    @task
    def produce() -> int:
        return 1

    with DAG("chain_tf") as d:
        first = produce()
        last = EmptyOperator(task_id="last")
        chain(first, last)
    assert edges(d) == {("produce", "last")}


def test_cross_downstream_links_every_pair() -> None:
    with DAG("cross") as d:
        a, b, c, e = (EmptyOperator(task_id=x) for x in "abce")
        cross_downstream([a, b], [c, e])
    assert edges(d) == {("a", "c"), ("a", "e"), ("b", "c"), ("b", "e")}


# -- task_id and argument validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["a", "load_2024", "stage.one", "with-dash", "x" * 250])
def test_valid_task_ids(good: str) -> None:
    assert EmptyOperator(task_id=good).task_id == good


@pytest.mark.parametrize("bad", ["", "has space", "semi;colon", "slash/", "x" * 251])
def test_invalid_task_id_names_the_value_and_the_fix(bad: str) -> None:
    with pytest.raises(DagDefinitionError) as info:
        EmptyOperator(task_id=bad)
    message = str(info.value)
    assert f"task_id {bad!r} is invalid" in message
    assert "use letters, digits, '_', '.', '-'" in message


def test_negative_retries_are_rejected() -> None:
    with pytest.raises(DagDefinitionError, match=r"task 'r': retries must be >= 0, got -1"):
        EmptyOperator(task_id="r", retries=-1)


def test_operator_construction_error_names_the_dag() -> None:
    with DAG("named"), pytest.raises(DagDefinitionError) as info:
        EmptyOperator(task_id="t", trigger_rule="sometimes")
    assert info.value.dag_id == "named"
    assert str(info.value).startswith("DAG 'named' task 't': ")


# -- trigger rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", list(TriggerRule))
def test_every_trigger_rule_is_accepted_as_string_or_enum(rule: TriggerRule) -> None:
    assert EmptyOperator(task_id="s", trigger_rule=rule.value).trigger_rule is rule
    assert EmptyOperator(task_id="e", trigger_rule=rule).trigger_rule is rule


def test_default_trigger_rule_is_all_success() -> None:
    assert EmptyOperator(task_id="t").trigger_rule is TriggerRule.ALL_SUCCESS


def test_unknown_trigger_rule_names_value_and_choices() -> None:
    with pytest.raises(DagDefinitionError) as info:
        EmptyOperator(task_id="t", trigger_rule="all_sucess")
    message = str(info.value)
    assert "task 't'" in message
    assert "unknown trigger_rule 'all_sucess'" in message
    for rule in TriggerRule:
        assert rule.value in message
    assert info.value.task_id == "t"


# -- retries ------------------------------------------------------------------------------------------------------


def test_retry_delay_is_constant_without_backoff() -> None:
    t = EmptyOperator(task_id="t", retry_delay=timedelta(seconds=10))
    assert [t.retry_delay_for(n) for n in (1, 2, 5)] == [timedelta(seconds=10)] * 3


def test_retry_delay_accepts_seconds_and_defaults_to_five_minutes() -> None:
    assert EmptyOperator(task_id="d").retry_delay == timedelta(minutes=5)
    assert EmptyOperator(task_id="s", retry_delay=90).retry_delay == timedelta(seconds=90)


def test_exponential_backoff_doubles_and_is_capped_by_max_retry_delay() -> None:
    t = EmptyOperator(task_id="t", retry_delay=timedelta(seconds=10), retry_exponential_backoff=True)
    assert [t.retry_delay_for(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 40, 80]

    capped = EmptyOperator(
        task_id="c", retry_delay=10, retry_exponential_backoff=True, max_retry_delay=timedelta(seconds=30)
    )
    assert [capped.retry_delay_for(n).total_seconds() for n in (1, 2, 3, 4)] == [10, 20, 30, 30]


def test_exponential_backoff_never_overflows() -> None:
    t = EmptyOperator(
        task_id="t", retry_delay=300, retry_exponential_backoff=True, max_retry_delay=timedelta(hours=1)
    )
    assert t.retry_delay_for(40) == timedelta(hours=1)


# -- TaskFlow -----------------------------------------------------------------------------------------------------


def test_task_call_inside_dag_returns_xcomarg_of_a_new_task() -> None:
    @task
    def extract() -> list[int]:
        return [1, 2, 3]

    with DAG("tf") as d:
        out = extract()
    assert isinstance(out, XComArg)
    assert out.key == "return_value"
    assert out.task_id == "extract"
    assert out.operator is d.get_task("extract")
    assert isinstance(out.operator, PythonOperator)
    assert out.operator.python_callable is extract.function


def test_passing_output_creates_the_dependency_and_keeps_the_xcomarg() -> None:
    @task
    def extract() -> list[int]:
        return [1, 2]

    @task
    def total(values: list[int], scale: int = 1) -> int:
        return sum(values) * scale

    @task
    def report(summary: dict[str, int]) -> None:
        return None

    with DAG("tf_deps") as d:
        values = extract()
        summed = total(values, scale=2)
        report({"total": summed})  # nested inside a dict still counts
    assert edges(d) == {("extract", "total"), ("total", "report")}
    op = summed.operator
    assert op.op_args[0] is values
    assert op.op_kwargs == {"scale": 2}


def test_xcomarg_supports_shift_operators() -> None:
    @task
    def a() -> None: ...

    @task
    def b() -> None: ...

    with DAG("tf_shift") as d:
        end = EmptyOperator(task_id="end")
        start = EmptyOperator(task_id="start")
        start >> a() >> end
        [start] >> b()
    assert edges(d) == {("start", "a"), ("a", "end"), ("start", "b")}


def test_repeated_calls_get_numbered_task_ids() -> None:
    @task
    def step() -> None: ...

    with DAG("tf_dupes") as d:
        outs = [step() for _ in range(3)]
    assert [o.task_id for o in outs] == ["step", "step__1", "step__2"]
    assert d.task_ids == ["step", "step__1", "step__2"]


def test_task_decorator_with_arguments_and_task_id() -> None:
    @task(task_id="custom_name", retries=2, trigger_rule="all_done")
    def anything() -> None: ...

    with DAG("tf_args"):
        out = anything()
        again = anything()
    assert out.task_id == "custom_name"
    assert again.task_id == "custom_name__1"
    assert out.operator.retries == 2
    assert out.operator.trigger_rule is TriggerRule.ALL_DONE


def test_override_changes_arguments_for_one_call_only() -> None:
    @task(retries=1)
    def load(target: str) -> None: ...

    with DAG("tf_override") as d:
        first = load.override(task_id="load_a", retries=5)("a")
        second = load("b")
    assert first.task_id == "load_a" and first.operator.retries == 5
    assert second.task_id == "load" and second.operator.retries == 1
    assert set(d.task_ids) == {"load_a", "load"}
    assert first.operator.op_args == ["a"]


def test_multiple_outputs_explicit_and_item_access() -> None:
    @task(multiple_outputs=True)
    def stats():  # no annotation on purpose: the flag alone decides
        return {"rows": 10, "bytes": 99}

    @task
    def use(rows: int) -> None: ...

    with DAG("tf_multi") as d:
        out = stats()
        used = use(out["rows"])
    assert out.operator.multiple_outputs is True
    item = used.operator.op_args[0]
    assert isinstance(item, XComArg) and item.key == "rows" and item.operator is out.operator
    assert edges(d) == {("stats", "use")}


def test_multiple_outputs_inferred_from_dict_return_annotation() -> None:
    @task
    def as_dict() -> dict[str, int]:
        return {}

    @task
    def as_typing_dict() -> typing.Dict[str, int]:  # noqa: UP006 - the old spelling must work too
        return {}

    @task
    def as_int() -> int:
        return 1

    with DAG("tf_infer"):
        assert as_dict().operator.multiple_outputs is True
        assert as_typing_dict().operator.multiple_outputs is True
        assert as_int().operator.multiple_outputs is False


@pytest.mark.parametrize("annotation", ["dict[str, int]", "Mapping[str, int]"])
def test_multiple_outputs_inferred_from_string_or_mapping_annotation(annotation: str) -> None:
    source = (
        "from __future__ import annotations\n"
        "from collections.abc import Mapping\n"
        "from sparkflow import task\n"
        "@task\n"
        f"def totals() -> {annotation}:\n"
        "    return {'a': 1}\n"
    )
    namespace: dict[str, object] = {"Mapping": Mapping}
    exec(compile(source, "dag_file_with_future_annotations.py", "exec"), namespace)
    with DAG("tf_future"):
        out = namespace["totals"]()  # type: ignore[operator]
    assert out.operator.multiple_outputs is True


def test_task_variants_build_the_matching_operators() -> None:
    @task.branch
    def pick() -> str:
        return "x"

    @task.short_circuit()
    def gate() -> bool:
        return True

    with DAG("tf_variants"):
        assert isinstance(pick().operator, BranchPythonOperator)
        assert isinstance(gate().operator, ShortCircuitOperator)


def test_python_operator_requires_a_callable() -> None:
    with pytest.raises(DagDefinitionError, match=r"task 'p': python_callable must be callable, got 'nope'"):
        PythonOperator(task_id="p", python_callable="nope")  # type: ignore[arg-type]


def test_classic_operator_with_taskflow_output_in_template_field_depends_on_it() -> None:
    @task
    def command() -> str:
        return "echo hi"

    with DAG("mixed") as d:
        BashOperator(task_id="run", bash_command=command())
    assert edges(d) == {("command", "run")}
