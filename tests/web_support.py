"""Shared set-up of the web tests: a metastore with a small DAG, one finished run, users of every role and their
API tokens, and the web app (FastAPI) built on them."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sparkflow.cli import main
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.dag_processing import refresh_dag_folder
from sparkflow.settings import Settings
from sparkflow.web.auth import hash_password, new_api_token
from tests.helpers import run_dag
from tests.services import free_port

DAG_CODE = """
from datetime import datetime
from sparkflow import DAG, BashOperator

with DAG("web_demo", schedule="@daily", start_date=datetime(2024, 1, 1), catchup=False, tags=["demo"],
         description="two bash tasks") as dag:
    extract = BashOperator(task_id="extract", bash_command="echo extracting {{ ds }} n={{ params.get('n', 0) }}")
    load = BashOperator(task_id="load", bash_command="echo loaded; echo password=hunter2secret")
    extract >> load
"""
PASSWORD = "correct horse battery"
ROLES = ("admin", "op", "viewer")


@dataclass
class WebEnv:
    settings: Settings
    metastore: Metastore
    dag_path: Path
    run: DagRunRecord
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


def make_web_env(settings: Settings, metastore: Metastore, fast_hash: bool = True) -> WebEnv:
    dags = settings.resolved_dags_folder
    dags.mkdir(parents=True, exist_ok=True)
    path = dags / "web_demo.py"
    path.write_text(textwrap.dedent(DAG_CODE))
    refresh_dag_folder(settings, metastore)
    run = run_dag(settings, metastore, path, "web_demo", conf={"n": 3})
    tokens = {}
    for role in ROLES:
        # a cheap scrypt cost keeps the tests fast; production hashes use auth.SCRYPT_N
        metastore.users.create_user(role, hash_password(PASSWORD, n=2**10) if fast_hash else hash_password(PASSWORD),
                                    role)
        token, digest = new_api_token()
        metastore.users.add_api_token(role, digest)
        tokens[role] = token
    return WebEnv(settings, metastore, path, run, tokens)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@dataclass
class RunningServer:
    url: str
    home: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `sparkflow ARGS` against the server's home (in this process: a fresh interpreter per command costs
        seconds on a loaded machine)."""
        out, err = io.StringIO(), io.StringIO()
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        done = subprocess.CompletedProcess(["sparkflow", *args], code, out.getvalue(), err.getvalue())
        assert not check or code == 0, done.stderr
        return done

    def sql(self, statement: str, *params: object) -> None:
        """Change the server's SQLite metastore directly (age a session, expire a token) instead of waiting."""
        db = sqlite3.connect(self.home / "sparkflow.db", timeout=30)
        try:
            db.execute(statement, params)
            db.commit()
        finally:
            db.close()


@contextmanager
def webserver(base: Path, **settings: str) -> Iterator[RunningServer]:
    """A real `sparkflow webserver` (uvicorn) on a free loopback port, with its own SQLite home and the users
    admin/op/viewer (password PASSWORD); SPARKFLOW_<NAME> settings from ``settings``."""
    home, dags = base / "home", base / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "web_demo.py").write_text(textwrap.dedent(DAG_CODE))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKFLOW_", "AIRFLOW_CONN_"))}
    env.update(SPARKFLOW_HOME=str(home), SPARKFLOW_DAGS_FOLDER=str(dags), SPARKFLOW_LOAD_DEFAULT_CONNECTIONS="false",
               **{f"SPARKFLOW_{k.upper()}": v for k, v in settings.items()})
    port = free_port()
    log = base / "webserver.log"
    server = RunningServer(f"http://127.0.0.1:{port}", home, env, None, log)  # type: ignore[arg-type]
    server.cli("db", "init")
    for role in ROLES:
        server.cli("users", "create", "--username", role, "--password", PASSWORD, "--role", role)
    with log.open("wb") as out:
        server.proc = subprocess.Popen([sys.executable, "-m", "sparkflow", "webserver", "--port", str(port)], env=env,
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the webserver did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            try:
                server.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()
