"""sparkflow scheduler: the daemon that schedules and runs DAGs until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys

import click

from sparkflow.cli.env import CliEnv
from sparkflow.exceptions import UserError
from sparkflow.logs import MaskingFormatter, configure_sparkflow_log
from sparkflow.scheduler.daemon import SchedulerDaemon


@click.command("scheduler")
@click.option("--num-runs", "-n", type=int, default=None,
              help="Stop after this many loop iterations (default: run until SIGTERM/SIGINT).")
@click.option("--executor", type=click.Choice(["local", "sequential", "celery"]), default=None,
              help="Executor (default: the 'executor' setting).")
@click.option("--dag-processor/--no-dag-processor", default=None,
              help="Start a DAG processor as a child process (default: yes, unless the standalone_dag_processor "
                   "setting says a separate `sparkflow dag-processor` runs).")
@click.pass_obj
def scheduler(env: CliEnv, num_runs: int | None, executor: str | None, dag_processor: bool | None) -> int:
    """Run the scheduler: create scheduled runs and run their tasks, planning from the serialized DAGs that its
    DAG processor (a child process) keeps in step with the DAG folder. Stops cleanly on SIGTERM/SIGINT, leaving
    running tasks to finish on their own."""
    if num_runs is not None and num_runs < 1:
        raise UserError(f"--num-runs {num_runs} must be at least 1; leave it out to run until stopped")
    settings = env.settings
    metastore = env.metastore
    configure_sparkflow_log(settings.resolved_log_folder)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(levelname)s - %(message)s"))
    logging.getLogger("sparkflow.scheduler").addHandler(handler)
    click.echo(f"sparkflow scheduler: DAG folder {settings.resolved_dags_folder}, metastore "
               f"{settings.display_db_url}", err=True)
    start_processor = not settings.standalone_dag_processor if dag_processor is None else dag_processor
    return SchedulerDaemon(settings, metastore, executor, dag_processor=start_processor).run(num_runs)
