"""Issue 21 item 15 (part): the CLI refuses NaN/Infinity in --conf as the API does, `logs --try 0` is a user error,
and `sparkflow logs` prints a log larger than one read chunk whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.logs import LOG_CHUNK_BYTES

DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator

with DAG("small", start_date=datetime(2024, 1, 1), schedule=None):
    BashOperator(task_id="t", bash_command="echo hi")
"""


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
def test_cli_input_errors_and_whole_logs(sf_home: Path, write_dag: Callable[[str, str], Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    write_dag("small", DAG)
    capsys.readouterr()
    for conf in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'):
        assert main(["trigger", "small", "--conf", conf]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not JSON" in err, err
    assert main(["trigger", "small", "--run-id", "r1", "--wait"]) == 0
    capsys.readouterr()
    assert main(["logs", "small", "r1", "t", "--try", "0"]) == 2
    assert "tries count from 1" in capsys.readouterr().err
    log = sf_home / "logs" / "dag_id=small" / "run_id=r1" / "task_id=t" / "attempt=1.log"
    with log.open("a") as fh:
        for i in range(3 * LOG_CHUNK_BYTES // 100):
            fh.write(f"{i:09d} " + "z" * 90 + "\n")
        fh.write("the very end\n")
    capsys.readouterr()
    assert main(["logs", "small", "r1", "t"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("the very end\n") and len(out.encode()) == log.stat().st_size
