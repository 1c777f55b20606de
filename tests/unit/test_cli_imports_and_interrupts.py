"""Issue 21 item 15 (the rest): import files that are not UTF-8, hold a key twice or expand YAML aliases without
bound are user errors (exit 2, one line, nothing imported); two `db init` at once both succeed; Ctrl-C in
`trigger --wait` lets the running tasks finish, leaves the run going and says how to continue it, which
`trigger --run-id SAME --wait` does."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.import_files import MAX_YAML_NODES, load_yaml
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.settings import load_settings

BILLION_LAUGHS = """
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def _one_error_line(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: "), err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is parsing, not the database
def test_bad_import_files_are_user_errors_and_import_nothing(sf_home: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    latin1 = tmp_path / "conns.yaml"
    latin1.write_bytes("spark_x:\n  conn_type: spark\n  host: 'caf\xe9'\n".encode("latin-1"))
    variables = tmp_path / "vars.json"
    variables.write_bytes('{"city": "K\xf6ln"}'.encode("latin-1"))
    duplicate_yaml = tmp_path / "dup.yaml"
    duplicate_yaml.write_text("spark_x:\n  conn_type: spark\n  host: a\nspark_x:\n  conn_type: spark\n  host: b\n")
    duplicate_json = tmp_path / "dup.json"
    duplicate_json.write_text('{"spark_x": {"conn_type": "spark", "host": "a", "host": "b"}}')
    duplicate_vars = tmp_path / "dupvars.json"
    duplicate_vars.write_text('{"region": "eu", "other": 1, "region": "us"}')
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(BILLION_LAUGHS)
    capsys.readouterr()

    assert main(["connections", "import", str(latin1)]) == 2
    _one_error_line(capsys, str(latin1), "not UTF-8", "0xe9 on line 3", "save it as UTF-8")
    assert main(["variables", "import", str(variables)]) == 2
    _one_error_line(capsys, str(variables), "not UTF-8", "save it as UTF-8")
    assert main(["connections", "import", str(duplicate_yaml)]) == 2
    _one_error_line(capsys, str(duplicate_yaml), "key 'spark_x' appears more than once (line 4)")
    assert main(["connections", "import", str(duplicate_json)]) == 2
    _one_error_line(capsys, str(duplicate_json), "key 'host' appears more than once")
    assert main(["variables", "import", str(duplicate_vars)]) == 2
    _one_error_line(capsys, str(duplicate_vars), "key 'region' appears more than once")
    assert main(["connections", "import", str(laughs)]) == 2  # refused before anything walks 10^9 strings
    _one_error_line(capsys, str(laughs), f"more than {MAX_YAML_NODES} nodes")

    metastore = open_metastore(load_settings())
    try:
        assert queries.list_connections(metastore.db, None) == []
        assert queries.list_variables(metastore.db, None) == []
    finally:
        metastore.db.dispose()


def test_yaml_aliases_within_the_bound_and_merge_keys_still_load() -> None:
    text = "base: &base {conn_type: spark, host: h}\nx:\n  <<: *base\n  host: other\ny: [*base, *base]\n"
    assert load_yaml(text) == {"base": {"conn_type": "spark", "host": "h"},
                               "x": {"conn_type": "spark", "host": "other"},
                               "y": [{"conn_type": "spark", "host": "h"}] * 2}
    with pytest.raises(ValueError, match="recursive"):
        load_yaml("a: &a [1, *a]\n")


def _cli(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "sparkflow", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # SQLite is where "database is locked" came from
def test_concurrent_db_init_on_a_fresh_home(sf_home: Path) -> None:
    processes = [_cli("db", "init") for _ in range(4)]
    results = [(p.wait(timeout=120), p.communicate()) for p in processes]
    for code, (out, err) in results:
        assert code == 0 and "Metastore ready" in out, (out, err)
    key = (sf_home / "fernet.key").read_text() if (sf_home / "fernet.key").exists() else None
    assert key is None or len(key.strip()) == 44  # one whole key, written once


FOLLOWED = """
from datetime import datetime
from sparkflow import DAG, BashOperator

with DAG("long", start_date=datetime(2024, 1, 1), schedule=None):
    first = BashOperator(task_id="first", bash_command="echo first started; sleep 3; echo first done")
    second = BashOperator(task_id="second", bash_command="echo second ran")
    first >> second
"""


@pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)  # the subject is the CLI and its executor
def test_ctrl_c_in_trigger_wait_leaves_the_run_and_trigger_continues_it(
        sf_home: Path, write_dag: Callable[[str, str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    write_dag("long", FOLLOWED)
    follow = _cli("trigger", "long", "--run-id", "r1", "--wait")
    deadline = time.monotonic() + 120
    log = sf_home / "logs" / "dag_id=long" / "run_id=r1" / "task_id=first" / "attempt=1.log"
    while not (log.exists() and "first started" in log.read_text()):
        assert follow.poll() is None and time.monotonic() < deadline, follow.communicate()
        time.sleep(0.05)
    follow.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends it
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 130, (out, err)
    assert "Interrupted: letting the running tasks finish (Ctrl-C again to kill them)" in err, err
    assert "Stopped following: run 'r1' of DAG 'long' is running (1 none, 1 success)." in err, err
    assert "Continue it with `sparkflow trigger long --run-id r1 --wait`" in err, err
    assert "first done" in log.read_text()  # let finish, not killed

    capsys.readouterr()
    assert main(["trigger", "long", "--run-id", "r1", "--wait"]) == 0, capsys.readouterr()
    assert "Continuing run r1 of DAG 'long' (running)" in capsys.readouterr().out
    metastore = open_metastore(load_settings())
    try:
        tis = {ti.task_id: ti for ti in queries.task_instances(metastore.db, "long", "r1")}
        assert {t: (ti.state.value, ti.try_number) for t, ti in tis.items()} == {
            "first": ("success", 1), "second": ("success", 1)}
    finally:
        metastore.db.dispose()
    assert "first done" in log.read_text()

    assert main(["trigger", "long", "--run-id", "r1", "--wait"]) == 2  # finished: nothing to continue
    _one_error_line(capsys, "already has a run with run_id 'r1', and it is success", "choose another --run-id")
    assert main(["trigger", "long", "--run-id", "r1", "--wait", "--conf", '{"a": 1}']) == 2
    capsys.readouterr()
