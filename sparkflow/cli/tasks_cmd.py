"""sparkflow tasks list|states|test."""

from __future__ import annotations

import logging
import sys

import click

from sparkflow.cli.env import CliEnv, confirm
from sparkflow.cli.output import emit, output_option
from sparkflow.exceptions import UserError
from sparkflow.logs import MaskingFormatter, masker
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.runtime.task_runner import capture_task_logging, test_task
from sparkflow.scheduler import interventions
from sparkflow.scheduler.dag_processing import current_dag, load_dag
from sparkflow.scheduler.runs import make_run_id, parse_run_conf
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
    dag = current_dag(env.settings, env.metastore, dag_id)
    emit([{"task_id": t.task_id, "operator": t.task_type} for t in dag.topological_order()], output)


@tasks.command("states")
@click.argument("dag_id")
@click.argument("run_id")
@output_option
@click.pass_obj
def states(env: CliEnv, dag_id: str, run_id: str, output: str) -> None:
    """The state of every task instance of a run."""
    queries.get_run(env.metastore.db, dag_id, run_id)
    rows = [
        {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index, "state": ti.state,
         "try_number": ti.try_number, "max_tries": ti.max_tries, "operator": ti.operator,
         "start_date": ti.start_date, "end_date": ti.end_date, "duration": ti.duration, "hostname": ti.hostname,
         "pid": ti.pid, "executor": ti.executor, "spark_app_id": ti.spark_app_id, "spark_ui_url": ti.spark_ui_url,
         "error": ti.error}
        for ti in queries.task_instances(env.metastore.db, dag_id, run_id)
    ]
    emit(rows, output, ["task_id", "map_index", "state", "try_number", "start_date", "end_date", "duration",
                        "spark_app_id"])


@tasks.command("test")
@click.argument("dag_id")
@click.argument("task_id")
@click.argument("logical_date", required=False)
@click.option("--conf", help="Run configuration as a JSON object (overrides params).")
@click.option("--map-index", type=int, default=-1, show_default=True,
              help="The instance of a mapped task (0..n-1); -1 for an unmapped task.")
@click.pass_obj
def test(env: CliEnv, dag_id: str, task_id: str, logical_date: str | None, conf: str | None, map_index: int) -> int:
    """Run one task now, in this process, without recording any state; its log goes to the terminal."""
    conf_value = parse_run_conf(conf)
    dag = load_dag(env.settings, env.metastore, dag_id)
    dag.get_task(task_id)
    when = env.parse_date(logical_date, "LOGICAL_DATE") if logical_date else env.now()
    ms = env.metastore

    def connections(conn_id: str):  # type: ignore[no-untyped-def]
        conn = queries.resolve_connection(ms.db, conn_id, ms.secrets)
        masker.add(*conn.secrets())
        return conn

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(levelname)s - %(message)s"))
    with capture_task_logging(handler):
        outcome, xcoms = test_task(
            dag, task_id, make_run_id("test", when), when, connections,
            lambda key: queries.get_variable(ms.db, key, ms.secrets), conf_value, map_index,
        )
    for key, value in xcoms.items():
        click.echo(f"XCom {key}: {value!r}")
    click.echo(f"Task {task_id} {outcome.state.value}" + (f": {outcome.error}" if outcome.error else ""))
    return 0 if outcome.state in (TaskState.SUCCESS, TaskState.SKIPPED) else 1


@tasks.command("metrics")
@click.argument("dag_id")
@click.argument("run_id")
@click.argument("task_id")
@click.option("--try", "try_number", type=int, help="Which try (default: every try).")
@click.option("--map-index", type=int, default=-1, show_default=True,
              help="The instance of a mapped task (0..n-1); -1 for an unmapped task.")
