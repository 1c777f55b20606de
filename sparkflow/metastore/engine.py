"""Database engines: SQLite in WAL mode with a busy timeout (default) or PostgreSQL (SPARKFLOW_DB_URL).

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: a deferred transaction that later wants to
write cannot wait for the lock (SQLite returns "database is locked" at once), an immediate one waits up to the
busy timeout. That is what lets the scheduler, task processes and the CLI write at the same time.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError

from sparkflow.exceptions import ConfigError
from sparkflow.files import touch_private

_WRITE = "sparkflow_write"
_MIGRATION_LOCK_KEY = 0x5350_4B46  # any constant: the advisory lock id of "migrating sparkflow's schema"


class Database:
    def __init__(self, url: str, busy_timeout: float = 30.0, create: bool = True) -> None:
        """``create``: a SQLite file that does not exist yet is created (`db init`); otherwise it is an error."""
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise ConfigError(
                "setting 'db_url' is not a valid SQLAlchemy URL; use e.g. sqlite:////path/sparkflow.db or "
                "postgresql+psycopg://user:password@host:5432/sparkflow"
            ) from None
        self.url = url
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"future": True}
        self.sqlite_file: tuple[Path, tuple[int, int]] | None = None  # the file and its (device, inode)
        if self.dialect == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                path = Path(database).expanduser()
                if create:
                    touch_private(path)
                try:
                    st = path.stat()
                except FileNotFoundError:
                    raise ConfigError(f"the metastore at {path} is not initialised (no such file); run "
                                      "`sparkflow db init`") from None
                self.sqlite_file = (path, (st.st_dev, st.st_ino))
                # Connections open the file read-write, never create it: one made after it was deleted (a new task
                # process, a pool's reconnect) fails instead of starting an empty metastore in its place.
                url = parsed.set(database=f"file:{quote(str(path))}").update_query_dict(
                    {"mode": "rw", "uri": "true"}).render_as_string(hide_password=False)
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise ConfigError(
                f"database driver for {parsed.drivername!r} is not installed ({exc}); "
                "for PostgreSQL install 'sparkflow[postgres]'"
            ) from None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, busy_timeout)
            _close_before_fork(self)
        else:
            _ping_when_idle(self.engine)

    def check_file(self) -> None:
        """A SQLite metastore whose file was deleted or replaced since it was opened: SQLite would go on writing to
        the deleted file (and nothing else would see it), so stop with an error (a long-running scheduler)."""
        if self.sqlite_file is None:
            return
        path, identity = self.sqlite_file
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ConfigError(f"the SQLite metastore {path} was deleted while in use; this process stops. Run "
                              "`sparkflow db init` to create a new one, then start it again") from None
        if (st.st_dev, st.st_ino) != identity:
            raise ConfigError(f"the SQLite metastore {path} was replaced by another file while in use; this process "
                              "stops. Start it again to use the new file")

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success, rolled back on error."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_WRITE: True})
            with conn.begin():
                yield conn

    @contextmanager
    def migration(self) -> Iterator[Connection]:
        """A write transaction that migrations of this database take one at a time, from any machine: SQLite's
        write lock from its first statement (BEGIN IMMEDIATE), a transaction-level advisory lock on PostgreSQL.
        The second of two `db init` then waits, and finds the schema current."""
        with self.write() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


# A pooled server connection idle longer than this is pinged before use (a server restart or an idle-connection
# timeout drops it). Why not SQLAlchemy's pool_pre_ping: it pings at every checkout, one more round trip for each
# of the several transactions of every scheduler iteration and every try.
PING_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["sparkflow_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("sparkflow_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # the pool replaces a dead connection and checks out again
            raise DisconnectionError(str(exc)) from exc


_SQLITE_DATABASES: weakref.WeakSet[Database] = weakref.WeakSet()
_hooked = False


def _close_before_fork(db: Database) -> None:
    """Close this process's idle SQLite connections before every os.fork() (the fork server, its task
    processes). Why: SQLite keeps, per process, a record of the file locks its connections hold; a forked child
    inherits that record but not the locks (POSIX locks are per process), so the child's own connections believe
    the process holds its shared lock already and never take it. Then the last other process to close the
    database (a scheduler stopped while a task runs) sees no other user, checkpoints and deletes the WAL under the
    child, and the child's later writes (the task's outcome) are lost. With no connection open at the fork, the
    child starts with no record and locks for real. The next query here reconnects (a fraction of a ms)."""
    global _hooked
    if not _hooked:
        os.register_at_fork(before=_close_idle_sqlite_connections)
        _hooked = True
    _SQLITE_DATABASES.add(db)


def _close_idle_sqlite_connections() -> None:
    for db in list(_SQLITE_DATABASES):
        with contextlib.suppress(Exception):  # a fork must never fail for this
            db.engine.pool.dispose()


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # sqlite3 must not issue its own BEGIN: we choose the kind below
        cursor = dbapi_conn.cursor()
        # the wait first: switching a new file to WAL needs a lock another process may hold (a second `db init`)
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # On the DBAPI connection itself: SQLAlchemy's execution path costs more than the BEGIN, several per task.
        raw = conn.connection.driver_connection
        if conn.get_execution_options().get(_WRITE):
            _begin_immediate(raw, busy_timeout)
        else:
            raw.execute("BEGIN DEFERRED")  # type: ignore[union-attr]


def _begin_immediate(raw: Any, busy_timeout: float) -> None:
    """Take SQLite's write lock, waiting for it up to ``busy_timeout`` seconds.

    Why not SQLite's own busy handler (the busy_timeout pragma, which still guards every other statement): it
    sleeps 1, 2, 5, 10, 15... ms between attempts, while a sparkflow write transaction holds the lock for well
    under a millisecond. With a scheduler and several task processes writing at once, those sleeps would be most
    of the wait. Here the first retries come after a fraction of a millisecond."""
    raw.execute("PRAGMA busy_timeout=0")
    try:
        deadline = None
        pause = 0.00005
        while True:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorname not in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                    raise
                now = time.monotonic()
                deadline = deadline or now + busy_timeout
                if now >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.001)
    finally:
        raw.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
