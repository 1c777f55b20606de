"""Which loaded modules are user code, whether they are current, and sys.modules set to one DAG's modules."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from sparkflow.runtime.user_code import UserCode, changed, files_of


@pytest.fixture
def dags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "uc_helper.py").write_text("VALUE = 1\n")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "uc_elsewhere.py").write_text("VALUE = 'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for name in ("uc_helper", "uc_elsewhere"):
        sys.modules.pop(name, None)


def test_user_modules_are_those_from_the_dag_folder_and_from_paths_outside_the_interpreters(dags: Path) -> None:
    user = UserCode(dags)
    helper, elsewhere = importlib.import_module("uc_helper"), importlib.import_module("uc_elsewhere")
    assert user.is_user("uc_helper", helper) and user.is_user("uc_elsewhere", elsewhere)
    assert not user.is_user("json", json) and not user.is_user("pytest", pytest)
    assert set(user.loaded()) == {"uc_helper", "uc_elsewhere"}


def test_an_edited_file_is_not_current_and_install_leaves_only_the_given_modules(dags: Path) -> None:
    user = UserCode(dags)
    helper = importlib.import_module("uc_helper")
    importlib.import_module("uc_elsewhere")
    files = files_of({"uc_helper": helper})
    assert changed(files) == []
    (dags / "uc_helper.py").write_text("VALUE = 22\n")
    assert changed(files) == [str(dags / "uc_helper.py")]
    user.install({"uc_helper": helper})
    assert "uc_elsewhere" not in sys.modules and sys.modules["uc_helper"] is helper
    user.forget()
    assert importlib.import_module("uc_helper").VALUE == 22  # imported again, from the file as it is now


def test_installing_the_same_modules_again_still_drops_what_a_try_imported_since(dags: Path) -> None:
    user = UserCode(dags)
    helper = importlib.import_module("uc_helper")
    user.install({"uc_helper": helper})
    user.install({"uc_helper": helper})  # nothing changed: nothing to do
    assert sys.modules["uc_helper"] is helper
    importlib.import_module("uc_elsewhere")  # what the try imported
    user.install({"uc_helper": helper})
    assert "uc_elsewhere" not in sys.modules and sys.modules["uc_helper"] is helper
    sys.modules.pop("uc_helper")  # a try that dropped the module
    user.install({"uc_helper": helper})
    assert sys.modules["uc_helper"] is helper
