"""Mapped task instances at the edges: CLI `--map-index` and map_index in JSON, the web grid's one row per mapped
task (count and state summary) with its list of instances, and the REST API's listMapped and map_index fields."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from sparkflow.cli import main
from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.scheduler.dag_processing import refresh_dag_folder
from sparkflow.web.app import create_app
from tests.helpers import run_dag
from tests.web_support import PASSWORD, WebEnv, csrf_from, make_web_env

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)

MAPPED_DAG = """
from datetime import datetime
from sparkflow import DAG, BashOperator, task

with DAG("fan", start_date=datetime(2024, 1, 1)) as dag:
    each = BashOperator.partial(task_id="each").expand(bash_command=["echo one", "echo two", "exit 1"])

    @task(trigger_rule="all_done")
    def summary():
        return "done"

    each >> summary()
"""


@pytest.fixture
def env(settings, metastore) -> WebEnv:  # type: ignore[no-untyped-def]
    web = make_web_env(settings, metastore)
    path = settings.resolved_dags_folder / "fan.py"
    path.write_text(textwrap.dedent(MAPPED_DAG))
    refresh_dag_folder(settings, metastore)
    web.run = run_dag(settings, metastore, path, "fan")
    return web


@pytest.fixture
def client(env: WebEnv) -> Iterator[TestClient]:
    with TestClient(create_app(env.settings, env.metastore, secret_key="test-key")) as c:
        yield c


def test_cli_states_logs_mark_and_clear_per_map_index(env: WebEnv, capsys) -> None:
    run_id = env.run.run_id
    assert env.run.state.value == "success"  # instance 2 failed; the all_done leaf decides the run (Airflow)
    assert main(["tasks", "states", "fan", run_id, "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    each = sorted((r["map_index"], r["state"]) for r in rows if r["task_id"] == "each")
    assert each == [(0, "success"), (1, "success"), (2, "failed")]
    assert [r["map_index"] for r in rows if r["task_id"] == "summary"] == [-1]

    assert main(["logs", "fan", run_id, "each", "--map-index", "1"]) == 0
    assert "two" in capsys.readouterr().out
    assert main(["logs", "fan", run_id, "each"]) != 0
    assert "mapped into 3 instance(s)" in capsys.readouterr().err

    assert main(["tasks", "mark", "fan", run_id, "each", "--map-index", "2", "--state", "success"]) == 0
    assert "each[2]" in capsys.readouterr().out
    assert queries.get_task_instance(env.metastore.db, TIKey("fan", run_id, "each", 2)).state.value == "success"

    assert main(["tasks", "clear", "fan", "-t", "^each$", "--map-index", "0", "--yes"]) == 0
    assert "Cleared 1 task instance(s)" in capsys.readouterr().out
    states = {ti.map_index: ti.state.value for ti in queries.task_instances(env.metastore.db, "fan", run_id)
              if ti.task_id == "each"}
    assert states == {0: "none", 1: "success", 2: "success"}


def test_tasks_test_runs_one_instance(env: WebEnv, capsys) -> None:
    assert main(["tasks", "test", "fan", "each", "--map-index", "1"]) == 0
    assert "Task each success" in capsys.readouterr().out
    assert main(["tasks", "test", "fan", "each"]) != 0
    assert "--map-index" in capsys.readouterr().err


def test_grid_shows_one_row_with_count_and_the_instances_page(client: TestClient, env: WebEnv) -> None:
    token = csrf_from(client.get("/login").text)
    client.post("/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": token, "next": "/"})
    page = client.get("/dags/fan").text
    assert 'data-count="3"' in page and "1 failed, 2 success" in page
    ti = queries.get_task_instance(env.metastore.db, TIKey("fan", env.run.run_id, "each", 0))
    listing = client.get(f"/ti/{ti.id}/mapped").text
    assert listing.count("data-map-index=") == 3 and "1 failed, 2 success" in listing
    instance_page = client.get(f"/ti/{ti.id}").text
    assert 'id="map-index">0<' in instance_page


def test_api_list_mapped_and_map_index_fields(client: TestClient, env: WebEnv) -> None:
    base = f"/api/v1/dags/fan/dagRuns/{quote(env.run.run_id)}/taskInstances"
    auth = env.auth("viewer")
    body = client.get(f"{base}/each/listMapped", headers=auth).json()
    assert body["total_entries"] == 3
    assert [(t["map_index"], t["state"]) for t in body["task_instances"]] == [
        (0, "success"), (1, "success"), (2, "failed")]
    assert client.get(f"{base}/summary", headers=auth).json()["map_index"] == -1
    assert client.get(f"{base}/each?map_index=2", headers=auth).json()["state"] == "failed"
    assert client.get(f"{base}/each", headers=auth).status_code == 404
    log = client.get(f"{base}/each/logs/1?map_index=1", headers=auth).json()
    assert "two" in log["content"]
    assert client.get(f"{base}/nope/listMapped", headers=auth).status_code == 404


def test_clearing_one_instance_from_its_page_clears_only_it(client: TestClient, env: WebEnv) -> None:
    token = csrf_from(client.get("/login").text)
    client.post("/login", data={"username": "op", "password": PASSWORD, "csrf_token": token, "next": "/"})
    ti = queries.get_task_instance(env.metastore.db, TIKey("fan", env.run.run_id, "each", 2))
    page = client.get(f"/ti/{ti.id}").text
    r = client.post(f"/ti/{ti.id}/clear", data={"csrf_token": csrf_from(page)}, follow_redirects=False)
    assert r.status_code == 303
    states = {t.map_index: t.state.value for t in queries.task_instances(env.metastore.db, "fan", env.run.run_id)
              if t.task_id == "each"}
    assert states == {0: "success", 1: "success", 2: "none"}


def test_api_clear_takes_task_id_and_map_index_pairs(client: TestClient, env: WebEnv) -> None:
    url = "/api/v1/dags/fan/clearTaskInstances"
    auth, run_id = env.auth("op"), env.run.run_id

    def each_states() -> dict[int, str]:
        return {t.map_index: t.state.value for t in queries.task_instances(env.metastore.db, "fan", run_id)
                if t.task_id == "each"}

    body = {"task_ids": [["each", 0], ["each", 2]], "dag_run_id": run_id}  # Airflow's [task_id, map_index] form
    dry = client.post(url, json=body, headers=auth).json()
    assert sorted((t["task_id"], t["map_index"]) for t in dry["task_instances"]) == [("each", 0), ("each", 2)]
    assert each_states() == {0: "success", 1: "success", 2: "failed"}
    done = client.post(url, json={**body, "dry_run": False}, headers=auth).json()
    assert sorted(t["map_index"] for t in done["task_instances"]) == [0, 2]
    assert each_states() == {0: "none", 1: "success", 2: "none"}
    r = client.post(url, json={"task_ids": [["each", -1]], "dag_run_id": run_id}, headers=auth)
    assert r.status_code == 400 and "map_index -1" in r.json()["detail"]
    both = client.post(url, json={"task_ids": ["summary", ["each", 1]], "dag_run_id": run_id}, headers=auth).json()
    assert sorted((t["task_id"], t["map_index"]) for t in both["task_instances"]) == [("each", 1), ("summary", -1)]