@output_option
@click.pass_obj
def metrics(env: CliEnv, dag_id: str, run_id: str, task_id: str, try_number: int | None, map_index: int,
            output: str) -> None:
    """Spark metrics of a task's tries (from each try's event log), with the Spark UI / History Server link."""
    key = TIKey(dag_id, run_id, task_id, map_index)
    tries = queries.task_tries(env.metastore.db, key)
    if not tries:
        queries.get_task_instance(env.metastore.db, key)  # unknown -> clear error
    if try_number is not None:
        tries = [t for t in tries if t.try_number == try_number]
        if not tries:
            raise UserError(f"task '{task_id}' of run '{run_id}' has no try {try_number}; see `sparkflow tasks states`")
    history = env.settings.spark_history_url
    rows = [
        {"dag_id": t.dag_id, "run_id": t.run_id, "task_id": t.task_id, "map_index": t.map_index,
         "try_number": t.try_number,
         "state": t.state, "spark_app_id": t.spark_app_id, "spark_driver_id": t.spark_driver_id,
         "spark_ui_url": t.spark_ui_url,
         "history_url": f"{history.rstrip('/')}/history/{t.spark_app_id}" if history and t.spark_app_id else None,
         **(t.spark_metrics or {})}
        for t in tries
    ]
    emit(rows, output, ["try_number", "state", "spark_app_id", "duration_ms", "tasks", "input_bytes",
                        "shuffle_read_bytes", "shuffle_write_bytes", "jvm_gc_time_ms"])


@tasks.command("clear")
@click.argument("dag_id")
@click.option("--task-regex", "-t", help="Only tasks whose id matches this regular expression.")
@click.option("--start-date", "-s", help="Only runs with a logical date on or after this.")
@click.option("--end-date", "-e", help="Only runs with a logical date on or before this.")
@click.option("--only-failed", "-f", is_flag=True, help="Only failed and upstream_failed task instances.")
@click.option("--downstream", "-d", is_flag=True, help="Also every task downstream of the matched ones.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--map-index", "map_indexes", type=int, multiple=True,
              help="Only this instance of mapped tasks (repeatable; default: all instances).")
@click.pass_obj
def clear(env: CliEnv, dag_id: str, task_regex: str | None, start_date: str | None, end_date: str | None,
          only_failed: bool, downstream: bool, yes: bool, map_indexes: tuple[int, ...]) -> None:
    """Re-run task instances: reset them to none (keeping their tries) and re-open their runs."""
    start = env.parse_date(start_date, "--start-date") if start_date else None
    end = env.parse_date(end_date, "--end-date") if end_date else None
    dag = current_dag(env.settings, env.metastore, dag_id)
    selection = interventions.select_for_clear(env.metastore, dag, task_regex, start, end, only_failed, downstream,
                                               map_indexes or None)
    for ti in selection.active:
        click.echo(f"Leaving {ti.run_id} {ti.task_id} alone: it is {ti.state.value} (mark it failed first)", err=True)
    if not selection.items:
        click.echo("Nothing to clear")
        return
    for run, task_ids in selection.items:
        click.echo(f"{run.run_id}: {', '.join(task_ids)}")
    for _, run, task_ids in selection.external:  # through ExternalTaskMarkers
        click.echo(f"DAG {run.dag_id} {run.run_id}: {', '.join(task_ids)}")
    runs = len(selection.items) + len(selection.external)
    confirm(f"Clear {selection.count} task instance(s) in {runs} run(s)?", yes)
    cleared = interventions.clear(env.metastore, dag, selection)
    click.echo(f"Cleared {len(cleared)} task instance(s)")


@tasks.command("mark")
@click.argument("dag_id")
@click.argument("run_id")
@click.argument("task_id")
@click.option("--state", "state", type=click.Choice(["success", "failed"]), required=True,
              help="The state to set.")
@click.option("--map-index", type=int, default=-1, show_default=True,
              help="The instance of a mapped task (0..n-1); -1 for an unmapped task.")
@click.pass_obj
def mark(env: CliEnv, dag_id: str, run_id: str, task_id: str, state: str, map_index: int) -> None:
    """Set a task instance's state by hand; a running task is killed (its process group gets SIGTERM)."""
    key = TIKey(dag_id, run_id, task_id, map_index)
    result = interventions.mark(env.metastore, key, TaskState(state))
    name = f"{task_id}[{map_index}]" if map_index >= 0 else task_id
    click.echo(f"Marked {name} of {run_id} {state} (was {result.before.state.value})")
    if result.killed_pid is not None:
        click.echo(f"Sent SIGTERM to the task's process group {result.killed_pid}")
    elif result.note:
        click.echo(f"The task was running; no signal was sent from here: {result.note}", err=True)
