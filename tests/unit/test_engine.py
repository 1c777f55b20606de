"""metastore.engine: SQLite writers take the write lock in turn (BEGIN IMMEDIATE with a busy timeout)."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from sqlalchemy.exc import OperationalError

from sparkflow.exceptions import ConfigError
from sparkflow.metastore.engine import Database


def test_a_sqlite_writer_waits_for_the_write_lock_and_gives_up_after_the_busy_timeout(tmp_path) -> None:
    """Concurrent writers (scheduler, task processes, CLI) wait for each other instead of failing with "database
    is locked"; only a lock held past the busy timeout makes a writer give up."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    holder, waiter, impatient = Database(url), Database(url, busy_timeout=5.0), Database(url, busy_timeout=0.05)
    with holder.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.write() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            locked.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert locked.wait(5)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            with impatient.write():
                pass
        threading.Timer(0.2, release.set).start()
        started = time.monotonic()
        with waiter.write() as conn:  # blocks until the holder commits, then gets the lock
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert time.monotonic() - started >= 0.15
    finally:
        release.set()
        thread.join()
    with waiter.read() as conn:
        assert sorted(r[0] for r in conn.exec_driver_sql("SELECT x FROM t")) == [1, 2]
    for db in (holder, waiter, impatient):
        db.dispose()


@pytest.mark.postgres
def test_a_dropped_idle_postgres_connection_is_replaced_before_use(pg_test_database, monkeypatch) -> None:
    """A pooled connection the server dropped while it sat idle (a restart, an idle timeout) is found by a ping at
    checkout and replaced: the next transaction works. A connection in steady use is not pinged."""
    from sparkflow.metastore import engine

    pg_test_database.empty()
    db = Database(pg_test_database.url)
    try:
        with db.read() as conn:
            victim = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        killer = Database(pg_test_database.url)
        with killer.engine.connect() as other:
            other.exec_driver_sql(f"SELECT pg_terminate_backend({victim})")
        killer.dispose()
        monkeypatch.setattr(engine, "PING_IDLE_SECONDS", 0.0)  # it has been idle long enough
        with db.read() as conn:
            assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != victim
        pings = []
        monkeypatch.setattr(engine, "PING_IDLE_SECONDS", 3600.0)
        monkeypatch.setattr(db.engine.dialect, "do_ping", lambda conn: pings.append(conn) or True)
        for _ in range(3):
            with db.read() as conn:
                conn.exec_driver_sql("SELECT 1")
        assert pings == []
    finally:
        db.dispose()


def test_a_deleted_sqlite_metastore_is_not_created_again_by_an_open_or_a_reconnect(tmp_path) -> None:
    """Only `db init` creates the file: a process that opens the metastore after it was deleted (a new task process)
    and a pool that reconnects fail, instead of starting an empty metastore that a running scheduler would then
    take for a replacement (and report that instead of the deletion)."""
    path = tmp_path / "sparkflow.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    db.dispose()  # the next use reconnects
    path.unlink()
    with pytest.raises(ConfigError, match=r"metastore at .*sparkflow.db is not initialised .* `sparkflow db init`"):
        Database(f"sqlite:///{path}", create=False)
    with pytest.raises(OperationalError), db.read():
        pass
    assert not path.exists()
    with pytest.raises(ConfigError, match="was deleted while in use"):
        db.check_file()
