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
# Spark 4 logs "Start Jetty 127.0.0.1:4040 for SparkUI" *before* binding (the port may still move to 4041 when 4040
# is taken), then "Successfully started service 'SparkUI' on port 4041.": the host comes from the first line, the
# port from the second. Spark 3 logs "Bound SparkUI to 0.0.0.0, and started at URL"; spark-sql "Spark Web UI
# available at URL".
_UI_HOST = re.compile(r"Start Jetty (\S+):\d+ for SparkUI")
_UI_PORT = re.compile(r"Successfully started service 'SparkUI' on port (\d+)")
_UI_URL = re.compile(r"(?:Bound SparkUI to \S+, and started at|Spark Web UI available at) (https?://\S+)")


@dataclass(frozen=True)
class SparkIds:
    """What one line of spark-submit output tells (None when the line says nothing of it)."""

    app_id: str | None = None
    driver_id: str | None = None
    ui_url: str | None = None
    ui_host: str | None = None
    ui_port: int | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.app_id, self.driver_id, self.ui_url, self.ui_host, self.ui_port))


def parse_ids(line: str) -> SparkIds:
    app = _APP_ID.search(line)
    driver = _DRIVER_ID.search(line)
    host = _UI_HOST.search(line)
    port = _UI_PORT.search(line)
    url = _UI_URL.search(line)
    return SparkIds(
        app_id=app.group(1) if app else None,
        driver_id=driver.group(1) if driver else None,
        ui_url=url.group(1).rstrip(".") if url else None,
        ui_host=host.group(1) if host else None,
        ui_port=int(port.group(1)) if port else None,
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
    """The child's environment. As in the provider, env_vars go into spark-submit's own environment except on
    Kubernetes (local and client-mode drivers get them so; on YARN they set the Hadoop/YARN client's settings)."""
    env = dict(base)
    if target.cluster_manager != "k8s":
        env.update(env_vars)
    # The driver must run the same Python as sparkflow, whatever `python3` is on PATH (pyspark picks PATH's).
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if target.cluster_manager == "local":
        # A local-mode driver talks to itself only: keep it on loopback instead of the first interface found.
        env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return env
