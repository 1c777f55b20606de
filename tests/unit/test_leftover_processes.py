"""Issue 21 item 11: what a successful try leaves running — a background job of its Bash command, a process that
left the group with setsid, a child forked by a @task — is killed when the try ends, with a log line naming it.
Real task processes (the local executor's fork server) and real `sleep` processes."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.cli import main

DAG = """
import os, subprocess, sys, time
from datetime import datetime
from sparkflow import DAG, BashOperator, task

MARK = "{mark}"
SLEEP = [sys.executable, "-c", "import time; time.sleep(300)", MARK]  # the mark in argv finds it in /proc

@task
def forks():
    if os.fork() == 0:  # the child outlives the task's function
        os.execv(sys.executable, SLEEP)
    subprocess.Popen(SLEEP, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # a helper meant to outlive the try says so, and is left alone
    subprocess.Popen(SLEEP + ["helper"], start_new_session=True, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env={**os.environ, "SPARKFLOW_DETACHED": "1"})
    return "ok"

PY = f"{sys.executable} -c 'import time; time.sleep(300)'"

with DAG("leaky_procs", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    bg = BashOperator(task_id="bg", bash_command=f"({PY} {mark} >/dev/null 2>&1)& "
                                                 f"setsid {PY} {mark} >/dev/null 2>&1 & echo started")
    bg >> forks()
"""


def _alive_with(mark: str, also: str = "") -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if mark.encode() in cmdline and also.encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is processes, not the database
def test_a_successful_try_leaves_no_process_behind(sf_home: Path, write_dag: Callable[[str, str], Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    mark = f"leftover-{secrets.token_hex(4)}"
    try:
        assert main(["db", "init"]) == 0
        write_dag("leaky_procs", DAG.replace("{mark}", mark))
        assert main(["trigger", "leaky_procs", "--run-id", "r1", "--wait"]) == 0, capsys.readouterr()
        deadline = time.monotonic() + 10
        while len(_alive_with(mark)) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        helper = _alive_with(mark, "helper")
        assert len(helper) == 1, "the detached helper was killed"
        assert _alive_with(mark) == helper, "processes the tries started still run"
        folder = sf_home / "logs" / "dag_id=leaky_procs" / "run_id=r1"
        bash_log = (folder / "task_id=bg" / "attempt=1.log").read_text()
        py_log = (folder / "task_id=forks" / "attempt=1.log").read_text()
        assert "Killed 2 process(es) the try left running" in bash_log and "(python" in bash_log, bash_log
        assert "Killed 2 process(es) the try left running" in py_log, py_log
    finally:
        for pid in _alive_with(mark):
            os.kill(pid, 9)
