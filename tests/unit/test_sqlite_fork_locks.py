"""A task process forked (through the fork server) from a process with open SQLite connections must still hold
SQLite's locks for real: else a scheduler stopped while the task runs deletes the WAL under it on its way out,
and the task's recorded outcome is lost (it was: the try stayed 'running', to be failed as lost later)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.metastore.records import TIKey
from sparkflow.settings import load_settings

DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator

with DAG("outlives", start_date=datetime(2024, 1, 1), schedule=None):
    BashOperator(task_id="slow", bash_command="echo started; sleep 2; echo finished")
"""


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is SQLite's file locks
def test_a_try_outliving_its_stopped_scheduler_keeps_its_outcome(
        sf_home: Path, write_dag: Callable[[str, str], Path]) -> None:
    assert main(["db", "init"]) == 0
    write_dag("outlives", DAG)
    scheduler = subprocess.Popen([sys.executable, "-m", "sparkflow", "scheduler"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        assert main(["trigger", "outlives", "--run-id", "r1"]) == 0
        log = sf_home / "logs" / "dag_id=outlives" / "run_id=r1" / "task_id=slow" / "attempt=1.log"
        deadline = time.monotonic() + 120
        while not (log.exists() and "started" in log.read_text()):
            assert scheduler.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        scheduler.send_signal(signal.SIGTERM)  # stops at once; running tries are left to their runners
        assert scheduler.wait(timeout=60) == 0
    finally:
        if scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait()
    deadline = time.monotonic() + 120
    while "Marking task as SUCCESS" not in log.read_text():  # logged once the outcome is committed
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    metastore = open_metastore(load_settings())
    try:
        assert queries.get_task_instance(metastore.db, TIKey("outlives", "r1", "slow")).state.value == "success"
    finally:
        metastore.db.dispose()
