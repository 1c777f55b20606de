"""Issue 21 items 1-3: registered secrets are masked in every form they take (plain, URL-encoded, JSON-escaped,
base64), secret extras at any depth under Airflow's sensitive names (extendable by sensitive_var_conn_names), and
values of sensitive Variables, in task logs, rendered fields, the CLI and the API."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from sparkflow.cli import cli
from sparkflow.connections import Connection
from sparkflow.logs import SecretsMasker, is_sensitive_name, redact, secrets_in, set_sensitive_names
from sparkflow.metastore import queries
from sparkflow.settings import load_settings
from sparkflow.web.app import create_app
from tests.helpers import run_dag
from tests.web_support import make_web_env


def _secret() -> str:
    # characters that every encoding changes: '!' and '/' (quote), ' ' and '+' (quote_plus), '"' and '\' (JSON)
    return f'S3cret! /+"\\{secrets.token_hex(4)}'


@pytest.mark.parametrize("encode", [
    lambda s: s, lambda s: quote(s, safe=""), quote, quote_plus, lambda s: json.dumps(s)[1:-1],
    lambda s: base64.b64encode(s.encode()).decode(), lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
], ids=["plain", "quote", "quote-slash-safe", "quote_plus", "json", "base64", "base64-urlsafe"])
def test_every_form_of_a_registered_secret_is_masked(encode) -> None:  # type: ignore[no-untyped-def]
    masker, secret = SecretsMasker(), _secret()
    masker.add(secret)
    line = f"postgres://user:{encode(secret)}@db:5432/x"
    assert masker.mask(line) == "postgres://user:***@db:5432/x"


@pytest.mark.parametrize("name", ["access_token", "API-Key", "apikey", "Authorization", "passphrase", "db_passwd",
                                  "Password", "private-key", "client_secret", "token", "keyfile_dict",
                                  "service_account", "aws.access.key", "credentials"])
def test_airflow_sensitive_names_match_case_and_separator_insensitively(name: str) -> None:
    assert is_sensitive_name(name)


def test_sensitive_names_are_extended_by_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKFLOW_SENSITIVE_VAR_CONN_NAMES", "sas_blob, signature")
    assert not is_sensitive_name("my-SAS-blob")
    try:
        load_settings()
        assert is_sensitive_name("my-SAS-blob") and is_sensitive_name("url_signature")
    finally:
        set_sensitive_names([])  # defaults only, for the tests after this one


def test_nested_secret_extras_are_masked_and_registered() -> None:
    extra = {"auth": {"Private-Key": "pk-123", "user": "bob"}, "hosts": [{"api_key": "ak-456"}], "queue": "q"}
    assert redact(extra) == {"auth": {"Private-Key": "***", "user": "bob"}, "hosts": [{"api_key": "***"}],
                             "queue": "q"}
    assert sorted(secrets_in(extra)) == ["ak-456", "pk-123"]
    conn = Connection("c", "http", password="pw-789", extra=json.dumps(extra))
    assert sorted(conn.secrets()) == ["ak-456", "pk-123", "pw-789"]
    assert "pk-123" not in json.dumps(conn.masked()) and "ak-456" not in json.dumps(conn.masked())


DAG = """
import base64, json
from datetime import datetime
from urllib.parse import quote_plus
from sparkflow import DAG, BashOperator, PythonOperator

def leak(pw, nested, var):
    print("json", json.dumps({"pw": pw}))
    print("b64", base64.b64encode(pw.encode()).decode())
    print("plus", quote_plus(pw))
    print("nested", nested, "var", var)

with DAG("leaky", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    uri = BashOperator(task_id="uri", bash_command="echo 'uri {{ conn.db.get_uri() }}'")
    py = PythonOperator(task_id="py", python_callable=leak, op_kwargs={
        "pw": "{{ conn.db.password }}", "nested": "{{ conn.db.extra_dejson['auth']['Private-Key'] }}",
        "var": "{{ var.value.warehouse_password }}"})
    uri >> py
"""


def test_secret_forms_never_reach_task_logs_rendered_fields_cli_or_api(settings, metastore) -> None:  # type: ignore[no-untyped-def]
    password, nested, var_secret = _secret(), f"pk-{secrets.token_hex(6)}", f"vs-{secrets.token_hex(6)}"
    web = make_web_env(settings, metastore)
    extra = json.dumps({"auth": {"Private-Key": nested, "user": "bob"}})
    conn = Connection("db", "postgres", host="db.example", login="user", password=password, extra=extra)
    metastore.connections.add_connections([conn], overwrite=False)
    metastore.variables.set_variable("warehouse_password", var_secret)
    path = settings.resolved_dags_folder / "leaky.py"
    path.write_text(DAG)
    run = run_dag(settings, metastore, path, "leaky")
    forms = {password, quote(password, safe=""), quote_plus(password), json.dumps(password)[1:-1],
             base64.b64encode(password.encode()).decode(), nested, var_secret}
    logs = ""
    for ti in queries.task_instances(metastore.db, "leaky", run.run_id):
        assert ti.state.value == "success", ti
        logs += Path(ti.log_path).read_text()
    assert "uri postgres://user:***@db.example" in logs and "b64 ***" in logs and "plus ***" in logs
    assert not [f for f in forms if f in logs], logs

    with TestClient(create_app(settings, metastore, secret_key="k" * 32)) as client:
        ids = {t.task_id: t.id for t in queries.task_instances(metastore.db, "leaky", run.run_id)}
        pages = [client.get(f"/ti/{ids[t]}", headers=web.auth("admin")).text for t in ("uri", "py")]
        api = client.get("/api/v1/connections/db", headers=web.auth("admin")).text
        assert all("***" in p for p in pages)
        assert not [f for f in forms for text in (*pages, api) if f in text]
        assert "Private-Key" in api

    out = CliRunner().invoke(cli, ["connections", "get", "db", "-o", "json"]).output
    assert "Private-Key" in out and nested not in out and password not in out
