"""Shared fixtures: an isolated sparkflow home per test, an initialised metastore, DAG files written on the fly.

Metastore backends: every test that uses ``sf_home`` (and so ``settings``, ``metastore`` and the CLI fixtures) runs
twice, against SQLite and against PostgreSQL (ids ``[sqlite]``/``[postgres]``, marker ``postgres``). One PostgreSQL
server is started per session from the machine's binaries (tests/services.py) with one database, dropped at the
end and reset before each test to what a fresh one holds: migrated (by the real alembic migrations) when the test uses
``metastore``, empty otherwise (so ``db init`` runs the migrations itself). ``SPARKFLOW_TEST_BACKENDS=sqlite``
runs only the SQLite variants; tests marked ``spark`` stay on SQLite (their subject is Spark;
tests/integration/test_celery_spark.py covers Spark with PostgreSQL); a test picks its own backends by
parametrizing ``db_backend`` itself.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sparkflow.metastore.bootstrap import Metastore, init_metastore
from sparkflow.settings import Settings, load_settings
from tests.services import PostgresServer, PostgresTestDatabase, RedisServer

BACKENDS = [b.strip() for b in os.environ.get("SPARKFLOW_TEST_BACKENDS", "sqlite,postgres").split(",") if b.strip()]


def pytest_configure(config: pytest.Config) -> None:
    # Engines the code under test leaves to the garbage collector (the CLI keeps one per process) hold psycopg
    # connections, which warn when collected, unlike sqlite3's; the test's database is dropped by then anyway.
    config.addinivalue_line("filterwarnings", "ignore:.*was deleted while still open:ResourceWarning")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run every metastore-facing test (it uses sf_home) on each backend, unless it chose its own."""
    chosen = any("db_backend" in (m.args[0] if isinstance(m.args[0], (list, tuple)) else m.args[0].split(","))
                 for m in metafunc.definition.iter_markers("parametrize") if m.args)
    if "sf_home" not in metafunc.fixturenames or chosen:
        return
    backends = ["sqlite"] if metafunc.definition.get_closest_marker("spark") else BACKENDS
    metafunc.parametrize("db_backend", [
        pytest.param(b, id=b, marks=[pytest.mark.postgres] if b == "postgres" else []) for b in backends
    ], indirect=True)


@pytest.fixture
def db_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server on loopback for the whole session (as the 'postgres' OS user when run as root)."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis (apt's redis-server) on loopback for the session, persistence off (Celery broker and results)."""
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_test_database(pg_server: PostgresServer) -> Iterator[PostgresTestDatabase]:
    """The session's PostgreSQL database (dropped at the end), reset before every test that uses it."""
    database = PostgresTestDatabase(pg_server)
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture
def pg_database(request: pytest.FixtureRequest, pg_test_database: PostgresTestDatabase) -> str:
    """A fresh database for one test: migrated when the test uses ``metastore``, else empty (no tables), as a new
    SQLite file is, so `sparkflow db init` runs the migrations."""
    if "metastore" in request.fixturenames:
        pg_test_database.migrated()
    else:
        pg_test_database.empty()
    return pg_test_database.url


@pytest.fixture
def sf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_backend: str, request: pytest.FixtureRequest) -> Path:
    """SPARKFLOW_HOME and SPARKFLOW_DAGS_FOLDER under tmp_path; no SPARKFLOW_* leaks in from the outside.
    On the postgres backend SPARKFLOW_DB_URL names the test's own database (child processes inherit it)."""
    for name in list(os.environ):
        if name.startswith(("SPARKFLOW_", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    dags = tmp_path / "dags"
    dags.mkdir()
    monkeypatch.setenv("SPARKFLOW_HOME", str(home))
    monkeypatch.setenv("SPARKFLOW_DAGS_FOLDER", str(dags))
    # Tests start from an empty connection table; tests of Airflow's default connections turn this back on.
    monkeypatch.setenv("SPARKFLOW_LOAD_DEFAULT_CONNECTIONS", "false")
    if db_backend == "postgres":
        monkeypatch.setenv("SPARKFLOW_DB_URL", request.getfixturevalue("pg_database"))
    return home


@pytest.fixture
def settings(sf_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def metastore(settings: Settings) -> Metastore:
    ms = init_metastore(settings)
    yield ms
    ms.db.dispose()


@pytest.fixture
def write_dag(settings: Settings) -> Callable[[str, str], Path]:
    """write_dag("name", code) writes dags/name.py (dedented) and returns its path."""

    def write(name: str, code: str) -> Path:
        path = settings.resolved_dags_folder / f"{name}.py"
        path.write_text(textwrap.dedent(code))
        return path

    return write
