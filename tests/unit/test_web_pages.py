"""Server-rendered pages: login and sessions, CSRF on forms, roles, the DAG list, grid/graph/Gantt, trigger with
conf, the task instance page (rendered fields masked, Spark progress and metrics, trends, log by id), actions and
connections with write-only secrets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from sparkflow.metastore import queries
from sparkflow.metastore.records import TIKey
from sparkflow.scheduler.dag_processing import refresh_dag_folder
from sparkflow.state import TaskState
from sparkflow.web import service
from sparkflow.web.app import create_app
from sparkflow.web.auth import hash_password
from sparkflow.web.service import WebDags
from tests.helpers import run_dag
from tests.web_support import PASSWORD, WebEnv, csrf_from, make_web_env

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


@pytest.fixture
def env(settings, metastore) -> WebEnv:  # type: ignore[no-untyped-def]
    return make_web_env(settings, metastore)


def _client(env: WebEnv, **settings_overrides: object) -> TestClient:
    settings = replace(env.settings, **settings_overrides) if settings_overrides else env.settings
    return TestClient(create_app(settings, env.metastore, secret_key="test-key"))


@pytest.fixture
def anon(env: WebEnv) -> Iterator[TestClient]:
    with _client(env) as c:
        yield c


def login(client: TestClient, username: str, password: str = PASSWORD) -> TestClient:
    token = csrf_from(client.get("/login").text)
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


@pytest.fixture
def op(env: WebEnv) -> Iterator[TestClient]:
    with _client(env) as c:
        yield login(c, "op")


@pytest.fixture
def viewer(env: WebEnv) -> Iterator[TestClient]:
    with _client(env) as c:
        yield login(c, "viewer")


def ti_id(env: WebEnv, task_id: str) -> int:
    return queries.get_task_instance(env.metastore.db, TIKey("web_demo", env.run.run_id, task_id)).id


# -- auth -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/dags/web_demo", "/ti/1", "/connections", "/dags/web_demo/grid"])
def test_pages_redirect_to_login(anon: TestClient, path: str) -> None:
    r = anon.get(path, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_login_sets_safe_cookies_and_rejects_bad_passwords(anon: TestClient) -> None:
    token = csrf_from(anon.get("/login").text)
    bad = anon.post("/login", data={"username": "op", "password": "wrong", "csrf_token": token})
    assert bad.status_code == 401 and "Wrong username or password" in bad.text
    nouser = anon.post("/login", data={"username": "ghost", "password": "wrong", "csrf_token": token})
    assert nouser.status_code == 401
    no_csrf = anon.post("/login", data={"username": "op", "password": PASSWORD})
    assert no_csrf.status_code == 400
    r = anon.post("/login", data={"username": "op", "password": PASSWORD, "csrf_token": token,
                                  "next": "https://evil.example/"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("sparkflow_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session
    assert anon.get("/").status_code == 200


def test_forms_need_csrf(op: TestClient, env: WebEnv) -> None:
    r = op.post("/dags/web_demo/trigger", data={"conf": "{}"})
    assert r.status_code == 403 and "CSRF" in r.text
    r = op.post("/dags/web_demo/trigger", data={"conf": "{}", "csrf_token": "forged"})
    assert r.status_code == 403
    assert len(queries.list_runs(env.metastore.db, "web_demo")) == 1


def test_logout(op: TestClient) -> None:
    token = csrf_from(op.get("/").text)
    op.post("/logout", data={"csrf_token": token})
    assert op.get("/", follow_redirects=False).status_code == 303


# -- DAG list and DAG page ------------------------------------------------------------------------------------
def test_dag_list(viewer: TestClient, env: WebEnv) -> None:
    broken = env.settings.resolved_dags_folder / "broken.py"
    broken.write_text("from sparkflow import DAG\nraise ValueError('boom')\n")
    refresh_dag_folder(env.settings, env.metastore)
    html = viewer.get("/").text
    assert 'data-dag-id="web_demo"' in html
    assert "every day at 00:00 UTC" in html
    assert 'class="dot" style="background:#008000"' in html  # the successful run as a green dot
    assert "1 DAG file(s) failed to import" in html and "boom" in html
    assert re.search(r'class="toggle on" disabled', html)  # viewers see the toggle but cannot use it


def test_an_empty_dag_list_refreshes_itself_until_the_first_parse(settings, metastore) -> None:  # type: ignore[no-untyped-def]
    metastore.users.create_user("early", hash_password(PASSWORD, n=2**10), "viewer")
    with TestClient(create_app(settings, metastore, secret_key="test-key")) as client:
        html = login(client, "early").get("/").text
        assert "No DAGs yet" in html and '<meta http-equiv="refresh" content="3">' in html
        env = make_web_env(settings, metastore)  # parses the folder: the list stops refreshing
        html = client.get("/").text
        assert 'data-dag-id="web_demo"' in html and 'http-equiv="refresh"' not in html
        assert env.run.run_id


def test_dag_page_grid_graph_gantt_history(viewer: TestClient, env: WebEnv) -> None:
    html = viewer.get("/dags/web_demo").text
    assert f'href="/ti/{ti_id(env, "extract")}"' in html  # grid cell -> task instance
    assert html.count('class="cell"') == 2 and 'data-state="success"' in html
    assert '<svg class="graph"' in html and 'class="edge"' in html and 'data-task-id="load"' in html
    assert '<svg class="gantt"' in html
    assert 'id="run-history"' in html and env.run.run_id in html
    assert 'id="trigger-form"' not in html  # viewers cannot trigger
    grid = viewer.get("/dags/web_demo/grid").text
    assert grid.startswith('<div id="grid"') and 'data-active="false"' in grid
    assert viewer.get("/dags/nope").status_code == 404
    assert viewer.get("/dags/web_demo?run_id=nope").status_code == 404


def test_viewer_cannot_act(viewer: TestClient, env: WebEnv) -> None:
    token = csrf_from(viewer.get("/").text)
    assert viewer.post("/dags/web_demo/trigger", data={"csrf_token": token}).status_code == 403
    assert viewer.post("/dags/web_demo/paused", data={"csrf_token": token, "paused": "true"}).status_code == 403
    assert viewer.post(f"/ti/{ti_id(env, 'load')}/clear", data={"csrf_token": token}).status_code == 403
    assert viewer.post(f"/ti/{ti_id(env, 'load')}/mark", data={"csrf_token": token, "state": "failed"}
                       ).status_code == 403
    assert viewer.get("/connections/new").status_code == 403
    assert len(queries.list_runs(env.metastore.db, "web_demo")) == 1


def test_trigger_with_conf_and_bad_conf(op: TestClient, env: WebEnv) -> None:
    token = csrf_from(op.get("/dags/web_demo").text)
    r = op.post("/dags/web_demo/trigger", data={"csrf_token": token, "conf": '{"n": 5}', "run_id": "from_form"})
    assert r.status_code == 200 and "Triggered run from_form" in r.text
    assert queries.get_run(env.metastore.db, "web_demo", "from_form").conf == {"n": 5}
    for bad, words in (('{"n": ', "not valid JSON"), ("[1]", "must be a JSON object")):
        r = op.post("/dags/web_demo/trigger", data={"csrf_token": token, "conf": bad})
        assert r.status_code == 200 and "Not triggered" in r.text and words in r.text
    for bad, words in (('{"n": NaN}', "not JSON"), (r'{"n": "\u0000"}', "NUL")):
        r = op.post("/dags/web_demo/trigger", data={"csrf_token": token, "conf": bad})
        assert r.status_code == 200 and "Not triggered" in r.text and words in r.text
    r = op.post("/dags/web_demo/trigger", data={"csrf_token": token, "logical_date": "0001-01-01T00:00:00+00:00"})
    assert r.status_code == 200 and "Not triggered" in r.text and "out of range" in r.text
    assert len(queries.list_runs(env.metastore.db, "web_demo")) == 2
    assert op.post("/dags/nope/trigger", data={"csrf_token": token}).status_code == 404


def test_pause_toggle(op: TestClient, env: WebEnv) -> None:
    token = csrf_from(op.get("/").text)
    r = op.post("/dags/web_demo/paused", data={"csrf_token": token, "paused": "true", "next": "/"})
    assert r.status_code == 200 and queries.get_dag(env.metastore.db, "web_demo").is_paused
    assert 'class="toggle off"' in r.text


# -- task instance page ---------------------------------------------------------------------------------------
def test_task_instance_page(env: WebEnv) -> None:
    key = TIKey("web_demo", env.run.run_id, "extract")
    env.metastore.store.record_spark_progress(key, 1, {
        "jobs_total": 2, "jobs_done": 1, "tasks_total": 8, "tasks_done": 2, "tasks_failed": 0,
        "active_stages": [{"stage_id": 3, "name": "count at x.py:5", "tasks_done": 2, "tasks_total": 4,
                           "tasks_active": 2, "tasks_failed": 0}]})
    env.metastore.store.record_external_ids(key, 1, spark_app_id="app-20240301-0001")
    env.metastore.store.record_spark_metrics(key, 1, {"duration_ms": 4200, "jobs": 2, "stages": 3, "tasks": 8,
                                                      "input_bytes": 3 * 1024 * 1024, "shuffle_read_bytes": 2048})
    with _client(env, spark_history_url="http://127.0.0.1:18080") as client:
        login(client, "viewer")
        html = client.get(f"/ti/{ti_id(env, 'extract')}").text
        assert 'id="spark-fill" style="width:25.0%"' in html
        assert "stage 3 count at x.py:5: 2/4" in html
        assert "app-20240301-0001" in html
        assert 'href="http://127.0.0.1:18080/history/app-20240301-0001"' in html
        assert "3.0 MiB" in html and 'id="spark-metrics"' in html
        assert '<svg class="trend"' in html and "Input and shuffle bytes" in html
        assert "extracting {{ ds }}" not in html and "echo extracting 2024-03-01 n=3" in html  # rendered
        load = client.get(f"/ti/{ti_id(env, 'load')}").text
        assert "hunter2secret" not in load and "password=******" in load  # rendered fields are masked
        assert client.get("/ti/999").status_code == 404
        assert client.get(f"/ti/{ti_id(env, 'extract')}?try_number=7").status_code == 404


def test_history_server_link_only_after_the_end(env: WebEnv) -> None:
    run = service.trigger(WebDags(env.settings, env.metastore), "web_demo", None, "live", None, actor="test")
    key = TIKey("web_demo", run.run_id, "extract")
    store = env.metastore.store
    for old, new in ((TaskState.NONE, TaskState.SCHEDULED), (TaskState.SCHEDULED, TaskState.QUEUED)):
        assert store.set_task_state(key, old, new, "test")
    assert store.set_task_state(key, TaskState.QUEUED, TaskState.RUNNING, "test", try_number=1)
    store.record_external_ids(key, 1, spark_app_id="app-live-1", spark_ui_url="http://127.0.0.1:4040")
    ti = queries.get_task_instance(env.metastore.db, key)
    with _client(env, spark_history_url="http://127.0.0.1:18080") as client:
        login(client, "viewer")
        html = client.get(f"/ti/{ti.id}").text
        assert 'id="spark-ui" href="http://127.0.0.1:4040"' in html and 'id="spark-history"' not in html
        store.mark_task_state(key, TaskState.SUCCESS, "test")
        html = client.get(f"/ti/{ti.id}").text
        assert 'id="spark-ui"' not in html
        assert 'id="spark-history" href="http://127.0.0.1:18080/history/app-live-1"' in html


@pytest.mark.parametrize("path", ["/ti/99999999999999999999999", "/ti/0", "/ti/-1", "/ti/abc"])
def test_bad_task_instance_ids_are_not_server_errors(viewer: TestClient, path: str) -> None:
    r = viewer.get(path)
    assert r.status_code in (400, 404), (r.status_code, r.text)


def test_the_page_follows_the_log_through_the_one_api_endpoint(viewer: TestClient, env: WebEnv) -> None:
    html = viewer.get(f"/ti/{ti_id(env, 'extract')}").text
    src = re.search(r'data-src="([^"]+)"', html).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert src.startswith("/api/v1/dags/web_demo/dagRuns/") and "/taskInstances/extract/logs/1?map_index=-1" in src
    assert 'data-finished-states="failed removed skipped success upstream_failed"' in html
    body = viewer.get(src + "&tail=65536").json()
    assert "extracting 2024-03-01" in body["content"] and body["done"] and body["state"] == "success"
    assert viewer.get(src + f"&offset={body['offset']}").json()["content"] == ""
    assert viewer.get(src + "&offset=-5").status_code == 400
    assert viewer.get(src + "&offset=../../etc/passwd").status_code == 400
    assert viewer.get(src.replace("/logs/1", "/logs/3")).status_code == 404
    assert viewer.get(f"/ti/{ti_id(env, 'extract')}/log?try_number=1").status_code == 404  # the second one is gone


def test_clear_and_mark_from_the_page(op: TestClient, env: WebEnv) -> None:
    load = ti_id(env, "load")
    token = csrf_from(op.get(f"/ti/{load}").text)
    r = op.post(f"/ti/{load}/mark", data={"csrf_token": token, "state": "failed"})
    assert "Marked failed (was success)" in r.text
    assert queries.get_task_instance_by_id(env.metastore.db, load).state.value == "failed"
    r = op.post(f"/ti/{load}/mark", data={"csrf_token": token, "state": "failed"})
    assert "already" in r.text  # a user mistake shown on the page, not an error page
    r = op.post(f"/ti/{load}/clear", data={"csrf_token": token})
    assert "Cleared 1 task instance(s)" in r.text
    assert queries.get_task_instance_by_id(env.metastore.db, load).state.value == "none"
    r = op.post("/dags/web_demo/clear", data={"csrf_token": token, "run_id": env.run.run_id})
    assert "Cleared 2 task instance(s)" in r.text  # the whole run
    assert queries.get_run(env.metastore.db, "web_demo", env.run.run_id).state.value == "queued"


# -- connections ----------------------------------------------------------------------------------------------
def test_connections_pages_keep_secrets_write_only(op: TestClient, viewer: TestClient, env: WebEnv) -> None:
    token = csrf_from(op.get("/connections/new").text)
    r = op.post("/connections/save", data={
        "csrf_token": token, "create": "1", "connection_id": "warehouse", "conn_type": "postgres", "host": "db",
        "port": "5432", "login": "etl", "password": "pg-pass-42", "extra": json.dumps({"sslmode": "require",
                                                                                      "secret_key": "sk-77"})})
    assert r.status_code == 200 and "Saved connection warehouse" in r.text
    listing = op.get("/connections").text
    assert "etl" in listing and "pg-pass-42" not in listing and "sk-77" not in listing
    assert "etl" not in viewer.get("/connections").text  # viewers never see logins
    form = op.get("/connections/warehouse/edit").text
    assert "pg-pass-42" not in form and "sk-77" not in form and "leave empty to keep it" in form
    # saving the edit form as shown (password empty, secret extra ***) keeps both secrets
    extra = re.search(r'<textarea name="extra" rows="4">([^<]*)</textarea>', form).group(1).replace("&#34;", '"')
    r = op.post("/connections/save", data={"csrf_token": token, "connection_id": "warehouse", "conn_type": "postgres",
                                           "host": "db2", "port": "5432", "login": "etl", "password": "",
                                           "extra": extra})
    assert r.status_code == 200, r.text
    stored = queries.find_connection(env.metastore.db, "warehouse", env.metastore.secrets)
    assert stored is not None and stored.host == "db2" and stored.password == "pg-pass-42"
    assert stored.extra_dejson == {"sslmode": "require", "secret_key": "sk-77"}
    bad = op.post("/connections/save", data={"csrf_token": token, "connection_id": "warehouse", "conn_type": "postgres",
                                             "port": "not-a-port"})
    assert bad.status_code == 400 and "port" in bad.text
    r = op.post("/connections/warehouse/delete", data={"csrf_token": token})
    assert "Deleted connection warehouse" in r.text
    assert op.post("/connections/warehouse/delete", data={"csrf_token": token}).status_code == 404


def test_opening_a_task_page_runs_no_dag_code_and_writes_nothing(viewer: TestClient, env: WebEnv) -> None:
    """The page shows the fields the task process rendered and stored; it renders nothing itself, so a template
    with a side effect (here an XCom push) runs once, in the task, and never again when someone looks."""
    path = env.settings.resolved_dags_folder / "watched.py"
    path.write_text(
        "from datetime import datetime\nfrom sparkflow import DAG, BashOperator\n"
        "with DAG('watched', start_date=datetime(2024, 1, 1), schedule=None) as dag:\n"
        "    BashOperator(task_id='look',\n"
        "                 bash_command=\"{{ ti.xcom_push(key='viewed', value=1) or '' }}echo {{ ds }}\")\n")
    run = run_dag(env.settings, env.metastore, path, "watched")
    refresh_dag_folder(env.settings, env.metastore)
    db = env.metastore.db
    ti = queries.task_instances(db, "watched", run.run_id)[0]

    def written() -> tuple[object, ...]:
        return (queries.list_xcoms(db, "watched", run.run_id), queries.state_events(db, "watched", run.run_id),
                queries.rendered_fields(db, ti.key))

    before = written()
    assert [x.key for x in before[0]].count("viewed") == 1  # pushed once, by the task's own rendering
    html = viewer.get(f"/ti/{ti.id}").text
    assert re.search(r"echo \d{4}-\d\d-\d\d", html), "the stored rendered field"
    assert written() == before


def test_a_task_that_never_ran_shows_its_fields_as_written(viewer: TestClient, env: WebEnv) -> None:
    db = env.metastore.db
    run = service.trigger(WebDags(env.settings, env.metastore), "web_demo", None, "fresh", None, "test")
    ti = queries.task_instances(db, "web_demo", run.run_id)[0]
    html = viewer.get(f"/ti/{ti.id}").text
    assert "Not rendered yet" in html
