"""Spark Declarative Pipelines commands, built by pure functions as the provider's SparkPipelinesHook builds them.

- A ``spark`` connection with a local or standalone master: ``spark-pipelines run|dry-run --spec SPEC --remote
  MASTER`` followed by spark-submit's other common flags (see build_pipelines_argv); the launcher runs the
  pipeline in a driver of its own on that master.
- A ``spark_connect`` connection: ``python -m pyspark.pipelines.cli run|dry-run --spec SPEC`` with ``SPARK_REMOTE``
  set to the connection's URL (the launcher would start a JVM and refuse a remote with a master, as the provider
  notes).

On the launcher's path the pipeline's driver is not the launcher's JVM: the launcher runs the pipelines CLI, which
starts a driver JVM of its own (pyspark-shell, logging at WARN, so it prints no ids). The launcher hands its Spark
conf to the CLI in groups of ten environment variables of which pyspark keeps only the last
(``PYSPARK_REMOTE_INIT_CONF_*``), so most of the try's conf would be lost; ``PYSPARK_SUBMIT_ARGS`` ends the
command that starts that driver (later flags win), so the try's flags go there too (driver_submit_args), with a
UI port of the try's own (driver_conf): sparkflow then knows where the driver's UI is without a line that says so.
The driver serves Spark Connect to the CLI on port 15002 of this machine (the CLI dials ``sc://localhost``), so
one such pipeline runs on a machine at a time.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import replace

from sparkflow.exceptions import UserError
from sparkflow.spark.command import build_spark_submit_argv
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget

PIPELINE_COMMANDS = ("run", "dry-run")
PIPELINES_BINARY = "spark-pipelines"
# The pipelines CLI starts its in-driver Connect server on the --remote master only in Connect API mode (otherwise
# it takes a remote that is not local[...] for an sc:// address).
PIPELINES_ENV = {"SPARK_API_MODE": "connect"}
DRIVER_SUBMIT_ARGS = "PYSPARK_SUBMIT_ARGS"  # pyspark's launch_gateway appends it to the driver's spark-submit
UI_PORT = "spark.ui.port"


def build_pipelines_argv(command: str, pipeline_spec: str | None, spec: SparkSubmitSpec, target: SparkTarget,
                         binary_path: str | None = None) -> list[str]:
    """argv for the spark-pipelines launcher (``spec`` holds the spark-submit options). The launcher of Spark 4
    runs the pipeline in a driver that serves Spark Connect to the pipelines CLI, and takes the master as
    ``--remote`` (it refuses ``--master`` and ``--deploy-mode``: "Remote cannot be specified with master and/or
    deploy mode"): a local master, or a standalone one in client mode (with PIPELINES_ENV, the CLI's driver then
    connects to that master). ``--name`` would reach the pipelines CLI, which refuses it."""
    manager = target.cluster_manager
    if manager not in ("local", "standalone") or target.cluster_mode is not None:
        raise UserError(
            f"spark-pipelines runs pipelines with a local or standalone master in client mode only (got master "
            f"{target.master!r}{', deploy mode cluster' if target.cluster_mode else ''}); use a spark_connect "
            "connection to run the pipeline on a server backed by that master"
        )
    return [binary_path or PIPELINES_BINARY, command, *(["--spec", pipeline_spec] if pipeline_spec else []),
            "--remote", target.master, *pipelines_submit_flags(spec, target)]


def pipelines_submit_flags(spec: SparkSubmitSpec, target: SparkTarget) -> list[str]:
    """spark-submit's flags of ``spec`` but the master, deploy mode and name (the launcher refuses them)."""
    common = build_spark_submit_argv(replace(spec, application="", application_args=()), target)[1:-1]
    kept: list[str] = []
    flags = iter(common)
    for flag in flags:
        if flag in ("--master", "--deploy-mode", "--name"):  # the master goes as --remote; the spec names it
            next(flags, None)  # and its value
        else:
            kept.append(flag)
    return kept


def driver_submit_args(flags: list[str], user_value: str | None = None) -> str:
    """PYSPARK_SUBMIT_ARGS that give the pipeline's driver JVM every one of ``flags`` (module docstring); a
    user's own value (env_vars) follows them, so its flags win and it names the primary resource."""
    return " ".join([shlex.join(flags), user_value or "pyspark-shell"]).strip()


def driver_conf(conf: Mapping[str, str], ui_port: int, ui_host: str = "127.0.0.1") -> tuple[dict[str, str], str | None]:
    """(conf to add, the URL of the driver's UI) for a pipeline driver on this machine: its UI on ``ui_port``
    unless the user chose a port or turned the UI off (then the URL is theirs, or None when unknown)."""
    if str(conf.get("spark.ui.enabled", "true")).strip().lower() == "false":
        return {}, None
    chosen = str(conf.get(UI_PORT, "")).strip()
    if chosen:
        return {}, (f"http://{ui_host}:{chosen}" if chosen.isdigit() and chosen != "0" else None)
    return {UI_PORT: str(ui_port)}, f"http://{ui_host}:{ui_port}"


def build_connect_pipelines_argv(command: str, pipeline_spec: str | None, python: str = sys.executable) -> list[str]:
    """argv for the Connect-native pipelines CLI (the server comes from SPARK_REMOTE)."""
    return [python, "-m", "pyspark.pipelines.cli", command, *(["--spec", pipeline_spec] if pipeline_spec else [])]


def with_user_id(url: str, user_id: str) -> str:
    """The sc:// URL with ``user_id`` set (replacing one given), so the server tags the run's jobs with it."""
    base, _, params = url.partition("/;")
    kept = [p for p in params.split(";") if p and not p.startswith("user_id=")] if params else []
    return f"{base.rstrip('/')}/;" + ";".join([f"user_id={user_id}", *kept])


def run_user_id(dag_id: str, task_id: str, try_number: int) -> str:
    """A Connect user id naming one try (letters, digits, '-' and '_' only: it goes into URLs and job tags)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"sparkflow-{dag_id}-{task_id}-try{try_number}")
