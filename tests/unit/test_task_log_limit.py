"""Issue 21 item 8: a try's log stops at max_task_log_bytes with one line saying so, on the sequential executor
(in-process) and the local executor (fork-server task processes, which Celery workers use too); the try itself
runs to its end. In a task process the cap holds for output written straight to file descriptors 1 and 2 (a
subprocess that inherits them) as well."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.logs import truncation_line
from sparkflow.metastore import queries
from sparkflow.settings import load_settings
from tests.helpers import run_dag

DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator, PythonOperator

def chatty():
    for i in range(5000):
        print(f"python line {i:05d} " + "y" * 80)
    return "finished"

def inherits_descriptors():
    import os, subprocess
    subprocess.run(["sh", "-c", "for i in $(seq 1 20000); do echo subprocess line $i; done"], check=True)
    os.system("for i in $(seq 1 20000); do echo os.system line $i >&2; done")
    return "finished"

with DAG("chatty", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    BashOperator(task_id="bash", bash_command="for i in $(seq 1 5000); do echo bash line $i; done; echo bash-end")
    PythonOperator(task_id="py", python_callable=chatty)
    PythonOperator(task_id="sub", python_callable=inherits_descriptors)
"""
LIMIT = 50_000


def _check_logs(logs: dict[str, Path]) -> None:
    for task_id, path in logs.items():
        text = path.read_text()
        assert path.stat().st_size <= LIMIT + len(truncation_line(LIMIT)), (task_id, path.stat().st_size)
        assert text.endswith(truncation_line(LIMIT)) and text.count("log truncated") == 1, text[-300:]


def test_sequential_executor_caps_the_log(monkeypatch: pytest.MonkeyPatch, sf_home: Path,
                                          write_dag: Callable[[str, str], Path]) -> None:
    monkeypatch.setenv("SPARKFLOW_MAX_TASK_LOG_BYTES", str(LIMIT))
    from sparkflow.metastore.bootstrap import init_metastore

    settings = load_settings()
    metastore = init_metastore(settings)
    try:
        run = run_dag(settings, metastore, write_dag("chatty", DAG), "chatty")
        tis = queries.task_instances(metastore.db, "chatty", run.run_id)
        assert {ti.task_id: ti.state.value for ti in tis} == {"bash": "success", "py": "success", "sub": "success"}
        # in-process, a subprocess writes to the caller's own descriptors (the terminal), not to the log
        _check_logs({ti.task_id: Path(ti.log_path) for ti in tis if ti.task_id != "sub"})
    finally:
        metastore.db.dispose()


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is the executor, not the database
def test_local_executor_caps_the_log(monkeypatch: pytest.MonkeyPatch, sf_home: Path,
                                     write_dag: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SPARKFLOW_MAX_TASK_LOG_BYTES", str(LIMIT))
    assert main(["db", "init"]) == 0
    write_dag("chatty", DAG)
    assert main(["trigger", "chatty", "--run-id", "r1", "--wait"]) == 0, capsys.readouterr()
    folder = sf_home / "logs" / "dag_id=chatty" / "run_id=r1"
    _check_logs({t: folder / f"task_id={t}" / "attempt=1.log" for t in ("bash", "py", "sub")})
    sub = (folder / "task_id=sub" / "attempt=1.log").read_text()
    assert "subprocess line 1\n" in sub and "os.system line" not in sub  # counted and cut, in order


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_local_executor_keeps_output_of_subprocesses_under_the_cap(
        monkeypatch: pytest.MonkeyPatch, sf_home: Path, write_dag: Callable[[str, str], Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Below the cap, what a subprocess writes to the inherited descriptors is all in the log."""
    monkeypatch.setenv("SPARKFLOW_MAX_TASK_LOG_BYTES", str(10 * 1024 * 1024))
    assert main(["db", "init"]) == 0
    write_dag("chatty", DAG)
    assert main(["trigger", "chatty", "--run-id", "r1", "--wait"]) == 0, capsys.readouterr()
    log = (sf_home / "logs" / "dag_id=chatty" / "run_id=r1" / "task_id=sub" / "attempt=1.log").read_text()
    assert "subprocess line 20000\n" in log and "os.system line 20000\n" in log
    assert "log truncated" not in log


def test_a_chunk_crossing_the_cap_leaves_the_lines_that_fit_then_the_truncation_line(tmp_path: Path) -> None:
    """A pipe's read may bring many lines at once: the log still fills up to the cap, in whole lines."""
    import os

    from sparkflow.logs import write_capped

    path = tmp_path / "attempt=1.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        assert write_capped(fd, b"first\n", 100)
        assert not write_capped(fd, b"".join(f"line {i:02d}\n".encode() for i in range(30)), 100)
        assert not write_capped(fd, b"later\n", 100)  # nothing after the truncation line
    finally:
        os.close(fd)
    lines = path.read_text().splitlines(keepends=True)
    assert lines[0] == "first\n" and lines[-1] == truncation_line(100)
    assert lines[1:-1] == [f"line {i:02d}\n" for i in range(len(lines) - 2)] and len(lines) - 2 == 11
