"""sparkflow backfill: run a DAG for every scheduled date in a range."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv, confirm
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.backfill import drive_runs, plan_backfill, start_backfill
from sparkflow.scheduler.dag_processing import load_dag
from sparkflow.state import RunState


@click.command("backfill")
@click.argument("dag_id")
@click.option("--start-date", "-s", required=True, help="First logical date, YYYY-MM-DD or ISO 8601.")
@click.option("--end-date", "-e", required=True, help="Last logical date (inclusive), YYYY-MM-DD or ISO 8601.")
@click.option("--reset-dagruns", is_flag=True, help="Clear and re-run existing runs in the range.")
@click.option("--rerun-failed-tasks", is_flag=True, help="Re-run the failed tasks of existing failed runs.")
@click.option("--dry-run", is_flag=True, help="Show what would run; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def backfill(env: CliEnv, dag_id: str, start_date: str, end_date: str, reset_dagruns: bool,
             rerun_failed_tasks: bool, dry_run: bool, yes: bool) -> int:
    """Create and run DAG_ID's runs (run_type backfill) for each scheduled logical date from -s to -e."""
    start = env.parse_date(start_date, "--start-date")
    end = env.parse_date(end_date, "--end-date")
    dag = load_dag(env.settings, env.metastore, dag_id)
    plan = plan_backfill(env.metastore, dag, start, end, env.now(), reset_dagruns, rerun_failed_tasks)
    for run in plan.untouched:
        click.echo(f"Run {run.run_id} is already {run.state.value}; --reset-dagruns"
                   + (" or --rerun-failed-tasks" if run.state is RunState.FAILED else "") + " runs it again")
    if dry_run:
        for interval in plan.to_create:
            click.echo(f"Would create a run for {interval.start.isoformat()}")
        for run, task_ids in plan.to_clear:
            click.echo(f"Would clear {len(task_ids)} task(s) of {run.run_id}")
        return 0
    cap = env.settings.max_runs_per_loop
    if plan.writes > cap:
        confirm(f"Backfill of DAG '{dag_id}' would create or clear {plan.writes} runs, more than "
                f"max_runs_per_loop={cap}.", yes)
    elif reset_dagruns and plan.to_clear:
        confirm(f"Backfill of DAG '{dag_id}' will clear and re-run {len(plan.to_clear)} existing run(s).", yes)
    runs = start_backfill(env.metastore, plan, env.now())
    if not runs:
        click.echo("Nothing to run")
        return 0
    click.echo(f"Backfilling {len(runs)} run(s) of DAG '{dag_id}' from {runs[0].logical_date.isoformat()} to "
               f"{runs[-1].logical_date.isoformat()} ...")
    final = drive_runs(env.settings, env.metastore, dag, runs)
    for run in final:
        click.echo(_line(run))
    return 0 if all(r.state is RunState.SUCCESS for r in final) else 1


def _line(run: DagRunRecord) -> str:
    colour = "green" if run.state is RunState.SUCCESS else "red"
    return click.style(f"{run.run_id}: {run.state.value}", fg=colour)
