"""sparkflow logs DAG_ID RUN_ID TASK_ID [--try N] [--follow]."""

from __future__ import annotations

import time
from pathlib import Path

import click

from sparkflow.cli.env import CliEnv
from sparkflow.exceptions import UserError
from sparkflow.logs import read_log, task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.state import TASK_TERMINAL


@click.command("logs")
@click.argument("dag_id")
@click.argument("run_id")
@click.argument("task_id")
@click.option("--try", "try_number", type=int, help="Which try (default: the latest).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the try ends.")
@click.option("--map-index", type=int, default=-1, show_default=True,
              help="The instance of a mapped task (0..n-1); -1 for an unmapped task.")
@click.pass_obj
def logs(env: CliEnv, dag_id: str, run_id: str, task_id: str, try_number: int | None, follow: bool,
         map_index: int) -> None:
    """Print the log of one try of a task instance."""
    key = TIKey(dag_id, run_id, task_id, map_index)
    ti = queries.get_task_instance(env.metastore.db, key)
    if ti.try_number == 0:
        raise UserError(f"task '{task_id}' of run '{run_id}' has not started yet (state {ti.state.value}); no log")
    if try_number is not None and try_number < 1:
        raise UserError(f"--try {try_number} is not a try number; tries count from 1 (task '{task_id}' has tries "
                        f"1..{ti.try_number})")
    number = try_number or ti.try_number
    if not 1 <= number <= ti.try_number:
        raise UserError(f"--try {number} is out of range; task '{task_id}' has tries 1..{ti.try_number}")
    path = task_log_path(env.settings.resolved_log_folder, dag_id, run_id, task_id, number, map_index)
    offset = _print_from(path, 0)
    while follow:
        current = queries.get_task_instance(env.metastore.db, key)
        if current.try_number != number or current.state in TASK_TERMINAL:
            _print_from(path, offset)
            return
        time.sleep(0.5)
        offset = _print_from(path, offset)


def _print_from(path: Path, offset: int) -> int:
    """Print the log's whole lines from ``offset`` on, a chunk at a time (bounded memory); the next offset."""
    while True:
        text, offset = read_log(path, offset)
        if not text:
            return offset
        click.echo(text, nl=False)
