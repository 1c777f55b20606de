"""Issue 21 item 8: a try's log stops at max_task_log_bytes with one line saying so, on the sequential executor
(in-process) and the local executor (fork-server task processes); the try itself runs to its end."""

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

with DAG("chatty", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    BashOperator(task_id="bash", bash_command="for i in $(seq 1 5000); do echo bash line $i; done; echo bash-end")
    PythonOperator(task_id="py", python_callable=chatty)
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
        assert {ti.task_id: ti.state.value for ti in tis} == {"bash": "success", "py": "success"}
        _check_logs({ti.task_id: Path(ti.log_path) for ti in tis})
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
    _check_logs({t: folder / f"task_id={t}" / "attempt=1.log" for t in ("bash", "py")})
