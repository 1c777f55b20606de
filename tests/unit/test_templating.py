"""Rendering template fields with Jinja and the Airflow-shaped task context."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
import pytest

from sparkflow import DAG, BashOperator, PythonOperator, SparkSubmitOperator, task
from sparkflow.definitions.context import task_environment
from sparkflow.definitions.templating import TemplateEnvironment
from sparkflow.exceptions import DagDefinitionError, NotFound
from sparkflow.metastore.records import DagRunRecord
from sparkflow.runtime.context import InMemoryTaskInstance, build_context
from sparkflow.state import RunState


def make_run(
    dag_id: str = "tmpl",
    logical_date: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    interval_end: datetime | None = datetime(2024, 1, 2, tzinfo=UTC),
    conf: dict[str, Any] | None = None,
    run_id: str = "scheduled__2024-01-01T00:00:00+00:00",
) -> DagRunRecord:
    return DagRunRecord(
        id=1,
        dag_id=dag_id,
        run_id=run_id,
        run_type="scheduled",
        logical_date=logical_date,
        data_interval_start=logical_date,
        data_interval_end=interval_end,
        conf=conf or {},
        state=RunState.RUNNING,
        queued_at=None,
        start_date=None,
        end_date=None,
        external_trigger=False,
    )


def context_for(the_dag: DAG, task_id: str, run: DagRunRecord | None = None) -> dict[str, Any]:
    run = run or make_run(the_dag.dag_id)
    the_task = the_dag.get_task(task_id)
    ti = InMemoryTaskInstance(the_dag, task_id, run.run_id)
    return build_context(the_dag, the_task, run, ti)


# -- render_template_fields ---------------------------------------------------------------------------------------


def test_renders_string_fields_and_leaves_plain_strings_alone() -> None:
    with DAG("tmpl", params={"table": "sales"}) as d:
        t = BashOperator(task_id="t", bash_command="load {{ params.table }} for {{ ds }}", cwd="/srv/data")
    t.render_template_fields(context_for(d, "t"), TemplateEnvironment())
    assert t.bash_command == "load sales for 2024-01-01"
    assert t.cwd == "/srv/data"


def test_renders_nested_lists_and_dicts_keeping_keys_and_non_strings() -> None:
    with DAG("tmpl", params={"parts": 8}) as d:
        t = SparkSubmitOperator(
            task_id="spark",
            application="jobs/{{ ds_nodash }}/etl.py",
            application_args=["--date", "{{ ds }}", 3, ["{{ params.parts }}", ("{{ ds_nodash }}",)]],
            conf={"spark.sql.shuffle.partitions": "{{ params.parts }}", "{{ ds }}": {"deep": "{{ run_id }}"}},
            env_vars={"RUN": "{{ run_id }}"},
        )
    t.render_template_fields(context_for(d, "spark"), TemplateEnvironment())
    assert t.application == "jobs/20240101/etl.py"
    assert t.application_args == ["--date", "2024-01-01", 3, ["8", ("20240101",)]]
    assert t.conf == {
        "spark.sql.shuffle.partitions": "8",
        "{{ ds }}": {"deep": "scheduled__2024-01-01T00:00:00+00:00"},  # keys are not templates
    }
    assert t.env_vars == {"RUN": "scheduled__2024-01-01T00:00:00+00:00"}


def test_none_fields_are_skipped() -> None:
    with DAG("tmpl") as d:
        t = BashOperator(task_id="t", bash_command="true")
    t.render_template_fields(context_for(d, "t"), TemplateEnvironment())
    assert t.env is None and t.cwd is None


def test_undefined_variable_raises_naming_task_and_field() -> None:
    with DAG("tmpl") as d:
        t = BashOperator(task_id="load", bash_command="echo {{ missing_thing }}")
    with pytest.raises(DagDefinitionError) as info:
        t.render_template_fields(context_for(d, "load"), TemplateEnvironment())
    message = str(info.value)
    assert "task 'load'" in message
    assert "template field 'bash_command'" in message
    assert "missing_thing" in message


def test_undefined_nested_attribute_is_strict_too() -> None:
    with DAG("tmpl", params={"a": 1}) as d:
        t = BashOperator(task_id="t", bash_command="true", env={"X": "{{ params.nope }}"})
    with pytest.raises(DagDefinitionError, match=r"task 't': template field 'env' failed to render"):
        t.render_template_fields(context_for(d, "t"), TemplateEnvironment())


def test_render_error_names_the_dag_and_sets_its_fields() -> None:
    with DAG("tmpl") as d:
        t = BashOperator(task_id="load", bash_command="echo {{ missing_thing }}")
    with pytest.raises(DagDefinitionError) as info:
        t.render_template_fields(context_for(d, "load"), TemplateEnvironment())
    assert str(info.value).startswith("DAG 'tmpl' task 'load': ")
    assert info.value.dag_id == "tmpl" and info.value.task_id == "load"


def test_native_environment_keeps_python_types() -> None:
    with DAG("tmpl", params={"n": 3, "names": ["a", "b"]}) as d:
        t = PythonOperator(
            task_id="py",
            python_callable=print,
            op_args=["{{ params.n }}", "{{ params.names }}"],
            op_kwargs={"total": "{{ params.n * 2 }}", "label": "n={{ params.n }}"},
        )
    t.render_template_fields(context_for(d, "py"), TemplateEnvironment(native=True))
    assert t.op_args == [3, ["a", "b"]]
    assert t.op_kwargs == {"total": 6, "label": "n=3"}


def test_non_native_environment_renders_strings() -> None:
    with DAG("tmpl", params={"n": 3}) as d:
        t = PythonOperator(task_id="py", python_callable=print, op_args=["{{ params.n }}"])
    t.render_template_fields(context_for(d, "py"), TemplateEnvironment())
    assert t.op_args == ["3"]


def test_date_filters() -> None:
    with DAG("tmpl") as d:
        t = BashOperator(
            task_id="t",
            bash_command="{{ data_interval_end | ds }} {{ data_interval_end | ds_nodash }} "
            "{{ logical_date | ts }} {{ logical_date | ts_nodash }}",
        )
    t.render_template_fields(context_for(d, "t"), TemplateEnvironment())
    assert t.bash_command == "2024-01-02 20240102 2024-01-01T00:00:00+00:00 20240101T000000"


def test_date_filters_in_native_environment() -> None:
    with DAG("tmpl") as d:
        t = BashOperator(task_id="t", bash_command="{{ data_interval_end | ds }}")
    t.render_template_fields(context_for(d, "t"), TemplateEnvironment(native=True))
    assert t.bash_command == "2024-01-02"


def test_template_file_is_read_from_the_searchpath(tmp_path: Path) -> None:
    (tmp_path / "load.sh").write_text("echo loading {{ ds }}\n")
    with DAG("tmpl") as d:
        from_file = BashOperator(task_id="file", bash_command="load.sh")
        inline = BashOperator(task_id="inline", bash_command="bash other.sh")
    env = TemplateEnvironment(searchpath=[str(tmp_path)])
    from_file.render_template_fields(context_for(d, "file"), env)
    inline.render_template_fields(context_for(d, "inline"), env)
    assert from_file.bash_command == "echo loading 2024-01-01\n"
    assert inline.bash_command == "bash other.sh"


def test_taskflow_outputs_are_resolved_from_xcom() -> None:
    class FakeTI:
        def xcom_pull(self, task_ids: str, key: str = "return_value") -> Any:
            return {("extract", "return_value"): [1, 2], ("stats", "rows"): 10}[(task_ids, key)]

    @task
    def extract() -> list[int]:
        return [1, 2]

    @task(multiple_outputs=True)
    def stats() -> dict[str, int]:
        return {"rows": 10}

    @task
    def load(values: list[int], rows: int, label: str) -> None: ...

    with DAG("tmpl") as d:
        out = load(extract(), rows=stats()["rows"], label="{{ ds }}")
    context = {**context_for(d, "load"), "ti": FakeTI()}
    out.operator.render_template_fields(context, TemplateEnvironment())
    assert out.operator.op_args == [[1, 2]]
    assert out.operator.op_kwargs == {"rows": 10, "label": "2024-01-01"}


# -- build_context ------------------------------------------------------------------------------------------------


def test_context_has_airflows_date_names() -> None:
    with DAG("ctx") as d:
        BashOperator(task_id="t", bash_command="true")
    run = make_run("ctx", logical_date=datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC),
                   interval_end=datetime(2024, 3, 6, 6, 7, 8, tzinfo=UTC), run_id="manual__x")
    ctx = context_for(d, "t", run)
    assert ctx["ds"] == "2024-03-05"
    assert ctx["ds_nodash"] == "20240305"
    assert ctx["ts"] == "2024-03-05T06:07:08+00:00"
    assert ctx["ts_nodash"] == "20240305T060708"
    assert ctx["logical_date"] == datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
    assert isinstance(ctx["logical_date"], pendulum.DateTime)
    assert ctx["data_interval_start"] == datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC)
    assert ctx["data_interval_end"] == datetime(2024, 3, 6, 6, 7, 8, tzinfo=UTC)
    assert isinstance(ctx["data_interval_end"], pendulum.DateTime)
    assert ctx["run_id"] == "manual__x"
    assert ctx["dag_run"] is run


def test_context_objects_dag_task_ti() -> None:
    with DAG("ctx") as d:
        t = BashOperator(task_id="t", bash_command="true")
    ctx = context_for(d, "t")
    assert ctx["dag"] is d
    assert ctx["task"] is t
    assert isinstance(ctx["ti"], InMemoryTaskInstance)
    assert ctx["task_instance"] is ctx["ti"]
    assert (ctx["ti"].dag_id, ctx["ti"].task_id, ctx["ti"].try_number) == ("ctx", "t", 1)
    assert ctx["try_number"] == 1


def test_params_merge_dag_then_task_then_run_conf() -> None:
    with DAG("ctx", params={"a": "dag", "b": "dag", "c": "dag"}) as d:
        BashOperator(task_id="t", bash_command="true", params={"b": "task", "c": "task"})
    ctx = context_for(d, "t", make_run("ctx", conf={"c": "conf", "d": "conf"}))
    assert ctx["params"] == {"a": "dag", "b": "task", "c": "conf", "d": "conf"}
    assert d.params == {"a": "dag", "b": "dag", "c": "dag"}  # the DAG's own params are not modified


def test_macros_and_user_defined_macros_render() -> None:
    with DAG("ctx", user_defined_macros={"project": "acme"}) as d:
        t = BashOperator(
            task_id="t",
            bash_command="{{ macros.ds_add(ds, 7) }} {{ macros.ds_add(ds, -1) }} "
            "{{ macros.ds_format(ds, '%Y-%m-%d', '%d/%m/%Y') }} {{ project }} {{ dag.dag_id }}.{{ task.task_id }}",
        )
    t.render_template_fields(context_for(d, "t"), TemplateEnvironment())
    assert t.bash_command == "2024-01-08 2023-12-31 01/01/2024 acme ctx.t"


def test_conn_resolves_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKFLOW_CONN_WAREHOUSE", "postgres://etl:s3cret@db.example.com:5432/sales")
    with DAG("ctx") as d:
        t = BashOperator(
            task_id="t", bash_command="{{ conn.warehouse.host }}:{{ conn.warehouse.port }}/{{ conn.warehouse.schema }}"
        )
    ctx = context_for(d, "t")
    t.render_template_fields(ctx, TemplateEnvironment())
    assert t.bash_command == "db.example.com:5432/sales"
    assert ctx["conn"].get("warehouse").login == "etl"


def test_conn_get_returns_default_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKFLOW_CONN_NOPE", raising=False)
    with DAG("ctx") as d:
        BashOperator(task_id="t", bash_command="true")
    ctx = context_for(d, "t")
    assert ctx["conn"].get("nope") is None
    with pytest.raises(NotFound, match=r"connection 'nope' is not defined: no SPARKFLOW_CONN_NOPE"):
        _ = ctx["conn"].nope


def test_var_value_and_json_use_the_variable_lookup() -> None:
    store = {"env": "prod", "cfg": '{"workers": 4, "tags": ["x"]}'}
    with DAG("ctx") as d:
        t = BashOperator(
            task_id="t",
            bash_command="{{ var.value.env }} {{ var.json.cfg.workers }} {{ var.value.get('absent', 'dflt') }}",
        )
    ctx = context_for(d, "t")
    with task_environment(ctx, None, store.get):
        t.render_template_fields(ctx, TemplateEnvironment())
        assert ctx["var"].json.cfg == {"workers": 4, "tags": ["x"]}
    assert t.bash_command == "prod 4 dflt"


def test_missing_variable_names_the_key() -> None:
    with DAG("ctx") as d:
        BashOperator(task_id="t", bash_command="true")
    ctx = context_for(d, "t")
    with task_environment(ctx, None, {}.get), pytest.raises(NotFound, match=r"variable 'absent' does not exist"):
        _ = ctx["var"].value.absent


def test_missing_variable_fix_names_an_existing_command() -> None:
    import re

    import click

    from sparkflow.cli import cli

    with DAG("ctx") as d:
        BashOperator(task_id="t", bash_command="true")
    ctx = context_for(d, "t")
    with task_environment(ctx, None, {}.get), pytest.raises(NotFound) as info:
        _ = ctx["var"].value.absent
    match = re.search(r"`sparkflow (\S+) (\S+)", str(info.value))
    assert match is not None
    group = cli.get_command(click.Context(cli), match.group(1))
    assert group is not None
    assert match.group(2) in group.commands  # type: ignore[attr-defined]
