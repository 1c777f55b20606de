"""A DAG file can never stall or kill sparkflow. With one file of each bad kind in the DAG folder (a hang, an
os._exit(0), a segfault, 10 MB of output, an import that blocks, SystemExit), real processes: `dags list` answers
with valid JSON and names each cause, the scheduler runs the good DAGs and stops on SIGTERM within 10 s while a
parse is stuck, the web server answers and never imports a DAG file, and a task process whose DAG file turns bad
fails the try with the cause instead of hanging or taking the scheduler down. Small time-outs via the setting."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.metastore.records import TaskInstanceRecord
from sparkflow.settings import load_settings
from tests.services import free_port

pytestmark = pytest.mark.slow

TIMEOUT = 2  # SPARKFLOW_DAGBAG_IMPORT_TIMEOUT for these tests
GOOD = """
    import os
    from datetime import datetime
    from sparkflow import DAG, BashOperator

    with open({marker!r}, "a") as fh:  # who imports this file: one line per import, with the process id
        fh.write(f"{{os.getpid()}}\\n")
    print("PRINTED-BY-A-DAG-FILE")
    with DAG("good", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        BashOperator(task_id="hello", bash_command="echo hello {{{{ ds }}}}")
"""
BAD = {
    "hang.py": "from sparkflow import DAG\nwhile True:\n    pass\n",
    "exits.py": "import os\nfrom sparkflow import DAG\nos._exit(0)\n",
    "crash.py": "import ctypes\nfrom sparkflow import DAG\nctypes.string_at(0)\n",
    "huge.py": "from sparkflow import DAG\nprint('x' * 10_000_000)\n",
    "slow.py": "from sparkflow import DAG\nimport blocker\n",
    "quits.py": "from sparkflow import DAG\nraise SystemExit(3)\n",
}
CAUSES = {
    "hang.py": f"import timed out after {TIMEOUT} s",
    "exits.py": "the import called exit(0)",
    "crash.py": "killed by signal 11",
    "slow.py": f"import timed out after {TIMEOUT} s",
    "quits.py": "sys.exit(3)",
}
# Good when parsed, bad once the flag file exists: what a task process meets when a file turns bad after its parse.
TURNS_BAD = """
    import os, time
    from datetime import datetime
    from sparkflow import DAG, EmptyOperator

    if os.path.exists({flag!r}):
        {bad}
    with DAG({dag_id!r}, start_date=datetime(2024, 1, 1), schedule=None) as dag:
        EmptyOperator(task_id="only")
"""
TURNS = {
    "t_hang": "while True: pass",
    "t_exit": "os._exit(0)",
    "t_crash": "import ctypes; ctypes.string_at(0)",
    "t_quits": "raise SystemExit(3)",
    "t_huge": "print('x' * 10_000_000)",
}


@dataclass
class Deployment:
    base: Path
    dags: Path
    env: dict[str, str]
    marker: Path
    flag: Path

    def cli(self, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "sparkflow", *args], env={**self.env, **env},
                                capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if check:
            assert result.returncode == 0, f"sparkflow {' '.join(args)}:\n{result.stdout[-2000:]}\n{result.stderr}"
        return result

    def start(self, *args: str, log: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.base / log).open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "sparkflow", *args], env={**self.env, **env}, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def importers(self) -> list[int]:
        return [int(line) for line in self.marker.read_text().split()] if self.marker.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("bad-dag-files")
    dags = base / "dags"
    dags.mkdir()
    marker, flag = base / "imported-by.txt", base / "turn-bad"
    (dags / "good.py").write_text(textwrap.dedent(GOOD.format(marker=str(marker))))
    for name, code in BAD.items():
        (dags / name).write_text(code)
    (dags / "blocker.py").write_text("import time\ntime.sleep(3600)\n")  # a helper module, not a DAG file
    for dag_id, bad in TURNS.items():
        (dags / f"{dag_id}.py").write_text(textwrap.dedent(TURNS_BAD.format(flag=str(flag), bad=bad, dag_id=dag_id)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARKFLOW_", "AIRFLOW_"))}
    env.update(SPARKFLOW_HOME=str(base / "home"), SPARKFLOW_DAGS_FOLDER=str(dags), SPARKFLOW_EXECUTOR="local",
               SPARKFLOW_DAGBAG_IMPORT_TIMEOUT=str(TIMEOUT), SPARKFLOW_DAG_PARSE_INTERVAL="0.5",
               SPARKFLOW_SCHEDULER_LOOP_INTERVAL="0.05", SPARKFLOW_HEARTBEAT_INTERVAL="0.5",
               SPARKFLOW_HEARTBEAT_TIMEOUT="20", SPARKFLOW_LOAD_DEFAULT_CONNECTIONS="false")
    deployment = Deployment(base, dags, env, marker, flag)
    deployment.cli("db", "init")
    yield deployment


def test_dags_list_answers_with_valid_json_and_names_each_cause(deployment: Deployment) -> None:
    listed = deployment.cli("dags", "list", "-o", "json")
    assert [d["dag_id"] for d in json.loads(listed.stdout)] == ["good", *sorted(TURNS)]  # valid JSON, nothing else
    assert "PRINTED-BY-A-DAG-FILE" not in listed.stdout + listed.stderr and "xxxxx" not in listed.stdout
    assert "5 DAG file(s) failed to import" not in listed.stderr  # -o json: no table footer
    errors = json.loads(deployment.cli("dags", "list-import-errors", "-o", "json").stdout)
    by_file = {Path(e["filename"]).name: e["error"] for e in errors}
    assert set(by_file) == set(CAUSES), by_file
    for name, cause in CAUSES.items():
        assert cause in by_file[name], (name, by_file[name])
    # What the files printed is in their parse logs.
    logs = deployment.base / "home" / "logs" / "dag_processor"
    assert "PRINTED-BY-A-DAG-FILE" in (logs / "good.py.log").read_text()
    assert (logs / "huge.py.log").stat().st_size >= 10_000_000
    # Unchanged files are not parsed again: the next command answers without waiting for the time-outs.
    report = json.loads(deployment.cli("dags", "report", "-o", "json").stdout)
    again = json.loads(deployment.cli("dags", "report", "-o", "json").stdout)
    assert {r["file"]: r["last_parsed_at"] for r in report} == {r["file"]: r["last_parsed_at"] for r in again}
    assert {Path(r["file"]).name for r in report} == {"good.py", *BAD, *(f"{t}.py" for t in TURNS)}
    hang = next(r for r in report if r["file"].endswith("hang.py"))
    assert hang["duration"] >= TIMEOUT and hang["dag_num"] == 0 and hang["errors"] == 1


def test_the_scheduler_runs_good_dags_and_stops_within_10_s_while_a_parse_hangs(deployment: Deployment) -> None:
    deployment.cli("dags", "list")
    proc = deployment.start("scheduler", log="scheduler.log", SPARKFLOW_DAGBAG_IMPORT_TIMEOUT="120")
    try:
        run_id = re.search(r"Created run (\S+)", deployment.cli("trigger", "good").stdout).group(1)  # type: ignore[union-attr]

        def state() -> str:
            runs = json.loads(deployment.cli("runs", "list", "good", "-o", "json").stdout)
            return next(r["state"] for r in runs if r["run_id"] == run_id)

        wait_for(lambda: state() == "success", 60, "the good DAG's run to succeed")
        # The processor parses the changed hanging file (120 s time-out) meanwhile: SIGTERM must not wait for it.
        with (deployment.dags / "hang.py").open("a") as fh:
            fh.write("# changed\n")
        hang_log = deployment.base / "home" / "logs" / "dag_processor" / "hang.py.log"
        before = hang_log.stat().st_mtime_ns
        wait_for(lambda: hang_log.stat().st_mtime_ns != before, 30, "the parse of the changed hanging file")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        output = (deployment.base / "scheduler.log").read_text()
        assert "PRINTED-BY-A-DAG-FILE" not in output and "xxxxx" not in output
        assert "DAG processor stopped" in output and "scheduler stopped" in output
        leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and
                     f"--parent-pid\x00{proc.pid}\x00".encode() in _cmdline(p)]
        assert leftovers == [], "the DAG processor or a parse worker outlived the scheduler"
    finally:
        stop(proc)


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes() + b"\x00"
    except OSError:
        return b""


def test_the_web_server_answers_and_never_imports_a_dag_file(deployment: Deployment) -> None:
    deployment.cli("dags", "list")
    deployment.cli("trigger", "good", "--wait")
    deployment.cli("users", "create", "--username", "val", "--password", "pw-for-tests-1", "--role", "viewer")
    imported_before = deployment.importers()
    port = free_port()
    proc = deployment.start("webserver", "--port", str(port), log="web.log")
    client = Browser(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: client.get("/health")[0] == 200, 60, "the web server")
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login")[1]).group(1)  # type: ignore[union-attr]
        client.post("/login", {"username": "val", "password": "pw-for-tests-1", "csrf_token": token})
        status, home = client.get("/")
        assert status == 200 and 'data-dag-id="good"' in home
        assert "failed to import" in home and "import timed out after" in home
        status, dag_page = client.get("/dags/good")
        assert status == 200 and "BashOperator" in dag_page
        ti_link = re.search(r'href="(/ti/\d+)"', dag_page).group(1)  # type: ignore[union-attr]
        status, ti_page = client.get(ti_link)
        assert status == 200
        assert re.search(r"echo hello \d{4}-\d\d-\d\d", ti_page), "the rendered field the task stored"
        assert json.loads(client.get("/health")[1])["metadatabase"]["status"] == "healthy"
        status, body = client.get("/api/v1/importErrors")  # the viewer's session cookie works for the API too
        assert status == 200, body
        assert {Path(e["filename"]).name for e in json.loads(body)["import_errors"]} == set(CAUSES)
        assert deployment.importers() == imported_before, "the web server imported a DAG file"
        assert proc.pid not in deployment.importers()
    finally:
        stop(proc)


class Browser:
    """A logged-in viewer's requests to a real server (cookies kept)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))

    def get(self, path: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.url + path))

    def post(self, path: str, form: dict[str, str]) -> tuple[int, str]:
        return self._open(urllib.request.Request(self.url + path, data=urllib.parse.urlencode(form).encode()))

    def _open(self, request: urllib.request.Request) -> tuple[int, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""


def test_a_task_process_whose_dag_file_turns_bad_fails_the_try_with_the_cause(deployment: Deployment) -> None:
    deployment.cli("dags", "list")  # parsed while good
    deployment.flag.write_text("")  # from now on each of these files hangs, exits, crashes, quits or floods
    proc = deployment.start("scheduler", log="scheduler-tasks.log")
    try:
        runs = {dag_id: re.search(r"Created run (\S+)", deployment.cli("trigger", dag_id).stdout).group(1)  # type: ignore[union-attr]
                for dag_id in TURNS}

        metastore = open_metastore(load_settings(deployment.env))

        def finished() -> dict[str, TaskInstanceRecord]:
            tis = {dag_id: queries.task_instances(metastore.db, dag_id, run_id)[0] for dag_id, run_id in runs.items()}
            return {dag_id: ti for dag_id, ti in tis.items() if ti.state.value in ("success", "failed")}

        wait_for(lambda: len(finished()) == len(TURNS), 90, "every try to end")
        result = finished()
        metastore.db.dispose()
        assert result["t_huge"].state.value == "success"  # output is harmless
        causes = {"t_hang": f"import timed out after {TIMEOUT} s", "t_exit": "exited (code 0) before the try started",
                  "t_crash": "SIGSEGV", "t_quits": "sys.exit(3)"}
        for dag_id, cause in causes.items():
            assert result[dag_id].state.value == "failed", (dag_id, result[dag_id])
            assert cause in (result[dag_id].error or ""), (dag_id, result[dag_id].error)
        assert proc.poll() is None, "the scheduler died"
        output = (deployment.base / "scheduler-tasks.log").read_text()
        assert "xxxxx" not in output
    finally:
        deployment.flag.unlink()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        stop(proc)
