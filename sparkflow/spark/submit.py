"""Running spark-submit: find the binary, prepare the environment, follow the output for the ids Spark prints."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sparkflow.exceptions import UserError
from sparkflow.spark.spec import SparkTarget

# Not \b at the start: Spark writes ids glued to "_" too ("eventlog_v2_local-1795964805692").
_APP_ID = re.compile(r"(?<![A-Za-z0-9-])(app-\d{14}-\d{4}|local-\d{13}|application_\d+_\d+|spark-[0-9a-f]{32})\b")
_DRIVER_ID = re.compile(r"\b(driver-\d{14}-\d{4})\b")
# Spark 4 logs "Start Jetty 127.0.0.1:4040 for SparkUI"; Spark 3 "Bound SparkUI to 0.0.0.0, and started at URL".
_UI_JETTY = re.compile(r"Start Jetty (\S+):(\d+) for SparkUI")
_UI_BOUND = re.compile(r"(?:Bound SparkUI to \S+, and started at|Spark Web UI available at) (https?://\S+)")


@dataclass(frozen=True)
class SparkIds:
    """Ids found in one line of spark-submit output (None when the line has none)."""

    app_id: str | None = None
    driver_id: str | None = None
    ui_url: str | None = None

    def any(self) -> bool:
        return bool(self.app_id or self.driver_id or self.ui_url)


def parse_ids(line: str) -> SparkIds:
    app = _APP_ID.search(line)
    driver = _DRIVER_ID.search(line)
    ui_url = None
    jetty = _UI_JETTY.search(line)
    bound = _UI_BOUND.search(line)
    if jetty:
        ui_url = f"http://{jetty.group(1)}:{jetty.group(2)}"
    elif bound:
        ui_url = bound.group(1).rstrip(".")
    return SparkIds(
        app_id=app.group(1) if app else None,
        driver_id=driver.group(1) if driver else None,
        ui_url=ui_url,
    )


def locate_binary(binary: str) -> str:
    """A path as given; a bare name on PATH, else next to this interpreter (a venv's bin/, where pyspark puts it)."""
    if os.sep in binary:
        if not os.access(binary, os.X_OK):
            raise UserError(f"spark binary {binary!r} is not an executable file; fix spark_binary")
        return binary
    found = shutil.which(binary)
    if found:
        return found
    beside = Path(sys.executable).parent / binary
    if os.access(beside, os.X_OK):
        return str(beside)
    raise UserError(
        f"spark binary '{binary}' was not found on PATH or in {beside.parent}; "
        "install Spark (pip install 'sparkflow[spark]') or set spark_binary to its path"
    )


def submit_environment(target: SparkTarget, env_vars: Mapping[str, str], base: Mapping[str, str]) -> dict[str, str]:
    """The child's environment. Local and client-mode drivers get env_vars directly (as in the provider)."""
    env = dict(base)
    if target.cluster_manager not in ("yarn", "k8s"):
        env.update(env_vars)
    # The driver must run the same Python as sparkflow, whatever `python3` is on PATH (pyspark picks PATH's).
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if target.cluster_manager == "local":
        # A local-mode driver talks to itself only: keep it on loopback instead of the first interface found.
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env
