"""`sparkflow users create|list|token` and the webserver's argument checks (the server itself runs in the browser
tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sparkflow.cli import main
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import open_metastore
from sparkflow.settings import load_settings
from sparkflow.web.auth import token_hash, verify_password

pytestmark = pytest.mark.parametrize("db_backend", ["sqlite"], indirect=True)


def test_users_create_list_token(sf_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    assert main(["users", "create", "--username", "ann", "--password", "long-enough-1", "--role", "op"]) == 0
    assert main(["users", "create", "--username", "ann", "--password", "long-enough-1"]) == 2  # exists
    assert main(["users", "create", "--username", "bob", "--password", "short"]) == 2
    assert main(["users", "create", "--username", "bad name", "--password", "long-enough-1"]) == 2
    assert main(["users", "create", "--username", "eve", "--password", "long-enough-1", "--role", "root"]) == 2
    capsys.readouterr()
    assert main(["users", "list", "-o", "json"]) == 0
    assert [(u["username"], u["role"]) for u in json.loads(capsys.readouterr().out)] == [("ann", "op")]
    assert main(["users", "token", "ann"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sf_") and len(token) > 40
    ms = open_metastore(load_settings())
    user = queries.find_user_by_token(ms.db, token_hash(token))
    assert user is not None and user.username == "ann"
    assert verify_password("long-enough-1", user.password_hash) and "long-enough-1" not in user.password_hash
    assert main(["users", "token", "nobody"]) == 2
    ms.db.dispose()


def test_webserver_rejects_bad_host(sf_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "init"]) == 0
    assert main(["webserver", "--host", "not a host"]) == 2
    assert "--host" in capsys.readouterr().err
    assert main(["webserver", "--port", "0"]) == 2
