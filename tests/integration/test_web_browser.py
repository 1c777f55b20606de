"""The web UI in a real browser: Playwright drives Debian's Chromium (headless) against a real
`sparkflow standalone` (scheduler + uvicorn webserver) on 127.0.0.1. Log in, see the DAG list, trigger a run with
a JSON conf, watch the grid move to success, follow a running task's log live, and check a viewer cannot trigger.

Chromium comes from the distribution (`apt-get install chromium`; .ci/run installs it): Playwright's own browser
download cannot work here. A missing browser fails these tests, it never skips them. Screenshots go to
$SPARKFLOW_SCREENSHOTS (default: the test's tmp dir).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "browser-pass-123"
DAG_FILE = """
    from datetime import datetime
    from sparkflow import DAG, BashOperator

    with DAG("browser_demo", start_date=datetime(2024, 1, 1), schedule="@daily", catchup=False,
             is_paused_upon_creation=True, description="a small DAG for the browser test") as dag:
        hello = BashOperator(task_id="hello", bash_command="echo greeting={{ params.greeting }}")
        slow = BashOperator(task_id="slow", bash_command=(
            "for i in 1 2 3 4 5 6 7 8; do echo progress line $i; sleep 0.7; done; echo all done"))
        report = BashOperator(task_id="report", bash_command="echo report for {{ ds }}")
        hello >> slow >> report
