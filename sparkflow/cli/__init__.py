"""The ``sparkflow`` command: thin click commands that parse, call one library function and print.

A SparkflowError becomes one line on stderr and its exit code (2 for user mistakes, 1 for failures); anything
else is logged with its traceback to the sparkflow log and reported in one line.
"""

from __future__ import annotations

import logging
import sys

import click

from sparkflow import __version__
from sparkflow.cli import (
    backfill_cmd,
    config_cmd,
    connections_cmd,
    dags_cmd,
    db_cmd,
    logs_cmd,
    pools_cmd,
    runs_cmd,
    scheduler_cmd,
    tasks_cmd,
    users_cmd,
    variables_cmd,
    web_cmd,
    worker_cmd,
)
from sparkflow.cli.env import CliEnv
from sparkflow.exceptions import SparkflowError
from sparkflow.logs import configure_sparkflow_log


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparkflow")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """sparkflow: Airflow-style DAGs, Spark-first."""
    ctx.obj = CliEnv()


for module in (db_cmd, config_cmd, connections_cmd, dags_cmd, runs_cmd, tasks_cmd, logs_cmd,
               scheduler_cmd, backfill_cmd, pools_cmd, variables_cmd, users_cmd, web_cmd,
               worker_cmd):
    module.register(cli)


def main(argv: list[str] | None = None) -> int:
    env_for_logs: CliEnv | None = None
    try:
        try:
            result = cli.main(args=argv, prog_name="sparkflow", standalone_mode=False)
        except click.exceptions.Abort:
            click.echo("Aborted.", err=True)
            return 130
        except click.ClickException as exc:
            exc.show()
            return exc.exit_code
        return result if isinstance(result, int) else 0
    except SparkflowError as exc:
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except Exception as exc:  # a bug: keep the traceback in the log, show one line
        env_for_logs = CliEnv()
        try:
            folder = env_for_logs.settings.resolved_log_folder
            configure_sparkflow_log(folder)
            logging.getLogger("sparkflow.cli").exception("internal error")
            where = f"; the traceback is in {folder / 'sparkflow.log'}"
        except Exception:
            where = ""
        click.echo(f"Internal error: {type(exc).__name__}: {exc}{where}", err=True)
        return 1


def entry() -> None:
    sys.exit(main())
