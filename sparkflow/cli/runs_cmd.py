"""sparkflow trigger and sparkflow runs list."""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable
from typing import Any

import click

from sparkflow.cli.env import CliEnv
from sparkflow.cli.follow import RunFollower
from sparkflow.cli.output import emit, output_option
from sparkflow.definitions.dag import DAG
from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import queries
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.dag_processing import current_dag, load_dag
from sparkflow.scheduler.loop import drive_run
from sparkflow.scheduler.runs import parse_run_conf, trigger_dag
from sparkflow.state import RUN_TERMINAL, RunState


def trigger_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.argument("dag_id"),
        click.option("--conf", "-c", help="Run configuration as a JSON object, e.g. '{\"day\": \"2024-01-01\"}'."),
        click.option("--run-id", "-r", help="Run id (default manual__<logical date>)."),
        click.option("--logical-date", "-l", help="Logical date, YYYY-MM-DD or ISO 8601 (default now)."),
        click.option("--wait", "-w", is_flag=True, help="Drive the run to its end here and follow it live."),
    ]):
        func = decorator(func)
    return func


INTERRUPTED_EXIT = 130  # the shell's code for a command ended by Ctrl-C


def follow_run(env: CliEnv, dag: DAG, run: DagRunRecord, executor_name: str | None = None,
               resume: bool = False) -> int:
    """Drive the run with the scheduler loop, printing states and logs live; exit code 0 on success, 1 if not.
    Ctrl-C lets the tasks that run finish (a second Ctrl-C kills them), leaves the run as it is, and says how to
    continue it."""
    follower = RunFollower(env.metastore.db, run, env.settings.resolved_log_folder)
    click.echo(f"Following DAG '{dag.dag_id}' run '{run.run_id}' ...")

    def interrupted() -> None:
        click.echo("Interrupted: letting the running tasks finish (Ctrl-C again to kill them) ...", err=True)

    try:
        final = drive_run(env.settings, env.metastore, dag, run, executor_name, on_tick=follower.poll,
                          resume=resume, on_interrupt=interrupted)
    except KeyboardInterrupt:
        follower.poll()
        click.echo(_interrupted(env, run), err=True)
        return INTERRUPTED_EXIT
    follower.poll()
    colour = "green" if final.state is RunState.SUCCESS else "red"
    duration = f" in {final.duration:.1f}s" if final.duration is not None else ""
    click.echo(click.style(f"Run {final.run_id} of {final.dag_id} finished: {final.state.value}{duration}",
                           fg=colour, bold=True))
    if final.state is not RunState.SUCCESS:
        for event in queries.state_events(env.metastore.db, run.dag_id, run.run_id):
            if event.event == "timeout" and event.task_id is None:
                click.echo(f"  timed out: {event.detail}; its unfinished tasks were skipped", err=True)
        failed = [ti for ti in queries.task_instances(env.metastore.db, run.dag_id, run.run_id)
                  if ti.state.value in ("failed", "upstream_failed")]
        for ti in failed:
            click.echo(f"  {ti.task_id}: {ti.state.value}" + (f" - {ti.error.splitlines()[0]}" if ti.error else ""),
                       err=True)
        return 1
    return 0


def _interrupted(env: CliEnv, run: DagRunRecord) -> str:
    current = queries.get_run(env.metastore.db, run.dag_id, run.run_id)
    counts = Counter(ti.state.value for ti in queries.task_instances(env.metastore.db, run.dag_id, run.run_id))
    tasks = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    return (f"Stopped following: run '{run.run_id}' of DAG '{run.dag_id}' is {current.state.value} ({tasks}). "
            f"Continue it with `sparkflow trigger {run.dag_id} --run-id {shlex.quote(run.run_id)} --wait`, or let "
            "`sparkflow scheduler` run it")


def _run_to_resume(env: CliEnv, dag_id: str, run_id: str, conf: str | None, logical_date: str | None
                   ) -> DagRunRecord | None:
    """The existing run ``run_id`` that `trigger --run-id ... --wait` continues (None: there is none yet); a
    finished one, or options that would change it, are a UserError."""
    try:
        run = queries.get_run(env.metastore.db, dag_id, run_id)
    except NotFound:
        return None
    if run.state in RUN_TERMINAL:
        when = shlex.quote(run.logical_date.isoformat())
        raise UserError(f"DAG '{dag_id}' already has a run with run_id '{run_id}', and it is {run.state.value}; "
                        "choose another --run-id, or clear its tasks to run them again (`sparkflow tasks clear "
                        f"{dag_id} -s {when} -e {when}`)")
    if conf is not None or logical_date is not None:
        raise UserError(f"run '{run_id}' of DAG '{dag_id}' exists ({run.state.value}): --conf and --logical-date "
                        "cannot change it; leave them out to continue the run")
    return run


@click.command("trigger")
@trigger_options
@click.pass_obj
def trigger(env: CliEnv, dag_id: str, conf: str | None, run_id: str | None, logical_date: str | None,
            wait: bool) -> int:
    """Create a DagRun of DAG_ID (and with --wait, run it to the end here). With --wait, --run-id of an
    unfinished run continues that run (one whose `trigger --wait` was interrupted, say)."""
    conf_value = parse_run_conf(conf)
    when = env.parse_date(logical_date, "--logical-date") if logical_date else None
    # Without --wait nothing of the DAG runs here: its serialized form is enough. With it, this process drives the
    # run and calls the DAG's callbacks, so it imports the one DAG file (time-limited).
    dag = load_dag(env.settings, env.metastore, dag_id) if wait else current_dag(env.settings, env.metastore, dag_id)
    existing = _run_to_resume(env, dag_id, run_id, conf, logical_date) if wait and run_id is not None else None
    if existing is not None:
        click.echo(f"Continuing run {existing.run_id} of DAG '{dag_id}' ({existing.state.value})")
        return follow_run(env, dag, existing, resume=True)
    run = trigger_dag(env.metastore, dag, env.now(), conf_value, run_id, when)
    click.echo(f"Created run {run.run_id} of DAG '{dag_id}' (logical date {run.logical_date.isoformat()})")
    if not wait:
        return 0
    return follow_run(env, dag, run)


@click.group("runs")
def runs() -> None:
    """DagRuns."""


@runs.command("list")
@click.argument("dag_id", required=False)
@click.option("--state", type=click.Choice([s.value for s in RunState]), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@output_option
@click.pass_obj
def list_cmd(env: CliEnv, dag_id: str | None, state: str | None, limit: int, output: str) -> None:
    """Runs, newest logical date first."""
    if dag_id is not None:
        queries.get_dag(env.metastore.db, dag_id)  # unknown DAG -> clear error, not an empty list
    records = queries.list_runs(env.metastore.db, dag_id, [RunState(state)] if state else None, limit)
    rows = [
        {"dag_id": r.dag_id, "run_id": r.run_id, "run_type": r.run_type, "state": r.state,
         "logical_date": r.logical_date, "start_date": r.start_date, "end_date": r.end_date,
         "data_interval_start": r.data_interval_start, "data_interval_end": r.data_interval_end, "conf": r.conf}
        for r in records
    ]
    emit(rows, output, ["dag_id", "run_id", "state", "logical_date", "start_date", "end_date"])