"""
SPARK_DAG_FILE = """
    from datetime import datetime
    from sparkflow import DAG, SparkSubmitOperator

    with DAG("browser_spark", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        SparkSubmitOperator(task_id="crunch", application={app!r}, application_args=["6"], conn_id="spark_local",
                            name="browser_crunch")
"""
SLOW_APP = Path(__file__).parent / "apps" / "slow_app.py"


@dataclass(frozen=True)
class Server:
    url: str
    home: Path
    shots: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sparkflow(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "sparkflow", *args], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"sparkflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("web-browser")
    home, dags = base / "home", base / "dags"
    dags.mkdir()
    (dags / "browser_demo.py").write_text(textwrap.dedent(DAG_FILE))
    (dags / "browser_spark.py").write_text(textwrap.dedent(SPARK_DAG_FILE.format(app=str(SLOW_APP))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKFLOW_", "AIRFLOW_CONN_"))}
    env.update(SPARKFLOW_HOME=str(home), SPARKFLOW_DAGS_FOLDER=str(dags), SPARKFLOW_LOAD_DEFAULT_CONNECTIONS="false",
               SPARKFLOW_EXECUTOR="local", SPARKFLOW_DAG_PARSE_INTERVAL="1", SPARK_LOCAL_IP="127.0.0.1",
               SPARKFLOW_CONN_SPARK_LOCAL="spark://local%5B2%5D")
    _sparkflow(env, "db", "init")
    _sparkflow(env, "users", "create", "--username", "alice", "--password", PASSWORD, "--role", "op")
    _sparkflow(env, "users", "create", "--username", "val", "--password", PASSWORD, "--role", "viewer")
    port = _free_port()
    log = (base / "standalone.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "sparkflow", "standalone", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if json.load(r)["metadatabase"]["status"] == "healthy":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"standalone did not start:\n{(base / 'standalone.log').read_text()}")
            time.sleep(0.3)
        shots = Path(os.environ.get("SPARKFLOW_SCREENSHOTS") or base / "screenshots")
        shots.mkdir(parents=True, exist_ok=True)
        yield Server(url, home, shots)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        output = (base / "standalone.log").read_text()
        assert "Traceback" not in output, output


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium is missing at {CHROMIUM}: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _login(browser, server: Server, username: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url + "/")
    assert "/login" in page.url  # every page needs a user
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    return context, page


def test_trigger_watch_grid_and_follow_the_live_log(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    context, page = _login(browser, server, "alice")
    try:
        # The DAG processor may not have parsed the folder yet on a loaded machine: the empty list refreshes itself.
        expect(page.locator("#dag-list")).to_contain_text("browser_demo", timeout=120_000)
        expect(page.locator('tr[data-dag-id="browser_demo"]')).to_contain_text("every day at 00:00 UTC")
        page.screenshot(path=str(server.shots / "dag_list.png"), full_page=True)
        page.click('tr[data-dag-id="browser_demo"] a.dag-link')
        expect(page.locator("h1")).to_have_text("browser_demo")

        page.click("#trigger-panel summary")
        page.fill("#trigger-form textarea[name=conf]", "{not json")
        page.click("#trigger-form button[type=submit]")
        expect(page.locator(".flash.bad")).to_contain_text("not valid JSON")

        page.click("#trigger-panel summary")
        page.fill("#trigger-form textarea[name=conf]", '{"greeting": "hello-browser"}')
        page.fill("#trigger-form input[name=run_id]", "browser_run")
        page.click("#trigger-form button[type=submit]")
        expect(page.locator(".flash.ok")).to_contain_text("Triggered run browser_run")

        # the grid updates by itself while the run is active (a paused DAG still runs manual triggers)
        slow_cell = page.locator('#grid a.cell[data-run-id="browser_run"][data-task-id="slow"]')
        expect(slow_cell).to_have_attribute("data-state", "running", timeout=60_000)
        slow_cell.click()
        expect(page.locator("h1")).to_contain_text("slow")
        log = page.locator("#log-content")
        expect(log).to_contain_text("progress line 1", timeout=30_000)
        expect(page.locator("#log-status")).to_have_text("(following live)")
        expect(log).to_contain_text("all done", timeout=60_000)  # appended live, then the page shows the end
        expect(page.locator("#ti-state")).to_have_text("success", timeout=30_000)
        expect(page.locator("#tries")).to_contain_text("success", timeout=30_000)  # reloaded with the final try
        expect(page.locator("#log-status")).to_have_text("(complete)")
        page.screenshot(path=str(server.shots / "task_instance.png"), full_page=True)

        page.goto(server.url + "/dags/browser_demo")
        run_head = page.locator('#grid a.runhead[data-run-id="browser_run"]')
        expect(run_head).to_have_attribute("data-state", "success", timeout=60_000)
        expect(page.locator('#grid a.cell[data-run-id="browser_run"][data-state="success"]')).to_have_count(3)
        expect(page.locator("svg.graph g.node")).to_have_count(3)
        expect(page.locator("svg.gantt rect")).to_have_count(3)
        page.screenshot(path=str(server.shots / "dag_grid.png"), full_page=True)

        page.locator('#grid a.cell[data-run-id="browser_run"][data-task-id="hello"]').click()
        expect(page.locator("#log-content")).to_contain_text("greeting=hello-browser")  # the conf reached the task
        expect(page.locator("#rendered")).to_contain_text("echo greeting=hello-browser")
    finally:
        context.close()


def test_viewer_cannot_trigger(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    context, page = _login(browser, server, "val")
    try:
        # The DAG processor may not have parsed the folder yet on a loaded machine: the empty list refreshes itself.
        expect(page.locator("#dag-list")).to_contain_text("browser_demo", timeout=120_000)
        expect(page.locator('tr[data-dag-id="browser_demo"] button.toggle')).to_be_disabled()
        page.goto(server.url + "/dags/browser_demo")
        expect(page.locator("h1")).to_have_text("browser_demo")
        expect(page.locator("#trigger-form")).to_have_count(0)
        # even a hand-made request is refused
        status = page.evaluate("""async () => (await fetch('/api/v1/dags/browser_demo/dagRuns', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{}'})).status""")
        assert status == 403
    finally:
        context.close()


def test_api_docs_render_offline_under_the_csp(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    """Issue 21 item 10: Swagger UI comes from the server itself (no CDN: any other host is cut off here) and
    runs under the Content-Security-Policy without a violation."""
    from playwright.sync_api import expect

    context, page = _login(browser, server, "val")
    outside: list[str] = []
    violations: list[str] = []

    def loopback_only(route):  # type: ignore[no-untyped-def]
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    try:
        context.route("**/*", loopback_only)
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(server.url + "/api/v1/ui")
        expect(page.locator(".swagger-ui .opblock").first).to_be_visible(timeout=30_000)
        expect(page.locator(".swagger-ui")).to_contain_text("/api/v1/dags")
        assert outside == [] and violations == [], (outside, violations)
    finally:
        context.close()


@pytest.mark.spark
def test_spark_task_shows_progress_metrics_and_log(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    context, page = _login(browser, server, "alice")
    try:
        page.goto(server.url + "/dags/browser_spark")
        page.click("#trigger-panel summary")
        page.fill("#trigger-form input[name=run_id]", "spark_run")
        page.click("#trigger-form button[type=submit]")
        cell = page.locator('#grid a.cell[data-run-id="spark_run"][data-task-id="crunch"]')
        expect(cell).to_have_attribute("data-state", "running", timeout=60_000)
        cell.click()
        expect(page.locator("#spark")).to_be_visible()
        # live: the application id and the progress bar come from the task instance while spark-submit runs
        expect(page.locator("#spark-app-id")).to_contain_text("local-", timeout=90_000)
        expect(page.locator("#spark-text")).to_contain_text("tasks", timeout=90_000)
        page.screenshot(path=str(server.shots / "spark_running.png"), full_page=True)
        expect(page.locator("#ti-state")).to_have_text("success", timeout=180_000)
        expect(page.locator("#spark-metrics")).to_be_visible(timeout=30_000)  # the page reloads with the metrics
        expect(page.locator("#spark-metrics")).to_contain_text("Jobs / stages / tasks")
        expect(page.locator("#log-content")).to_contain_text("slow_app: counted 1000 rows", timeout=30_000)
        page.screenshot(path=str(server.shots / "spark_done.png"), full_page=True)
    finally:
        context.close()
