"""Serialized DAGs: DAG -> JSON -> DAG keeps everything the planner and the UI read, the same DAG always gives
the same text and hash, and a serialized DAG plans a run exactly as the DAG it came from."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sparkflow.definitions.loader import collect_dags
from sparkflow.definitions.serialization import (
    SERIALIZATION_VERSION,
    SerializedOperator,
    dag_hash,
    deserialize_dag,
    dumps,
    is_serialized,
    serialize_dag,
)
from sparkflow.scheduler.planner import plan_run
from sparkflow.state import TaskState

DAG_FILE = """
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo
    from sparkflow import DAG, BashOperator, EmptyOperator, TaskGroup
    from sparkflow.operators.spark_submit import SparkSubmitOperator

    def notify(context):
        pass

    with DAG("full", schedule="0 2 * * *", start_date=datetime(2024, 1, 1, tzinfo=ZoneInfo("Europe/Amsterdam")),
             catchup=True, params={"day": "2024-01-01", "n": 3}, tags=["b", "a"], max_active_runs=2,
             max_active_tasks=5, dagrun_timeout=timedelta(hours=1), doc_md="# Full", description="all fields",
             on_failure_callback=notify) as dag:
        start = EmptyOperator(task_id="start", doc_md="begins")
        with TaskGroup("etl", tooltip="extract and load"):
            extract = BashOperator(task_id="extract", bash_command="echo {{ ds }}", retries=2,
                                   retry_delay=timedelta(seconds=30), pool="p", pool_slots=2, queue="q",
                                   priority_weight=7, execution_timeout=timedelta(minutes=5),
                                   on_success_callback=notify)
            spark = SparkSubmitOperator(task_id="spark", application="/jobs/count.py", conn_id="spark_local",
                                        application_args=["{{ ds }}"])
        end = EmptyOperator(task_id="end", trigger_rule="all_done", depends_on_past=True)
        start >> extract >> spark >> end
"""


@pytest.fixture
def dag(tmp_path: Path):
    path = tmp_path / "full_dag.py"
    path.write_text(textwrap.dedent(DAG_FILE))
    bag = collect_dags(tmp_path)
    assert not bag.import_errors, bag.import_errors
    return bag.dags["full"]


def test_round_trip_keeps_what_the_planner_and_the_ui_read(dag) -> None:
    data = json.loads(dumps(serialize_dag(dag)))  # through JSON text, as the metastore keeps it
    assert data["__version"] == SERIALIZATION_VERSION
    copy = deserialize_dag(data)
    assert is_serialized(copy) and not is_serialized(dag)
    assert copy.dag_id == "full" and copy.fileloc == dag.fileloc and copy.description == "all fields"
    assert copy.timetable.description == dag.timetable.description
    assert copy.start_date == dag.start_date and copy.catchup and copy.params == {"day": "2024-01-01", "n": 3}
    assert copy.tags == ["a", "b"] and copy.max_active_runs == 2 and copy.max_active_tasks == 5
    assert copy.dagrun_timeout == timedelta(hours=1) and copy.doc_md == "# Full"
    now = datetime(2024, 1, 3, 12, tzinfo=UTC)
    assert copy.next_data_interval(None, now) == dag.next_data_interval(None, now)  # cron in Amsterdam time
    assert [t.task_id for t in copy.topological_order()] == [t.task_id for t in dag.topological_order()]
    for task in dag.tasks:
        other = copy.get_task(task.task_id)
        assert isinstance(other, SerializedOperator)
        assert other.task_type == type(task).__name__
        for name in ("upstream_task_ids", "downstream_task_ids", "trigger_rule", "retries", "retry_delay", "pool",
                     "pool_slots", "queue", "priority_weight", "execution_timeout", "depends_on_past", "owner",
                     "doc_md"):
            assert getattr(other, name) == getattr(task, name), name
    extract = copy.get_task("etl.extract")
    assert extract.template_values == {"bash_command": "echo {{ ds }}", "env": None, "cwd": None} or \
        extract.template_values["bash_command"] == "echo {{ ds }}"
    assert extract.task_group_id == "etl" and extract.has_callback["on_success_callback"]
    assert copy.get_task("etl.spark").conn_id == "spark_local"
    assert copy.get_task("etl.spark").task_type == "SparkSubmitOperator"
    assert copy.serialized_callbacks == ("on_failure_callback",)
    assert [g["group_id"] for g in copy.serialized_groups] == ["etl"]
    assert copy.get_task("start").location.lineno == dag.get_task("start").location.lineno


def test_the_same_dag_gives_the_same_text_and_a_copy_serializes_to_it_again(dag) -> None:
    text = dumps(serialize_dag(dag))
    assert dumps(serialize_dag(dag)) == text
    copy = deserialize_dag(json.loads(text))
    assert dumps(serialize_dag(copy)) == text
    assert copy.serialized_hash == dag_hash(text)


def test_a_serialized_dag_plans_as_its_dag(dag) -> None:
    copy = deserialize_dag(json.loads(dumps(serialize_dag(dag))))
    now = datetime(2024, 1, 3, tzinfo=UTC)
    for states in ({t: TaskState.NONE for t in dag.task_ids},
                   {**{t: TaskState.SUCCESS for t in dag.task_ids}, "etl.spark": TaskState.FAILED,
                    "end": TaskState.NONE}):
        assert plan_run(copy, states, {}, now) == plan_run(dag, states, {}, now)


def test_a_newer_version_is_refused_with_the_fix(dag) -> None:
    data = serialize_dag(dag)
    data["__version"] = SERIALIZATION_VERSION + 1
    with pytest.raises(ValueError, match="re-parse"):
        deserialize_dag(data)


def test_a_serialized_task_cannot_run(dag) -> None:
    copy = deserialize_dag(serialize_dag(dag))
    with pytest.raises(Exception, match="serialized copy"):
        copy.get_task("start").execute({})
