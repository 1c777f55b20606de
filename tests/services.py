"""Real services for the tests, started from the machine's binaries on loopback and stopped afterwards.

* PostgreSQL: ``initdb``/``pg_ctl`` from /usr/lib/postgresql/*/bin (or $SPARKFLOW_TEST_PG_BIN). They refuse to run as
  root, so as root they run as the ``postgres`` OS user (created, as a system user without a shell, when absent).
  The data directory lives in a fresh folder under /tmp that the user owns; the server listens on 127.0.0.1 only,
  with a private socket directory and fsync off (test data is throw-away).
* Redis: ``redis-server`` (Debian package; `.ci/run` installs it when missing) on 127.0.0.1, persistence off.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PG_USER = "postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bin_dir() -> Path | None:
    configured = os.environ.get("SPARKFLOW_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in p.split("/")[-2].split(".")
                                                                         if x.isdigit()])
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", PG_USER, "--", *cmd]


def _ensure_server_user() -> None:
    if os.geteuid() != 0:
        return
    if subprocess.run(["id", "-u", PG_USER], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)


@dataclass
class PostgresServer:
    bin_dir: Path
    base: Path
    port: int

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls) -> PostgresServer:
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin; install the "
                "Debian package 'postgresql' (.ci/run does), set SPARKFLOW_TEST_PG_BIN, or run only the SQLite "
                "variants with SPARKFLOW_TEST_BACKENDS=sqlite"
            )
        _ensure_server_user()
        base = Path(tempfile.mkdtemp(prefix="sparkflow-pg-", dir="/tmp"))
        os.chmod(base, 0o700)
        if os.geteuid() == 0:
            shutil.chown(base, PG_USER, PG_USER if _group_exists(PG_USER) else None)
        server = cls(bin_dir, base, free_port())
        run = dict(cwd="/", capture_output=True, text=True, stdin=subprocess.DEVNULL)
        initdb = subprocess.run(_as_server_user([
            str(bin_dir / "initdb"), "-D", str(server.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
            "--locale=C.UTF-8", "-N"]), **run)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
        options = (f"-k {base} -p {server.port} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        started = subprocess.run(_as_server_user([
            str(bin_dir / "pg_ctl"), "-D", str(server.data), "-l", str(base / "pg.log"), "-w", "-t", "60",
            "-o", options, "start"]), **run)
        if started.returncode != 0:
            log = (base / "pg.log").read_text() if (base / "pg.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stdout}{started.stderr}{log[-2000:]}")
        return server

    def stop(self) -> None:
        subprocess.run(_as_server_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                        "-w", "-t", "30", "stop"]), cwd="/", capture_output=True,
                       stdin=subprocess.DEVNULL)
        shutil.rmtree(self.base, ignore_errors=True)

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) as the superuser."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, template: str | None = None) -> str:
        name = f"sf_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class PostgresTestDatabase:
    """One database for a test session, reset before each test instead of re-created (CREATE DATABASE costs a
    checkpoint, ~0.7 s; a reset ~0.05 s). It is migrated once by the real alembic migrations; the rows those
    migrations seed (default_pool, ...) are remembered and put back by every reset.

    Before a reset every other connection to it is terminated (leftover engines, task processes of the previous
    test), as DROP DATABASE ... WITH (FORCE) would."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.name = server.create_database()
        self.url = server.url(self.name)
        self._seed: list[tuple[str, list[dict[str, object]]]] | None = None

    def _engine(self):  # type: ignore[no-untyped-def]
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        return create_engine(self.url, poolclass=NullPool)

    def _terminate_others(self, conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    def empty(self) -> None:
        """No tables at all: what a new database looks like before `sparkflow db init`."""
        engine = self._engine()
        try:
            with engine.begin() as conn:
                self._terminate_others(conn)
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        finally:
            engine.dispose()

    def migrated(self) -> None:
        """Schema at head and only the rows the migrations create."""
        from sqlalchemy import MetaData, insert, select

        from sparkflow.metastore import migrate
        from sparkflow.metastore.engine import Database

        engine = self._engine()
        try:
            with engine.begin() as conn:
                self._terminate_others(conn)
                head = migrate.head_revision(Database(self.url))
                current = conn.exec_driver_sql(
                    "SELECT version_num FROM alembic_version" if _has_table(conn, "alembic_version") else "SELECT NULL"
                ).scalar()
            if current != head or self._seed is None:
                self.empty()
                db = Database(self.url)
                migrate.upgrade(db)  # the real migrations, as `sparkflow db init` runs them
                db.dispose()
                meta = MetaData()
                meta.reflect(engine)
                with engine.begin() as conn:
                    self._seed = [(t.name, [dict(r._mapping) for r in conn.execute(select(t))])
                                  for t in meta.sorted_tables if t.name != "alembic_version"]
                return
            meta = MetaData()
            meta.reflect(engine, only=[name for name, _ in self._seed])
            with engine.begin() as conn:
                conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # no FK checks while emptying
                for name, _ in self._seed:
                    conn.exec_driver_sql(f'DELETE FROM "{name}"')
                for (sequence,) in conn.exec_driver_sql(
                        "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'").all():
                    conn.exec_driver_sql(f'ALTER SEQUENCE "{sequence}" RESTART')
                for name, rows in self._seed:
                    if rows:
                        conn.execute(insert(meta.tables[name]), rows)
        finally:
            engine.dispose()

    def drop(self) -> None:
        self.server.drop_database(self.name)


def _has_table(conn, name: str) -> bool:  # type: ignore[no-untyped-def]
    return bool(conn.exec_driver_sql(f"SELECT to_regclass('public.{name}') IS NOT NULL").scalar())


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


@dataclass
class RedisServer:
    port: int
    base: Path
    proc: subprocess.Popen[bytes]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @classmethod
    def start(cls) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed; `apt-get install redis-server` (.ci/run does)")
        base = Path(tempfile.mkdtemp(prefix="sparkflow-redis-", dir="/tmp"))
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(base), "--logfile", str(base / "redis.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        )
        server = cls(port, base, proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if server.ping():
                return server
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        server.stop()
        raise RuntimeError(f"redis-server did not start: {(base / 'redis.log').read_text()[-2000:]}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.base, ignore_errors=True)
