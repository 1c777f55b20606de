"""The ``sparkflow`` command, driven in-process through ``sparkflow.cli.main`` with SPARKFLOW_HOME in tmp."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparkflow.cli import main
from sparkflow.connections import SecretBox
from sparkflow.logs import task_log_path
from sparkflow.settings import Settings
from tests.helpers import process_alive

PASSWORD = "pw!#s3cr3t~value"
TOKEN = "tok!#extra~secret"

SMALL_DAG = """
    from datetime import datetime

    from sparkflow import DAG, BashOperator, EmptyOperator, PythonOperator


    def greet():
        print("hello from python")
        return 42


    with DAG("small", start_date=datetime(2024, 1, 1), schedule="@daily", tags=["etl", "demo"],
             default_args={"owner": "alice"}, description="a small DAG") as dag:
        say = BashOperator(task_id="say", bash_command="echo bash-says-hi")
        py = PythonOperator(task_id="py", python_callable=greet)
        done = EmptyOperator(task_id="done")
        say >> py >> done
"""

FAILING_DAG = """
    from datetime import datetime

    from sparkflow import DAG, BashOperator, EmptyOperator

    with DAG("failing", start_date=datetime(2024, 1, 1), schedule=None) as dag:
        boom = BashOperator(task_id="boom", bash_command="echo about-to-fail; exit 3")
        after = EmptyOperator(task_id="after")
        boom >> after
"""

BROKEN_DAG = """
    from sparkflow import DAG

    with DAG("broken") as dag:
        raise ValueError("boom at import")
