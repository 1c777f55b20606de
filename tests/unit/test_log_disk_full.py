"""Issue 21 item 14: a try whose log cannot be written because the disk is full fails with "No space left on
device" naming the log file (it used to end in a RecursionError), and the scheduler runs on.

The full disk is real to the kernel: the try's log file is a symlink to /dev/full, where every write fails with
ENOSPC exactly as on a full file system (mounting a tiny file system would need privileges)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.logs import open_task_log_handler
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.settings import load_settings

DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator

with DAG("full", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    writes = BashOperator(task_id="writes", bash_command="echo a line for the log; ls /proc/self/fd >/dev/null")
    after = BashOperator(task_id="after", bash_command="echo after", trigger_rule="all_done")
    writes >> after
"""


def _full_log(folder: Path) -> Path:
    """The first try of task 'writes' of run r1 logs into /dev/full."""
    path = folder / "dag_id=full" / "run_id=r1" / "task_id=writes" / "attempt=1.log"
    path.parent.mkdir(parents=True)
    path.symlink_to("/dev/full")
    return path


def test_the_handler_keeps_the_error_instead_of_raising() -> None:
    handler = open_task_log_handler(Path("/dev/full"), max_bytes=1000)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None)
    handler.emit(record)  # no exception into the task's code, nothing printed to the task's stderr (recursion)
    handler.emit(record)
    handler.close()
    assert handler.failure() == (
        "the task log /dev/full could not be written: No space left on device (errno 28); "
        "free space on its disk or point the setting log_folder elsewhere")


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is the task process
def test_a_full_log_disk_fails_the_try_and_the_scheduler_runs_on(
        sf_home: Path, write_dag: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    write_dag("full", DAG)
    settings = load_settings()
    path = _full_log(settings.resolved_log_folder)
    # the leaf 'after' decides the run's state (Airflow's rule); what matters is that the CLI did not crash
    assert main(["trigger", "full", "--run-id", "r1", "--wait"]) == 0
    assert "RecursionError" not in capsys.readouterr().err
    metastore = open_metastore(settings)
    try:
        tis = {ti.task_id: ti for ti in queries.task_instances(metastore.db, "full", "r1")}
        assert tis["writes"].state.value == "failed"
        assert tis["writes"].error is not None
        assert f"the task log {path} could not be written: No space left on device" in tis["writes"].error
        assert tis["after"].state.value == "success"  # the scheduler went on to the next task
        assert os.path.islink(path)  # nothing replaced the planted file
    finally:
        metastore.db.dispose()
    # and a later run, whose logs have room, succeeds as usual
    assert main(["trigger", "full", "--run-id", "r2", "--wait"]) == 0
