"""Issue 21 item 12: deleting (or replacing) the SQLite metastore under a running scheduler stops it with a clear
error, instead of it writing to the deleted file while new runs stay queued for ever. A real `sparkflow scheduler`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkflow.cli import main


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_the_scheduler_stops_when_its_sqlite_file_goes(sf_home: Path, tmp_path: Path, how: str) -> None:
    assert main(["db", "init"]) == 0
    db = sf_home / "sparkflow.db"
    log = (tmp_path / "scheduler.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sparkflow", "scheduler"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=dict(os.environ), start_new_session=True)
    try:
        deadline, started = time.monotonic() + 60, sf_home / "logs" / "sparkflow.log"
        while not (started.exists() and b"scheduler started" in started.read_bytes()):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "scheduler.log").read_text()
            time.sleep(0.2)
        if how == "deleted":
            db.unlink()
        else:
            db.rename(tmp_path / "old.db")
            db.write_bytes((tmp_path / "old.db").read_bytes())
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()
    output = (tmp_path / "scheduler.log").read_text()
    assert code == 2, output
    assert f"the SQLite metastore {db} was {how}" in output and "Traceback" not in output, output
