"""The ``sparkflow`` command: thin click commands that parse, call one library function and print.

A SparkflowError becomes one line on stderr and its exit code (2 for user mistakes, 1 for failures); anything
else is logged with its traceback to the sparkflow log and reported in one line.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import logging
import os
import sys
import threading

import click

from sparkflow import __version__
from sparkflow.cli.env import CliEnv
from sparkflow.exceptions import SparkflowError
from sparkflow.logs import configure_sparkflow_log

# Command name -> "module:attribute". A command's module is imported only when that command runs: `sparkflow
# trigger` must not pay for FastAPI, Celery or alembic (about 1 s of imports on 2 cores).
COMMANDS = {
    "assets": "assets_cmd:assets",
    "backfill": "backfill_cmd:backfill",
    "config": "config_cmd:config",
    "connections": "connections_cmd:connections",
    "dag-processor": "dag_processor_cmd:dag_processor",
    "dags": "dags_cmd:dags",
    "db": "db_cmd:db",
    "logs": "logs_cmd:logs",
    "pools": "pools_cmd:pools",
    "runs": "runs_cmd:runs",
    "scheduler": "scheduler_cmd:scheduler",
    "spark-connect": "spark_connect_cmd:spark_connect",
    "standalone": "web_cmd:standalone",
    "tasks": "tasks_cmd:tasks",
    "trigger": "runs_cmd:trigger",
    "users": "users_cmd:users",
    "variables": "variables_cmd:variables",
    "webserver": "web_cmd:webserver",
    "worker": "worker_cmd:worker",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(f"sparkflow.cli.{module}"), attribute)
        if not gc.isenabled():  # start-up is over (see sparkflow/__main__.py)
            gc.freeze()
            gc.enable()
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sparkflow")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """sparkflow: Airflow-style DAGs, Spark-first."""
    ctx.ensure_object(CliEnv)


def main(argv: list[str] | None = None) -> int:
    env = CliEnv()
    try:
        return _run(argv, env)
    finally:
        env.close()  # the command's database connections, also when it failed


def _run(argv: list[str] | None, env: CliEnv) -> int:
    try:
        try:
            result = cli.main(args=argv, prog_name="sparkflow", standalone_mode=False, obj=env)
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
        try:
            folder = env.settings.resolved_log_folder
            configure_sparkflow_log(folder)
            logging.getLogger("sparkflow.cli").exception("internal error")
            where = f"; the traceback is in {folder / 'sparkflow.log'}"
        except Exception:
            where = ""
        click.echo(f"Internal error: {type(exc).__name__}: {exc}{where}", err=True)
        return 1


def entry() -> None:
    code = main()
    if threading.active_count() == 1:
        # Leave without the interpreter's tear-down, which frees every module and object one by one, for memory
        # the OS takes back at once. What
        # an exit must still do is done: main() closed the database connections, the atexit hooks run
        # (logging.shutdown flushes and closes log files), then the standard streams are flushed. With other
        # threads still running, the normal exit waits for them.
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more can be said
                stream.flush()
        os._exit(code)
    sys.exit(code)
