"""A REST fuzz pass from the OpenAPI schema (issue 21): schemathesis generates requests for every operation of
`/api/v1/openapi.json` and sends them to a real `sparkflow webserver` on loopback; none may answer 5xx.

Bounded: FUZZ_EXAMPLES cases per operation (a few hundred in all), derandomized so a CI failure reproduces."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sparkflow.settings import Settings
from sparkflow.web.app import create_app
from tests.web_support import RunningServer, webserver

FUZZ_EXAMPLES = 15


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with webserver(tmp_path_factory.mktemp("api-fuzz")) as running:
        running.token = running.cli("users", "token", "admin").stdout.strip()  # type: ignore[attr-defined]
        yield running


def _openapi_document() -> dict:  # type: ignore[type-arg]
    """The schema the server serves (it depends on no data: an app on no metastore makes the same one)."""
    home = Path(tempfile.mkdtemp(prefix="sparkflow-openapi-"))
    try:
        return create_app(Settings(home=home), None, secret_key="k" * 32).openapi()  # type: ignore[arg-type]
    finally:
        shutil.rmtree(home, ignore_errors=True)


schema = schemathesis.openapi.from_dict(_openapi_document())


def test_the_served_schema_is_the_fuzzed_one(fuzz_server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {fuzz_server.token}"}  # type: ignore[attr-defined]
    served = httpx.get(f"{fuzz_server.url}/api/v1/openapi.json", headers=headers, timeout=30).json()
    assert served["paths"] == _openapi_document()["paths"]


@schema.parametrize()
@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_no_operation_answers_5xx(case, fuzz_server: RunningServer) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {fuzz_server.token}"}  # type: ignore[attr-defined]
    response = case.call(base_url=fuzz_server.url, headers=headers, timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])