"""

CONN_FIELDS = ["conn_id", "conn_type", "host", "port", "login", "password", "schema", "extra", "description"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


Cli = Callable[..., Result]


@pytest.fixture
def cli(sf_home: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
def home(cli: Cli, sf_home: Path) -> Path:
    """An initialised sparkflow home."""
    result = cli("db", "init")
    assert result.code == 0, result.err
    return sf_home


def assert_user_error(result: Result, *fragments: str) -> None:
    """A user mistake: exit 2 and exactly one line on stderr, starting with Error:, naming what was wrong."""
    assert result.code == 2, (result.out, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("Error: "), result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def add_spark_default(cli: Cli) -> Result:
    return cli(
        "connections", "add", "spark_default", "--conn-type", "spark", "--conn-host", "local[*]",
        "--conn-port", "7077", "--conn-login", "bob", "--conn-password", PASSWORD, "--conn-schema", "queue",
        "--conn-extra", json.dumps({"deploy-mode": "client", "token": TOKEN}), "--conn-description", "main cluster",
    )


# -- db and config ---------------------------------------------------------------------------------------------


def test_db_init_is_idempotent(cli: Cli, sf_home: Path) -> None:
    first = cli("db", "init")
    assert first.code == 0, first.err
    assert "Metastore ready" in first.out
    key = (sf_home / "fernet.key").read_text()
    assert stat.S_IMODE((sf_home / "fernet.key").stat().st_mode) == 0o600
    assert add_spark_default(cli).code == 0

    second = cli("db", "init")
    assert second.code == 0, second.err
    assert (sf_home / "fernet.key").read_text() == key  # the key that encrypted the secrets is kept
    (row,) = cli("connections", "list", "-o", "json").json()
    assert row["conn_id"] == "spark_default"


def test_the_command_leaves_without_tear_down_but_keeps_what_an_exit_owes(home: Path, db_backend: str) -> None:
    """`sparkflow` skips the interpreter's tear-down (~0.2 s): the output still arrives whole through a pipe, the
    exit code stays, and on SQLite the database is closed properly (its write-ahead log checkpointed away)."""
    for i in range(60):  # enough output to fill more than one pipe buffer
        assert main(["variables", "set", f"var_{i:02d}", "x" * 2000]) == 0
    listed = subprocess.run([sys.executable, "-m", "sparkflow", "variables", "list", "-o", "json"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 60
    failed = subprocess.run([sys.executable, "-m", "sparkflow", "variables", "get", "missing"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and failed.stderr.startswith("Error: ") and "missing" in failed.stderr
    if db_backend == "sqlite":
        assert not (home / "sparkflow.db-wal").exists()


def test_commands_before_db_init_tell_you_to_run_it(cli: Cli) -> None:
    assert_user_error(cli("connections", "list"), "not initialised", "sparkflow db init")


def test_config_list_json_masks_secrets(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    fernet_key = SecretBox.generate_key()
    monkeypatch.setenv("SPARKFLOW_FERNET_KEY", fernet_key)
    monkeypatch.setenv("SPARKFLOW_DB_URL", "postgresql://sf:hunter2pw@db.example:5432/sparkflow")
    monkeypatch.setenv("SPARKFLOW_EXECUTOR", "sequential")

    result = cli("config", "list", "-o", "json")
    rows = {row["key"]: row for row in result.json()}
    assert set(rows["executor"]) == {"key", "value", "description"}
    assert rows["executor"]["value"] == "sequential"
    assert rows["fernet_key"]["value"] == "***"
    assert rows["db_url"]["value"] == "postgresql://sf:***@db.example:5432/sparkflow"
    assert {"home", "dags_folder", "parallelism", "log_folder"} <= set(rows)
    assert all(row["description"] for row in rows.values())
    for secret in (fernet_key, "hunter2pw"):
        assert secret not in result.out + result.err

    table = cli("config", "list")
    assert table.code == 0
    assert fernet_key not in table.out and "hunter2pw" not in table.out


# -- connections -----------------------------------------------------------------------------------------------


def test_connections_add_with_fields_and_list_masks_the_password(cli: Cli, home: Path) -> None:
    added = add_spark_default(cli)
    assert added.code == 0, added.err
    assert "Successfully added `conn_id`=spark_default" in added.out
    assert PASSWORD not in added.out + added.err and TOKEN not in added.out + added.err

    listed = cli("connections", "list", "-o", "json")
    rows = listed.json()
    assert rows == [{
        "conn_id": "spark_default", "conn_type": "spark", "host": "local[*]", "port": 7077, "login": "bob",
        "password": "***", "schema": "queue", "extra": {"deploy-mode": "client", "token": "***"},
        "description": "main cluster",
    }]
    assert list(rows[0]) == CONN_FIELDS
    assert PASSWORD not in listed.out and TOKEN not in listed.out

    table = cli("connections", "list")
    assert table.code == 0
    assert "spark_default" in table.out and "local[*]" in table.out
    assert PASSWORD not in table.out


def test_connections_add_with_uri(cli: Cli, home: Path) -> None:
    uri = "spark://bob:p%40ss@local%5B%2A%5D:7077/q?deploy-mode=cluster"
    added = cli("connections", "add", "from_uri", "--conn-uri", uri, "--conn-description", "via uri")
    assert added.code == 0, added.err
    assert "p@ss" not in added.out and "p%40ss" not in added.out

    (row,) = cli("connections", "get", "from_uri", "-o", "json").json()
    assert row == {
        "conn_id": "from_uri", "conn_type": "spark", "host": "local[*]", "port": 7077, "login": "bob",
        "password": "***", "schema": "q", "extra": {"deploy-mode": "cluster"}, "description": "via uri",
    }


def test_connection_without_password_lists_null(cli: Cli, home: Path) -> None:
    assert cli("connections", "add", "bare", "--conn-type", "spark", "--conn-host", "yarn").code == 0
    (row,) = cli("connections", "list", "-o", "json").json()
    assert row["password"] is None and row["extra"] is None and row["port"] is None


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--conn-uri", "spark://h", "--conn-host", "h2"], ["either --conn-uri or --conn-type"]),
        (["--conn-host", "h"], ["connection 'c1'", "--conn-type is required"]),
        (["--conn-type", "spark", "--conn-port", "seventy"], ["connection 'c1'", "'port'", "'seventy'"]),
        (["--conn-type", "spark", "--conn-extra", "[1]"], ["connection 'c1'", "'extra'", "JSON object"]),
        (["--conn-uri", "spark://h?__extra__=nope"], ["connection 'c1'", "__extra__"]),
    ],
    ids=["uri-and-fields", "no-type", "bad-port", "extra-not-object", "bad-uri-extra"],
)
def test_connections_add_rejects_bad_input(cli: Cli, home: Path, args: list[str], fragments: list[str]) -> None:
    assert_user_error(cli("connections", "add", "c1", *args), *fragments)
    assert cli("connections", "list", "-o", "json").json() == []


def test_connections_add_existing_needs_overwrite(cli: Cli, home: Path) -> None:
    assert add_spark_default(cli).code == 0
    assert_user_error(add_spark_default(cli), "connection 'spark_default' already exists", "--overwrite")
    replaced = cli("connections", "add", "spark_default", "--conn-uri", "spark://yarn", "--overwrite")
    assert replaced.code == 0, replaced.err
    (row,) = cli("connections", "list", "-o", "json").json()
    assert (row["host"], row["password"], row["login"]) == ("yarn", None, None)


def test_connections_get(cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert add_spark_default(cli).code == 0
    assert cli("connections", "add", "pg", "--conn-type", "postgres", "--conn-host", "db").code == 0
    got = cli("connections", "get", "spark_default", "-o", "json")
    (row,) = got.json()
    assert (row["conn_id"], row["host"], row["password"]) == ("spark_default", "local[*]", "***")
    assert PASSWORD not in got.out

    assert_user_error(cli("connections", "get", "spark_k8s"), "connection 'spark_k8s' does not exist",
                      "known Spark connections: spark_default")

    monkeypatch.setenv("SPARKFLOW_CONN_SPARK_DEFAULT", "spark://env-master:7078")
    (row,) = cli("connections", "get", "spark_default", "-o", "json").json()
    assert (row["host"], row["port"], row["password"]) == ("env-master", 7078, None)


def test_connections_delete(cli: Cli, home: Path) -> None:
    assert add_spark_default(cli).code == 0
    deleted = cli("connections", "delete", "spark_default")
    assert deleted.code == 0, deleted.err
    assert "spark_default" in deleted.out
    assert cli("connections", "list", "-o", "json").json() == []
    assert_user_error(cli("connections", "delete", "spark_default"), "connection 'spark_default' does not exist")


def test_connections_import_with_a_bad_entry_writes_nothing(cli: Cli, home: Path, tmp_path: Path) -> None:
    path = tmp_path / "conns.yaml"
    path.write_text(
        "good_one:\n  conn_type: spark\n  host: local[*]\n"
        "bad_one:\n  conn_type: spark\n  extra: '[\"not\", \"an\", \"object\"]'\n"
        "good_two:\n  conn_type: http\n  host: api\n"
    )
    assert_user_error(cli("connections", "import", str(path)), str(path), "connection 'bad_one'", "'extra'")
    assert cli("connections", "list", "-o", "json").json() == []


def test_connections_import_clash_writes_nothing(cli: Cli, home: Path, tmp_path: Path) -> None:
    assert add_spark_default(cli).code == 0
    path = tmp_path / "conns.json"
    path.write_text(json.dumps({"brand_new": {"conn_type": "spark", "host": "yarn"},
                                "spark_default": {"conn_type": "spark", "host": "other"}}))
    assert_user_error(cli("connections", "import", str(path)), "connection 'spark_default' already exists")
    rows = cli("connections", "list", "-o", "json").json()
    assert [(r["conn_id"], r["host"]) for r in rows] == [("spark_default", "local[*]")]

    overwritten = cli("connections", "import", str(path), "--overwrite")
    assert overwritten.code == 0, overwritten.err
    rows = cli("connections", "list", "-o", "json").json()
    assert [(r["conn_id"], r["host"]) for r in rows] == [("brand_new", "yarn"), ("spark_default", "other")]


def test_connections_import_yaml_date_in_extra_is_a_user_error(cli: Cli, home: Path, tmp_path: Path) -> None:
    path = tmp_path / "conns.yaml"
    path.write_text("dated:\n  conn_type: http\n  extra:\n    since: 2024-01-01\n")
    assert_user_error(cli("connections", "import", str(path)), "connection 'dated'", "'extra'")


def test_connections_add_uri_without_scheme_hides_the_password(cli: Cli, home: Path) -> None:
    result = cli("connections", "add", "c1", "--conn-uri", "bob:hunter2pw@spark-master:7077")
    assert_user_error(result, "connection 'c1'", "no scheme")
    assert "hunter2pw" not in result.err


def test_connections_import_missing_file(cli: Cli, home: Path, tmp_path: Path) -> None:
    assert_user_error(cli("connections", "import", str(tmp_path / "absent.yaml")), "absent.yaml", "cannot be read")


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # a second home / the raw SQLite file
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_connections_export_then_import_into_a_fresh_home(
    cli: Cli, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    assert add_spark_default(cli).code == 0
    assert cli("connections", "add", "pg", "--conn-uri", "postgres://u:p%40ss@db.example:5432/mydb").code == 0
    before = cli("connections", "list", "-o", "json").json()
    export = tmp_path / f"export{suffix}"
    exported = cli("connections", "export", str(export))
    assert exported.code == 0, exported.err
    assert "Exported 2 connection(s)" in exported.out
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    assert PASSWORD in export.read_text()  # an export is a backup: secrets included, in plaintext

    fresh = tmp_path / "fresh_home"
    monkeypatch.setenv("SPARKFLOW_HOME", str(fresh))
    assert cli("db", "init").code == 0
    assert (fresh / "fernet.key").read_text() != (home / "fernet.key").read_text()
    imported = cli("connections", "import", str(export))
    assert imported.code == 0, imported.err
    assert "Imported 2 connection(s)" in imported.out
    assert cli("connections", "list", "-o", "json").json() == before

    again = tmp_path / f"again{suffix}"
    assert cli("connections", "export", str(again)).code == 0
    assert again.read_text() == export.read_text()  # secrets survived re-encryption under the new key


def test_connections_export_needs_a_known_suffix(cli: Cli, home: Path, tmp_path: Path) -> None:
    assert_user_error(cli("connections", "export", str(tmp_path / "conns.txt")), "conns.txt", ".yaml")


def test_wrong_fernet_key_is_one_clear_error(cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert add_spark_default(cli).code == 0
    monkeypatch.setenv("SPARKFLOW_FERNET_KEY", SecretBox.generate_key())
    assert_user_error(cli("connections", "list"), "cannot be decrypted", "fernet")


# -- dags ------------------------------------------------------------------------------------------------------


def test_dags_list_json(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    path = write_dag("small", SMALL_DAG)
    (row,) = cli("dags", "list", "-o", "json").json()
    assert {"dag_id", "fileloc", "owners", "is_paused", "schedule", "tags", "description"} <= set(row)
    assert row["dag_id"] == "small"
    assert row["fileloc"] == str(path.resolve())
    assert row["owners"] == "alice"
    assert row["is_paused"] is False
    assert "@daily" in row["schedule"]
    assert row["tags"] == ["demo", "etl"]
    assert row["description"] == "a small DAG"


def test_dags_list_import_errors(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    broken = write_dag("broken", BROKEN_DAG)

    listed = cli("dags", "list", "-o", "json")
    assert [row["dag_id"] for row in listed.json()] == ["small"]  # one broken file hides no other DAG
    table = cli("dags", "list")
    assert table.code == 0
    assert "1 DAG file(s) failed to import" in table.err

    (error,) = cli("dags", "list-import-errors", "-o", "json").json()
    assert {"filename", "lineno", "dag_id", "task_id", "error"} <= set(error)
    assert error["filename"] == str(broken.resolve())
    assert error["lineno"] == 5
    assert "ValueError: boom at import" in error["error"]

    write_dag("broken", SMALL_DAG.replace('"small"', '"fixed"'))
    assert cli("dags", "list-import-errors", "-o", "json").json() == []


def test_import_error_of_a_deleted_file_goes_away(cli: Cli, home: Path,
                                                  write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    broken = write_dag("broken", BROKEN_DAG)
    assert len(cli("dags", "list-import-errors", "-o", "json").json()) == 1
    broken.unlink()
    assert cli("dags", "list-import-errors", "-o", "json").json() == []


def test_dag_of_a_deleted_file_leaves_dags_list(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    other = write_dag("other", SMALL_DAG.replace('"small"', '"other"'))
    assert [r["dag_id"] for r in cli("dags", "list", "-o", "json").json()] == ["other", "small"]
    other.unlink()
    assert [r["dag_id"] for r in cli("dags", "list", "-o", "json").json()] == ["small"]


def test_dags_pause_and_unpause(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    paused = cli("dags", "pause", "small")
    assert paused.code == 0, paused.err
    assert "paused: True" in paused.out
    assert cli("dags", "list", "-o", "json").json()[0]["is_paused"] is True

    unpaused = cli("dags", "unpause", "small")
    assert unpaused.code == 0, unpaused.err
    assert cli("dags", "list", "-o", "json").json()[0]["is_paused"] is False

    assert_user_error(cli("dags", "pause", "nope"), "DAG 'nope'")


def test_dags_show(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    rows = cli("dags", "show", "small", "-o", "json").json()
    assert [(r["task_id"], r["operator"], r["upstream"], r["downstream"]) for r in rows] == [
        ("say", "BashOperator", [], ["py"]),
        ("py", "PythonOperator", ["say"], ["done"]),
        ("done", "EmptyOperator", ["py"], []),
    ]
    assert {r["trigger_rule"] for r in rows} == {"all_success"}
    table = cli("dags", "show", "small")
    assert table.code == 0 and "PythonOperator" in table.out
    assert_user_error(cli("dags", "show", "nope"), "DAG 'nope'", "known: small")


# -- trigger and runs ------------------------------------------------------------------------------------------


def test_trigger_unknown_dag(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    assert_user_error(cli("trigger", "nope"), "DAG 'nope'", "known: small")


@pytest.mark.parametrize(
    ("conf", "fragments"),
    [("not json", ["--conf", "not valid JSON"]), ("[1, 2]", ["--conf", "JSON object", "list"])],
)
def test_trigger_bad_conf(cli: Cli, home: Path, write_dag: Callable[[str, str], Path], conf: str,
                          fragments: list[str]) -> None:
    write_dag("small", SMALL_DAG)
    assert_user_error(cli("trigger", "small", "--conf", conf), *fragments)
    assert cli("runs", "list", "-o", "json").json() == []


def test_trigger_bad_logical_date(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    assert_user_error(cli("trigger", "small", "--logical-date", "notadate"), "--logical-date", "'notadate'")
    assert cli("runs", "list", "-o", "json").json() == []


def test_trigger_without_wait_then_runs_list(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    triggered = cli("trigger", "small", "--logical-date", "2024-01-02", "--conf", '{"day": "monday"}')
    assert triggered.code == 0, triggered.err
    run_id = "manual__2024-01-02T00:00:00+00:00"
    assert run_id in triggered.out

    (row,) = cli("runs", "list", "-o", "json").json()
    assert {"dag_id", "run_id", "run_type", "state", "logical_date", "start_date", "end_date",
            "data_interval_start", "data_interval_end", "conf"} <= set(row)
    assert (row["dag_id"], row["run_id"], row["run_type"], row["state"]) == ("small", run_id, "manual", "queued")
    assert row["logical_date"] == "2024-01-02T00:00:00+00:00"
    assert row["data_interval_start"] == "2024-01-01T00:00:00+00:00"
    assert row["data_interval_end"] == "2024-01-02T00:00:00+00:00"
    assert row["conf"] == {"day": "monday"}
    assert row["start_date"] is None and row["end_date"] is None

    assert cli("runs", "list", "small", "-o", "json").json() == [row]
    assert cli("runs", "list", "--state", "success", "-o", "json").json() == []
    assert_user_error(cli("runs", "list", "nope"), "DAG 'nope'")
    assert_user_error(cli("trigger", "small", "--run-id", run_id), f"run_id '{run_id}'", "--run-id")


def test_tasks_states_of_a_queued_run(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    assert cli("trigger", "small", "--run-id", "r1").code == 0
    rows = cli("tasks", "states", "small", "r1", "-o", "json").json()
    assert {"dag_id", "run_id", "task_id", "state", "try_number", "max_tries", "operator", "start_date",
            "end_date", "duration", "error"} <= set(rows[0])
    assert sorted((r["task_id"], r["state"], r["try_number"], r["operator"]) for r in rows) == [
        ("done", "none", 0, "EmptyOperator"),
        ("py", "none", 0, "PythonOperator"),
        ("say", "none", 0, "BashOperator"),
    ]
    assert_user_error(cli("tasks", "states", "small", "no_such_run"), "no run 'no_such_run'")
    assert_user_error(cli("logs", "small", "r1", "say"), "has not started yet")


def test_trigger_wait_success_with_local_executor(cli: Cli, home: Path, settings: Settings,
                                                  write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    result = cli("trigger", "small", "--run-id", "ok", "--wait")
    assert result.code == 0, (result.out, result.err)
    assert "finished: success" in result.out

    (run,) = cli("runs", "list", "-o", "json").json()
    assert run["state"] == "success" and run["end_date"] is not None
    rows = cli("tasks", "states", "small", "ok", "-o", "json").json()
    assert {(r["task_id"], r["state"], r["try_number"], r["executor"]) for r in rows} == {
        ("say", "success", 1, "local"), ("py", "success", 1, "local"), ("done", "success", 1, "local"),
    }
    folder = settings.resolved_log_folder
    assert "bash-says-hi" in task_log_path(folder, "small", "ok", "say", 1).read_text()
    assert "hello from python" in task_log_path(folder, "small", "ok", "py", 1).read_text()


def test_trigger_wait_ends_a_run_at_its_dagrun_timeout_killing_what_its_task_started(
        cli: Cli, home: Path, settings: Settings, write_dag: Callable[[str, str], Path], tmp_path: Path) -> None:
    """A real task process (local executor) whose command would run a minute: the run fails after the DAG's
    dagrun_timeout, the task is skipped, and the process it started is gone. (The limit leaves a loaded machine
    time to start the task before the run times out.)"""
    pid_file = tmp_path / "sleeper.pid"
    write_dag("bounded", f"""
        from datetime import datetime, timedelta
        from sparkflow import DAG, BashOperator

        with DAG("bounded", start_date=datetime(2024, 1, 1), dagrun_timeout=timedelta(seconds=5)) as dag:
            BashOperator(task_id="sleepy", bash_command="sleep 60 & echo $! > {pid_file}; wait")
    """)
    started = time.monotonic()
    result = cli("trigger", "bounded", "--run-id", "slow", "--wait")
    assert result.code == 1, (result.out, result.err)
    assert time.monotonic() - started < 40  # the five-second limit, the kill and its grace; not the minute
    assert "finished: failed" in result.out
    assert "timed out: the run exceeded its DAG's dagrun_timeout of 0:00:05; its unfinished tasks were skipped" \
        in result.err
    (row,) = cli("tasks", "states", "bounded", "slow", "-o", "json").json()
    assert row["state"] == "skipped"
    sleeper = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while process_alive(sleeper):
        assert time.monotonic() < deadline, f"process {sleeper} started by the task still runs"
        time.sleep(0.1)
    log = task_log_path(settings.resolved_log_folder, "bounded", "slow", "sleepy", 1).read_text()
    assert "dagrun_timeout of 0:00:05; the scheduler skipped the task (process group" in log


@pytest.mark.parametrize("executor", ["sequential", "local"])
def test_trigger_wait_failure_exits_1(cli: Cli, home: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                      write_dag: Callable[[str, str], Path], executor: str) -> None:
    monkeypatch.setenv("SPARKFLOW_EXECUTOR", executor)
    write_dag("failing", FAILING_DAG)
    result = cli("trigger", "failing", "--run-id", "bad", "--wait")
    assert result.code == 1, (result.out, result.err)
    assert "finished: failed" in result.out
    assert "boom: failed" in result.err
    assert "Traceback" not in result.err

    (run,) = cli("runs", "list", "-o", "json").json()
    assert run["state"] == "failed"
    states = {r["task_id"]: r for r in cli("tasks", "states", "failing", "bad", "-o", "json").json()}
    assert states["boom"]["state"] == "failed"
    assert states["boom"]["error"]
    assert states["after"]["state"] == "upstream_failed"
    assert "about-to-fail" in task_log_path(settings.resolved_log_folder, "failing", "bad", "boom", 1).read_text()


def test_tasks_test_runs_a_task_and_records_nothing(cli: Cli, home: Path, settings: Settings,
                                                    write_dag: Callable[[str, str], Path]) -> None:
    write_dag("small", SMALL_DAG)
    result = cli("tasks", "test", "small", "py")
    assert result.code == 0, (result.out, result.err)
    assert "hello from python" in result.out
    assert "XCom return_value: 42" in result.out
    assert "Task py success" in result.out

    bash = cli("tasks", "test", "small", "say", "2024-01-01")
    assert bash.code == 0, bash.err
    assert "bash-says-hi" in bash.out

    assert cli("runs", "list", "-o", "json").json() == []
    assert not (settings.resolved_log_folder / "dag_id=small").exists()


def test_tasks_test_failing_task_exits_1(cli: Cli, home: Path, write_dag: Callable[[str, str], Path]) -> None:
    write_dag("failing", FAILING_DAG)
    result = cli("tasks", "test", "failing", "boom")
    assert result.code == 1
    assert "Task boom failed" in result.out
    assert cli("runs", "list", "-o", "json").json() == []


def test_logs_after_a_wait_run(cli: Cli, home: Path, monkeypatch: pytest.MonkeyPatch,
                               write_dag: Callable[[str, str], Path]) -> None:
    monkeypatch.setenv("SPARKFLOW_EXECUTOR", "sequential")
    write_dag("small", SMALL_DAG)
    assert cli("trigger", "small", "--run-id", "r1", "--wait").code == 0

    say = cli("logs", "small", "r1", "say")
    assert say.code == 0, say.err
    assert "bash-says-hi" in say.out
    assert "Marking task as SUCCESS" in say.out
    assert "hello from python" in cli("logs", "small", "r1", "py", "--try", "1").out

    assert_user_error(cli("logs", "small", "r1", "say", "--try", "5"), "--try 5", "out of range", "1..1")
    assert_user_error(cli("logs", "small", "r1", "nope"), "task 'nope'", "r1")
