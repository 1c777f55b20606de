"""Shared fixtures: an isolated sparkflow home per test, an initialised metastore, DAG files written on the fly."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkflow.metastore.bootstrap import Metastore, init_metastore
from sparkflow.settings import Settings, load_settings


@pytest.fixture
def sf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SPARKFLOW_HOME and SPARKFLOW_DAGS_FOLDER under tmp_path; no SPARKFLOW_* leaks in from the outside."""
    for name in list(os.environ):
        if name.startswith(("SPARKFLOW_", "AIRFLOW_CONN_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    dags = tmp_path / "dags"
    dags.mkdir()
    monkeypatch.setenv("SPARKFLOW_HOME", str(home))
    monkeypatch.setenv("SPARKFLOW_DAGS_FOLDER", str(dags))
    # Tests start from an empty connection table; tests of Airflow's default connections turn this back on.
    monkeypatch.setenv("SPARKFLOW_LOAD_DEFAULT_CONNECTIONS", "false")
    return home


@pytest.fixture
def settings(sf_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def metastore(settings: Settings) -> Metastore:
    ms = init_metastore(settings)
    yield ms
    ms.db.dispose()


@pytest.fixture
def write_dag(settings: Settings) -> Callable[[str, str], Path]:
    """write_dag("name", code) writes dags/name.py (dedented) and returns its path."""

    def write(name: str, code: str) -> Path:
        path = settings.resolved_dags_folder / f"{name}.py"
        path.write_text(textwrap.dedent(code))
        return path

    return write
