"""Issue 21 item 4: $SPARKFLOW_HOME is 0700 and what sparkflow writes there (the SQLite database and its WAL, task
logs, sparkflow.log, keys) is 0600, whatever the umask; exports are written 0600 through a fresh temporary file and
never through a planted symlink."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkflow.cli import main

DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator, PythonOperator

with DAG("private", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    BashOperator(task_id="say", bash_command="echo hi") >> PythonOperator(task_id="py", python_callable=lambda: 42)
"""


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: without care, files would be 0644 and directories 0755
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is the SQLite file and its WAL
def test_home_database_wal_and_logs_are_private(sf_home: Path, open_umask: None, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["db", "init"]) == 0
    (sf_home.parent / "dags" / "private.py").write_text(DAG)
    assert main(["trigger", "private", "--run-id", "r1", "--wait"]) == 0, capsys.readouterr()
    assert _mode(sf_home) == 0o700
    db = sqlite3.connect(sf_home / "sparkflow.db")  # the WAL exists while a connection is open
    try:
        db.execute("UPDATE dag SET is_paused = is_paused")
        db.commit()
        modes = {str(p.relative_to(sf_home)): _mode(p) for p in sf_home.rglob("*") if p.is_file()}
    finally:
        db.close()
    names = {Path(p).name for p in modes}
    assert {"sparkflow.db", "sparkflow.db-wal", "fernet.key", "attempt=1.log", "sparkflow.log"} <= names, names
    loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert not loose, loose
    open_dirs = {str(p.relative_to(sf_home)): oct(_mode(p)) for p in sf_home.rglob("*") if p.is_dir()
                 and _mode(p) & 0o077}
    assert not open_dirs, open_dirs


def test_db_init_tightens_an_existing_home(sf_home: Path, open_umask: None) -> None:
    sf_home.mkdir(mode=0o755)
    os.chmod(sf_home, 0o755)
    assert main(["db", "init"]) == 0
    assert _mode(sf_home) == 0o700


@pytest.mark.parametrize("what", ["connections", "variables"])
def test_exports_never_follow_a_planted_symlink(sf_home: Path, tmp_path: Path, open_umask: None, what: str) -> None:
    assert main(["db", "init"]) == 0
    if what == "connections":
        assert main(["connections", "add", "c1", "--conn-type", "http", "--conn-password", "pw-export-1"]) == 0
    else:
        assert main(["variables", "set", "k1", "pw-export-1"]) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    out = tmp_path / "export" / ("out.json" if what == "variables" else "out.yaml")
    out.parent.mkdir()
    (out.parent / (out.name + ".tmp")).symlink_to(victim)  # where the old export wrote its temporary file
    assert main([what, "export", str(out)]) == 0
    assert victim.read_text() == "untouched"
    assert "pw-export-1" in out.read_text() and _mode(out) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, out.name + ".tmp"])  # no leftovers
