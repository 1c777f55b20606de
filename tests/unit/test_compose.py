"""docker-compose.spark.yml cannot be started here (no Docker engine): check its structure instead. Services, images,
published ports (loopback only), dependencies with health conditions, health checks, mounts, and an environment
whose every SPARKFLOW_* name is a sparkflow setting that loads (the Celery executor on PostgreSQL and Redis)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from sparkflow.cli import cli
from sparkflow.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.spark.yml"
SPARKFLOW_SERVICES = ("sparkflow-init", "scheduler", "webserver", "sparkflow-worker")
LONG_RUNNING = ("spark-master", "spark-worker-1", "spark-worker-2", "postgres", "redis", "scheduler", "webserver",
                "sparkflow-worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_services_and_images(compose) -> None:  # type: ignore[no-untyped-def]
    svc = services(compose)
    assert set(svc) == {"spark-master", "spark-worker-1", "spark-worker-2", "postgres", "redis", *SPARKFLOW_SERVICES}
    assert svc["postgres"]["image"].startswith("postgres:") and svc["redis"]["image"].startswith("redis:")
    for name in ("spark-master", "spark-worker-1", "spark-worker-2", *SPARKFLOW_SERVICES):
        # Spark runs from sparkflow's image (pyspark's spark-class): drivers and executors share one Python.
        assert svc[name]["image"] == "sparkflow:local", name
        assert "pip install" in svc[name]["build"]["dockerfile_inline"] and "openjdk-17" in \
            svc[name]["build"]["dockerfile_inline"]
    assert svc["redis"]["command"][-4:] == ["--save", "", "--appendonly", "no"]


def test_ports_are_published_on_loopback_only(compose) -> None:  # type: ignore[no-untyped-def]
    published = {}
    for name, service in services(compose).items():
        for port in service.get("ports", []):
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", (name, port)
            published[int(host_port)] = (name, int(container_port))
    assert published == {8080: ("spark-master", 8080), 7077: ("spark-master", 7077), 6066: ("spark-master", 6066),
                         5432: ("postgres", 5432), 6379: ("redis", 6379), 8088: ("webserver", 8080)}


def test_spark_master_has_its_rest_server_and_workers_join_it(compose) -> None:  # type: ignore[no-untyped-def]
    svc = services(compose)
    assert "spark.master.rest.enabled true" in " ".join(svc["spark-master"]["entrypoint"])
    assert "spark.master.rest.port 6066" in " ".join(svc["spark-master"]["entrypoint"])
    assert svc["spark-master"]["command"][:2] == ["spark-class", "org.apache.spark.deploy.master.Master"]
    for worker in ("spark-worker-1", "spark-worker-2"):
        assert svc[worker]["command"][:3] == ["spark-class", "org.apache.spark.deploy.worker.Worker",
                                              "spark://spark-master:7077"]
    conns = yaml.safe_load((ROOT / "conf" / "connections.compose.yaml").read_text())
    assert conns["spark_local"]["host"] == "spark://spark-master" and conns["spark_local"]["port"] == 7077


def test_dependencies_wait_for_health_and_the_one_shot_init(compose) -> None:  # type: ignore[no-untyped-def]
    svc = services(compose)
    for name, service in svc.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in svc, f"{name} depends on undefined service {target}"
            expected = "service_completed_successfully" if target == "sparkflow-init" else "service_healthy"
            assert condition == {"condition": expected}, (name, target)
            if expected == "service_healthy":
                assert "healthcheck" in svc[target], target
    for name in ("scheduler", "webserver", "sparkflow-worker"):
        assert "sparkflow-init" in svc[name]["depends_on"] and "postgres" in svc[name]["depends_on"]
    for name in ("scheduler", "sparkflow-worker"):
        assert {"redis", "spark-master"} <= set(svc[name]["depends_on"])
    assert set(svc["sparkflow-init"]["depends_on"]) == {"postgres"}
    assert svc["sparkflow-init"]["restart"] == "no"
    for name in ("spark-worker-1", "spark-worker-2"):
        assert svc[name]["depends_on"] == {"spark-master": {"condition": "service_healthy"}}
    for name in LONG_RUNNING:
        check = svc[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"] and check["retries"] >= 3, name


def test_sparkflow_commands_exist(compose) -> None:  # type: ignore[no-untyped-def]
    svc = services(compose)
    init = svc["sparkflow-init"]["command"]
    assert init[:2] == ["sh", "-c"] and "sparkflow db init && sparkflow connections import" in init[2]
    assert "/opt/sparkflow/conf/connections.compose.yaml" in init[2]
    commands = [shlex.split(part)[1:] for part in init[2].split("&&")]
    commands += [svc[name]["command"][1:] for name in ("scheduler", "webserver", "sparkflow-worker")]
    for args in commands:
        group = cli
        for word in args:
            if word.startswith("-"):
                break
            found = group.get_command(click.Context(group), word)  # type: ignore[attr-defined]
            assert found is not None, f"`sparkflow {' '.join(args)}`: no command {word!r}"
            group = found
    assert svc["sparkflow-worker"]["command"][1:4] == ["worker", "--queues", "default"]


def test_environment_names_sparkflow_settings_that_load(compose) -> None:  # type: ignore[no-untyped-def]
    svc = services(compose)
    fields = {name.upper() for name in Settings.__dataclass_fields__}
    for name in SPARKFLOW_SERVICES:
        env = svc[name]["environment"]
        unknown = [k for k in env if k.startswith("SPARKFLOW_") and k.removeprefix("SPARKFLOW_") not in fields
                   and not k.startswith("SPARKFLOW_CONN_")]
        assert not unknown, (name, unknown)
        resolved = {k: re.sub(r"\$\{SPARKFLOW_FERNET_KEY:\?[^}]*\}", "a" * 43 + "=", str(v)) for k, v in env.items()}
        settings = load_settings(resolved)
        assert settings.executor == "celery"
        assert settings.resolved_db_url == "postgresql+psycopg://sparkflow:sparkflow@postgres:5432/sparkflow"
        assert settings.celery_broker_url == "redis://redis:6379/0"
        assert settings.celery_result_backend == "redis://redis:6379/1"
        assert settings.celery_default_queue == "default" and settings.celery_worker_concurrency == 4
        assert str(settings.resolved_dags_folder) == "/opt/sparkflow/jobs"
        # Logs written by workers are read by the CLI and the web server: one shared volume holds them.
        assert str(settings.resolved_log_folder).startswith("/opt/sparkflow/home")
        assert "sparkflow-home:/opt/sparkflow/home" in svc[name]["volumes"]
        assert "./jobs:/opt/sparkflow/jobs:ro" in svc[name]["volumes"]
    for name in ("spark-worker-1", "spark-worker-2"):  # executors read and write the driver's paths
        assert "sparkflow-home:/opt/sparkflow/home" in svc[name]["volumes"]
    assert set(compose["volumes"]) == {"sparkflow-home", "postgres-data"}
