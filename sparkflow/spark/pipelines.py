"""Spark Declarative Pipelines commands, built by pure functions as the provider's SparkPipelinesHook builds them.

- A ``spark`` connection with a local or standalone master: ``spark-pipelines run|dry-run --spec SPEC --remote
  MASTER`` followed by spark-submit's other common flags (see build_pipelines_argv); the launcher runs the
  pipeline in a driver of its own on that master.
- A ``spark_connect`` connection: ``python -m pyspark.pipelines.cli run|dry-run --spec SPEC`` with ``SPARK_REMOTE``
  set to the connection's URL (the launcher would start a JVM and refuse a remote with a master, as the provider
  notes).
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace

from sparkflow.exceptions import UserError
from sparkflow.spark.command import build_spark_submit_argv
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget

PIPELINE_COMMANDS = ("run", "dry-run")
PIPELINES_BINARY = "spark-pipelines"
# The pipelines CLI starts its in-driver Connect server on the --remote master only in Connect API mode (otherwise
# it takes a remote that is not local[...] for an sc:// address).
PIPELINES_ENV = {"SPARK_API_MODE": "connect"}


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
    common = build_spark_submit_argv(replace(spec, application="", application_args=()), target)[1:-1]
    kept: list[str] = []
    flags = iter(common)
    for flag in flags:
        if flag in ("--master", "--deploy-mode", "--name"):  # the master goes as --remote; the spec names it
            next(flags, None)  # and its value
        else:
            kept.append(flag)
    return [binary_path or PIPELINES_BINARY, command, *(["--spec", pipeline_spec] if pipeline_spec else []),
            "--remote", target.master, *kept]


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
