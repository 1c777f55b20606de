"""Shared set-up of the web tests: a metastore with a small DAG, one finished run, users of every role and their
API tokens, and the web app (FastAPI) built on them."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.dag_processing import parse_dags
from sparkflow.settings import Settings
from sparkflow.web.auth import hash_password, new_api_token
from tests.helpers import run_dag

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
    parse_dags(settings, metastore)
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
