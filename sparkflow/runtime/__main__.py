"""Entry point of a task process: ``python -m sparkflow.runtime DAG_ID RUN_ID TASK_ID TRY_NUMBER [--map-index N]``.

The local executor normally forks its task processes from a warm fork server (sparkflow.runtime.forkserver),
whose workers call the same ``exit_code_of_try``; this entry point stays for running one try by hand.

The exit code tells the executor whether the runner recorded an outcome (0) or died before it could (non-zero),
in which case the scheduler fails or retries the task itself.
"""

from __future__ import annotations

import argparse
import sys

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.logs import configure_sparkflow_log
from sparkflow.metastore.records import TIKey
from sparkflow.runtime.task_runner import exit_code_of_try
from sparkflow.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkflow.runtime")
    parser.add_argument("dag_id")
    parser.add_argument("run_id")
    parser.add_argument("task_id")
    parser.add_argument("try_number", type=int)
    parser.add_argument("--map-index", type=int, default=-1, help="the instance of a mapped task (default -1)")
    args = parser.parse_args(argv)
    settings = load_settings()
    add_import_folders(settings.import_folders, airflow_finders())
    configure_sparkflow_log(settings.resolved_log_folder)
    key = TIKey(args.dag_id, args.run_id, args.task_id, args.map_index)
    return exit_code_of_try(settings, None, key, args.try_number)[0]


if __name__ == "__main__":
    sys.exit(main())
