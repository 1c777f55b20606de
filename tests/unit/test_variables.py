"""Variables: `sparkflow variables ...`, encryption at rest, and Airflow's Variable API through the runtime lookups."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from sparkflow.cli import main
from sparkflow.compat.airflow.models import Variable, VariableNotFound
from sparkflow.definitions.context import task_environment
from sparkflow.exceptions import NotFound, SparkflowError
from sparkflow.metastore import queries
from sparkflow.metastore import schema as t
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.runtime.context import metastore_environment


@dataclass
class Result:
    code: int
    out: str
    err: str


Cli = Callable[..., Result]


@pytest.fixture
def cli(sf_home: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> Result:
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    assert run("db", "init").code == 0
    return run


def assert_user_error(result: Result, *fragments: str) -> None:
    assert result.code == 2, (result.out, result.err)
    (line,) = result.err.splitlines()
    assert line.startswith("Error: ") and "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def test_set_get_list_delete(cli: Cli) -> None:
    assert cli("variables", "set", "env", "prod", "--description", "where we run").code == 0
    assert cli("variables", "set", "cfg", '{"workers": 4}', "--json").code == 0
    assert cli("variables", "get", "env").out == "prod\n"
    assert json.loads(cli("variables", "get", "cfg", "--json").out) == {"workers": 4}
    listed = cli("variables", "list", "-o", "json")
    assert json.loads(listed.out) == [
        {"key": "cfg", "description": None}, {"key": "env", "description": "where we run"},
    ]
    assert "prod" not in listed.out  # listings show keys, never values
    assert cli("variables", "delete", "env").code == 0
    assert_user_error(cli("variables", "get", "env"), "variable 'env' does not exist", "--default")
    assert cli("variables", "get", "env", "--default", "dev").out == "dev\n"
    assert_user_error(cli("variables", "delete", "env"), "variable 'env' does not exist", "variables list")


def test_bad_input_is_one_line_naming_the_fix(cli: Cli) -> None:
    assert_user_error(cli("variables", "set", "cfg", "{nope", "--json"), "variable 'cfg'", "not valid JSON", "--json")
    assert_user_error(cli("variables", "set", " ", "x"), "variable key ' ' is invalid")
    assert cli("variables", "set", "plain", "text").code == 0
    assert_user_error(cli("variables", "get", "plain", "--json"), "variable 'plain' is not valid JSON")


def test_values_are_encrypted_at_rest(cli: Cli, metastore: Metastore) -> None:
    assert cli("variables", "set", "password_var", "hunter2-secret").code == 0
    with metastore.db.read() as conn:
        stored = conn.execute(select(t.variable.c.val).where(t.variable.c.key == "password_var")).scalar_one()
    assert "hunter2" not in stored
    assert queries.get_variable(metastore.db, "password_var", metastore.secrets) == "hunter2-secret"


def test_import_is_all_or_nothing(cli: Cli, tmp_path: Path) -> None:
    good = tmp_path / "vars.json"
    good.write_text(json.dumps({
        "s": "text", "n": 3, "obj": {"a": [1, 2]}, "described": {"value": "v", "description": "d"},
    }))
    imported = cli("variables", "import", str(good))
    assert imported.code == 0, imported.err
    assert "Imported 4 variable(s)" in imported.out
    assert cli("variables", "get", "n").out == "3\n"
    assert json.loads(cli("variables", "get", "obj").out) == {"a": [1, 2]}
    assert cli("variables", "get", "described").out == "v\n"

    bad = tmp_path / "bad.json"
    bad.write_text('{"new_one": "x", "": "empty key"}')
    assert_user_error(cli("variables", "import", str(bad)), str(bad), "variable key '' is invalid")
    assert_user_error(cli("variables", "get", "new_one"), "variable 'new_one' does not exist")

    broken = tmp_path / "broken.json"
    broken.write_text('{"a": ')
    assert_user_error(cli("variables", "import", str(broken)), str(broken), "not valid JSON")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert_user_error(cli("variables", "import", str(listed)), "must hold a JSON object", "list")
    assert_user_error(cli("variables", "import", str(tmp_path / "missing.json")), "cannot be read")


def test_export_then_import(cli: Cli, tmp_path: Path) -> None:
    cli("variables", "set", "a", "1")
    cli("variables", "set", "b", '{"k": "v"}')
    out = tmp_path / "out.json"
    assert cli("variables", "export", str(out)).code == 0
    assert json.loads(out.read_text()) == {"a": 1, "b": {"k": "v"}}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    cli("variables", "delete", "a")
    assert cli("variables", "import", str(out)).code == 0
    assert cli("variables", "get", "a").out == "1\n"


def test_missing_variable_message_names_an_existing_command(cli: Cli) -> None:
    with task_environment(None, None, {}.get), pytest.raises(NotFound) as info:
        Variable.get("absent")
    assert "`sparkflow variables set absent VALUE`" in str(info.value)


# -- Airflow's Variable API ----------------------------------------------------------------------------------


def test_variable_get_and_set_through_the_metastore(metastore: Metastore) -> None:
    metastore.variables.set_variable("cfg", '{"batch": 2}')
    with metastore_environment(metastore):
        assert Variable.get("cfg") == '{"batch": 2}'
        assert Variable.get("cfg", deserialize_json=True) == {"batch": 2}
        assert Variable.get("nope", default_var=None) is None
        assert Variable.get("nope", default="af3") == "af3"
        with pytest.raises(KeyError):  # Airflow code catches KeyError
            Variable.get("nope")
        Variable.set("n", 5)
        Variable.set("obj", {"x": [1]}, serialize_json=True, description="an object")
        assert Variable.get("obj", deserialize_json=True) == {"x": [1]}
        assert Variable.setdefault("fresh", "first") == "first"
        assert Variable.setdefault("fresh", "second") == "first"
        Variable.delete("n")
    assert queries.get_variable(metastore.db, "n", metastore.secrets) is None
    records = {v.key: v for v in queries.list_variables(metastore.db, metastore.secrets)}
    assert records["obj"].description == "an object" and records["obj"].val == '{"x": [1]}'


def test_variable_without_a_metastore_says_so() -> None:
    with pytest.raises(VariableNotFound, match="no metastore is reachable"):
        Variable.get("anything")
    assert Variable.get("anything", default_var="d") == "d"
    with pytest.raises(SparkflowError, match=r"cannot change variable 'k' here: no metastore is reachable"):
        Variable.set("k", "v")


def test_variable_json_error_names_the_key(metastore: Metastore) -> None:
    metastore.variables.set_variable("plain", "not json")
    with metastore_environment(metastore), pytest.raises(NotFound, match="variable 'plain' is not valid JSON"):
        Variable.get("plain", deserialize_json=True)
