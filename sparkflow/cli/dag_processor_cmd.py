"""sparkflow dag-processor: parse the DAG folder into serialized DAGs until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import sys

import click

from sparkflow.cli.env import CliEnv
from sparkflow.logs import MaskingFormatter, configure_sparkflow_log
from sparkflow.scheduler.dag_processor import DagProcessor


@click.command("dag-processor")
@click.option("--num-runs", "-n", type=click.IntRange(min=1), default=None,
              help="Stop after this many looks at the DAG folder (default: run until SIGTERM/SIGINT).")
@click.option("--parent-pid", type=int, default=None, hidden=True,
              help="Stop when this process (the scheduler that started this one) is gone.")
@click.pass_obj
def dag_processor(env: CliEnv, num_runs: int | None, parent_pid: int | None) -> int:
    """Parse the DAG folder (changed files only, each in a time-limited process) into the metastore's serialized
    DAGs, which the scheduler and the web server read. `sparkflow scheduler` starts one itself unless told not to."""
    settings = env.settings
    configure_sparkflow_log(settings.resolved_log_folder)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MaskingFormatter("[%(asctime)s] %(levelname)s - %(message)s"))
    logging.getLogger("sparkflow.dag_processor").addHandler(handler)
    logging.getLogger("sparkflow.dag_processor").setLevel(logging.INFO)
    return DagProcessor(settings, env.metastore, parent_pid).run(num_runs)
