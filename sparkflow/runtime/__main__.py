"""Entry point of a task process started by the local executor: ``python -m sparkflow.runtime KEY...``.

The exit code tells the executor whether the runner recorded an outcome (0) or died before it could (non-zero),
in which case the scheduler fails or retries the task itself.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sparkflow.exceptions import SparkflowError
from sparkflow.logs import configure_sparkflow_log
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.metastore.records import TIKey
from sparkflow.runtime.task_runner import run_task_instance
from sparkflow.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparkflow.runtime")
    parser.add_argument("dag_id")
    parser.add_argument("run_id")
    parser.add_argument("task_id")
    parser.add_argument("try_number", type=int)
    args = parser.parse_args(argv)
    settings = load_settings()
    configure_sparkflow_log(settings.resolved_log_folder)
    try:
        metastore = open_metastore(settings)
        run_task_instance(settings, metastore, TIKey(args.dag_id, args.run_id, args.task_id), args.try_number)
    except SparkflowError as exc:
        print(f"sparkflow task runner: {exc}", file=sys.stderr)
        return 1
    except Exception:
        logging.getLogger("sparkflow.runtime").exception("task runner crashed")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
