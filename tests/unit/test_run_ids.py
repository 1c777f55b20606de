"""Issue 21 item 13: run ids are validated as Airflow does (letters, digits, _ . ~ : + -; at most 250) on every
entry point (CLI, REST API, web form), and every valid id, 250 characters included, runs and has a log the API
serves."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sparkflow.cli import main
from sparkflow.logs import task_log_path
from sparkflow.web.app import create_app
from tests.web_support import csrf_from, make_web_env

BAD = ["a/b", "x" * 251, "has space", "semi;colon", "ünïcode", "new\nline", ""]


@pytest.mark.parametrize("run_id", BAD[:-1])
def test_bad_run_ids_are_refused_by_the_api_and_the_web_form(settings, metastore, run_id: str) -> None:  # type: ignore[no-untyped-def]
    env = make_web_env(settings, metastore)
    with TestClient(create_app(settings, metastore, secret_key="k" * 32)) as client:
        r = client.post("/api/v1/dags/web_demo/dagRuns", json={"dag_run_id": run_id}, headers=env.auth("op"))
        assert r.status_code == 400 and ("allowed_run_id_pattern" in r.text or "at most 250" in r.text), r.text
        token = csrf_from(client.get("/login").text)
        client.post("/login", data={"username": "op", "password": "correct horse battery", "csrf_token": token})
        token = csrf_from(client.get("/dags/web_demo").text)
        page = client.post("/dags/web_demo/trigger", data={"run_id": run_id, "csrf_token": token})
        assert "Not triggered" in page.text and "allowed_run_id_pattern" in page.text


def test_bad_run_ids_are_refused_by_the_cli(sf_home: Path, write_dag: Callable[[str, str], Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    write_dag("small", "from datetime import datetime\nfrom sparkflow import DAG, EmptyOperator\n"
                       "with DAG('small', start_date=datetime(2024, 1, 1), schedule=None):\n"
                       "    EmptyOperator(task_id='t')\n")
    capsys.readouterr()
    for run_id in BAD[:3]:
        assert main(["trigger", "small", "--run-id", run_id]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "allowed_run_id_pattern" in err, err


def test_a_250_character_run_id_runs_and_its_log_is_served(sf_home: Path, write_dag: Callable[[str, str], Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    dag_id = "d" * 250
    write_dag("long", "from datetime import datetime\nfrom sparkflow import DAG, BashOperator\n"
                      f"with DAG('{dag_id}', start_date=datetime(2024, 1, 1), schedule=None):\n"
                      "    BashOperator(task_id='t' * 250, bash_command='echo long-ids-work')\n")
    run_id = "r:+~." + "9" * 245
    assert main(["trigger", dag_id, "--run-id", run_id, "--wait"]) == 0, capsys.readouterr()
    path = task_log_path(sf_home / "logs", dag_id, run_id, "t" * 250, 1)
    assert all(len(part.encode()) <= 255 for part in path.parts) and "long-ids-work" in path.read_text()
    from sparkflow.metastore.bootstrap import open_metastore
    from sparkflow.settings import load_settings

    settings = load_settings()
    metastore = open_metastore(settings)
    try:
        metastore.users.create_user("viewer", "x", "viewer")
        from sparkflow.web.auth import new_api_token

        token, digest = new_api_token()
        metastore.users.add_api_token("viewer", digest)
        with TestClient(create_app(settings, metastore, secret_key="k" * 32)) as client:
            r = client.get(f"/api/v1/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{'t' * 250}/logs/1",
                           headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200 and "long-ids-work" in r.json()["content"], r.text
    finally:
        metastore.db.dispose()
