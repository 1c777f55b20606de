"""sparkflow tasks list|states|test."""

from __future__ import annotations

import logging
import sys

import click

from sparkflow.cli.env import CliEnv, parse_conf
from sparkflow.cli.output import emit, output_option
from sparkflow.logs import MaskingFormatter, masker
from sparkflow.metastore import queries
from sparkflow.runtime.task_runner import TASK_LOGGER, test_task
from sparkflow.scheduler.dag_processing import parse_dags, require_dag
from sparkflow.scheduler.runs import make_run_id
from sparkflow.state import TaskState


@click.group("tasks")
def tasks() -> None:
    """Task instances: states, and running one task for a test."""


@tasks.command("list")
@click.argument("dag_id")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, dag_id: str, output: str) -> None:
    """The task ids of a DAG."""
    dag = require_dag(parse_dags(env.settings, env.metastore), dag_id)
    emit([{"task_id": t.task_id, "operator": type(t).__name__} for t in dag.topological_order()], output)


@tasks.command("states")
@click.argument("dag_id")
@click.argument("run_id")
@output_option
@click.pass_obj
def states(env: CliEnv, dag_id: str, run_id: str, output: str) -> None:
    """The state of every task instance of a run."""
    queries.get_run(env.metastore.db, dag_id, run_id)
    rows = [
        {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "state": ti.state,
         "try_number": ti.try_number, "max_tries": ti.max_tries, "operator": ti.operator,
         "start_date": ti.start_date, "end_date": ti.end_date, "duration": ti.duration, "hostname": ti.hostname,
         "pid": ti.pid, "executor": ti.executor, "spark_app_id": ti.spark_app_id, "spark_ui_url": ti.spark_ui_url,
         "error": ti.error}
        for ti in queries.task_instances(env.metastore.db, dag_id, run_id)
    ]
    emit(rows, output, ["task_id", "state", "try_number", "start_date", "end_date", "duration", "spark_app_id"])


@tasks.command("test")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("logical_date", required=False)
@click.option("--conf", help="Run configuration as a JSON object (overrides params).")
@click.pass_obj
def test(env: CliEnv, dag_id: str, task_id: str, logical_date: str | None, conf: str | None) -> int:
    """Run one task now, in this process, without recording any state; its log goes to the terminal."""
    conf_value = parse_conf(conf)
    dag = require_dag(parse_dags(env.settings, env.metastore), dag_id)
    dag.get_task(task_id)
    when = env.parse_date(logical_date, "LOGICAL_DATE") if logical_date else env.now()
    ms = env.metastore

    def connections(conn_id: str):  # type: ignore[no-untyped-def]
        conn = queries.resolve_connection(ms.db, conn_id, ms.secrets)
        masker.add(*conn.secrets())
        return conn

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(levelname)s - %(message)s"))
    logger = logging.getLogger(TASK_LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        outcome, xcoms = test_task(
            dag, task_id, make_run_id("test", when), when, connections,
            lambda key: queries.get_variable(ms.db, key, ms.secrets), conf_value,
        )
    finally:
        logger.removeHandler(handler)
    for key, value in xcoms.items():
        click.echo(f"XCom {key}: {value!r}")
    click.echo(f"Task {task_id} {outcome.state.value}" + (f": {outcome.error}" if outcome.error else ""))
    return 0 if outcome.state in (TaskState.SUCCESS, TaskState.SKIPPED) else 1


def register(cli: click.Group) -> None:
    cli.add_command(tasks)
