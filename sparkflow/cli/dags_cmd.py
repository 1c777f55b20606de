"""sparkflow dags list|show|pause|unpause|list-import-errors|test|trigger."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.output import emit, output_option
from sparkflow.cli.runs_cmd import follow_run, trigger_options
from sparkflow.cli.runs_cmd import trigger as trigger_command
from sparkflow.metastore import queries
from sparkflow.scheduler.dag_processing import current_dag, load_dag, refresh_dag_folder
from sparkflow.scheduler.runs import make_run_id, parse_run_conf, trigger_dag


@click.group("dags")
def dags() -> None:
    """List, inspect, pause and test DAGs."""


@dags.command("list")
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, output: str) -> None:
    """DAGs found in the DAG folder (files changed since their last parse are parsed now)."""
    refresh_dag_folder(env.settings, env.metastore)
    rows = [
        {"dag_id": d.dag_id, "fileloc": d.fileloc, "owners": d.owners, "is_paused": d.is_paused,
         "schedule": d.schedule, "tags": list(d.tags), "description": d.description,
         "last_parsed_at": d.last_parsed_at}
        for d in queries.list_dags(env.metastore.db)
    ]
    emit(rows, output, ["dag_id", "fileloc", "owners", "is_paused", "schedule"])
    errors = queries.list_import_errors(env.metastore.db)
    if errors and output == "table":
        click.echo(f"{len(errors)} DAG file(s) failed to import; see `sparkflow dags list-import-errors`", err=True)


@dags.command("list-import-errors")
@output_option
@click.pass_obj
def list_import_errors(env: CliEnv, output: str) -> None:
    """DAG files that failed to load, with the line and the reason."""
    refresh_dag_folder(env.settings, env.metastore)
    rows = [
        {"filename": e.filename, "lineno": e.lineno, "dag_id": e.dag_id, "task_id": e.task_id,
         "error": e.message, "timestamp": e.timestamp}
        for e in queries.list_import_errors(env.metastore.db)
    ]
    emit(rows, output, ["filename", "lineno", "dag_id", "task_id", "error"])


@dags.command("show")
@click.argument("dag_id")
@output_option
@click.pass_obj
def show(env: CliEnv, dag_id: str, output: str) -> None:
    """The tasks of a DAG in dependency order."""
    dag = current_dag(env.settings, env.metastore, dag_id)
    rows = [
        {"task_id": t.task_id, "operator": t.task_type, "upstream": sorted(t.upstream_task_ids),
         "downstream": sorted(t.downstream_task_ids), "trigger_rule": t.trigger_rule.value, "retries": t.retries}
        for t in dag.topological_order()
    ]
    emit(rows, output)


def _set_paused(env: CliEnv, dag_id: str, paused: bool) -> None:
    refresh_dag_folder(env.settings, env.metastore)
    env.metastore.dags.set_paused(dag_id, paused)
    click.echo(f"Dag: {dag_id}, paused: {paused}")


@dags.command("pause")
@click.argument("dag_id")
@click.pass_obj
def pause(env: CliEnv, dag_id: str) -> None:
    _set_paused(env, dag_id, True)


@dags.command("unpause")
@click.argument("dag_id")
@click.pass_obj
def unpause(env: CliEnv, dag_id: str) -> None:
    _set_paused(env, dag_id, False)


@dags.command("test")
@click.argument("dag_id")
@click.argument("logical_date", required=False)
@click.option("--conf", help="Run configuration as a JSON object.")
@click.pass_obj
def test(env: CliEnv, dag_id: str, logical_date: str | None, conf: str | None) -> int:
    """Run a whole DAG once in this process (sequential executor), following it live."""
    dag = load_dag(env.settings, env.metastore, dag_id)
    when = env.parse_date(logical_date, "LOGICAL_DATE") if logical_date else env.now()
    run = trigger_dag(env.metastore, dag, env.now(), parse_run_conf(conf), make_run_id("test", when), when)
    return follow_run(env, dag, run, executor_name="sequential")


@dags.command("report")
@output_option
@click.pass_obj
def report(env: CliEnv, output: str) -> None:
    """Each DAG file: its DAGs, tasks, errors, how long its last parse took and when (Airflow's `dags report`)."""
    refresh_dag_folder(env.settings, env.metastore)
    rows = [
        {"file": f.fileloc, "duration": round(f.parse_duration, 3), "dag_num": len(f.dag_ids),
         "task_num": f.task_count, "errors": f.error_count, "dags": ", ".join(f.dag_ids),
         "last_parsed_at": f.last_parsed_at}
        for f in sorted(queries.dag_file_stats(env.metastore.db), key=lambda f: -f.parse_duration)
    ]
    emit(rows, output, ["file", "duration", "dag_num", "task_num", "errors", "dags"])


@dags.command("reserialize")
@click.pass_obj
def reserialize(env: CliEnv) -> None:
    """Parse every DAG file again, changed or not (after a change to a helper module the DAG files import)."""
    refresh = refresh_dag_folder(env.settings, env.metastore, force=True)
    click.echo(f"Parsed {len(refresh.parsed)} file(s): {refresh.dag_count} DAG(s), {refresh.error_count} import "
               "error(s)")


@dags.command("trigger")
@trigger_options
@click.pass_context
def trigger(ctx: click.Context, **kwargs: object) -> int:
    """Same as `sparkflow trigger`."""
    return ctx.invoke(trigger_command, **kwargs)
