"""The standalone master's REST submission server (``spark.master.rest.enabled=true``, port 6066 by default).

spark-submit refuses Python applications in standalone cluster mode ("Cluster deploy mode is currently not
supported for python applications on standalone clusters"), but the REST server itself runs them when asked for
``org.apache.spark.deploy.PythonRunner``. Tracking is by driver id: the driver state is the truth (the master's
application list says FINISHED even for an application that failed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sparkflow.exceptions import SparkSubmitFailed, UserError
from sparkflow.spark.spec import SparkSubmitSpec, SparkTarget
from sparkflow.spark.tracking import Unavailable, get_json

PYTHON_RUNNER = "org.apache.spark.deploy.PythonRunner"
DRIVER_RUNNING = frozenset({"SUBMITTED", "RUNNING", "RELAUNCHING", "UNKNOWN"})
DRIVER_FAILED = frozenset({"FAILED", "KILLED", "ERROR"})
# The environment a driver needs from the submitting side (the REST server passes only what it is given).
FORWARDED_ENV = ("SPARK_LOCAL_IP", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")


def submission_request(
    spec: SparkSubmitSpec, target: SparkTarget, spark_version: str, env: Mapping[str, str]
) -> dict[str, Any]:
    """The CreateSubmissionRequest for a Python or JVM application (pure: tests assert it whole)."""
    python = spec.application.endswith(".py")
    if not python and not spec.java_class:
        raise UserError(
            f"application {spec.application!r} needs java_class (its main class) in standalone cluster mode"
        )
    resource = spec.application if "://" in spec.application else f"file:{spec.application}"
    properties = {
        "spark.app.name": spec.name,
        "spark.master": target.master,
        "spark.submit.deployMode": "cluster",
        "spark.driver.supervise": "false",
        **spec.conf,
    }
    jars = spec.jars if python else ",".join(j for j in (resource, spec.jars) if j)
    for key, value in (
        ("spark.driver.memory", spec.driver_memory),
        ("spark.executor.memory", spec.executor_memory),
        ("spark.executor.cores", spec.executor_cores),
        ("spark.cores.max", spec.total_executor_cores),
        ("spark.submit.pyFiles", spec.py_files),
        ("spark.files", spec.files),
        ("spark.jars", jars),
        ("spark.jars.packages", spec.packages),
        ("spark.jars.excludes", spec.exclude_packages),
        ("spark.jars.repositories", spec.repositories),
        ("spark.archives", spec.archives),
        ("spark.driver.extraClassPath", spec.driver_class_path),
    ):
        if value:
            properties.setdefault(key, str(value))
    environment = {"SPARK_ENV_LOADED": "1", **{k: env[k] for k in FORWARDED_ENV if env.get(k)}, **spec.env_vars}
    return {
        "action": "CreateSubmissionRequest",
        "appResource": resource,
        "mainClass": PYTHON_RUNNER if python else spec.java_class,
        "appArgs": [spec.application, spec.py_files or "", *spec.application_args] if python
        else list(spec.application_args),
        "clientSparkVersion": spark_version,
        "environmentVariables": environment,
        "sparkProperties": properties,
    }


@dataclass(frozen=True)
class DriverStatus:
    driver_id: str
    state: str | None
    worker_id: str | None
    worker_host_port: str | None
    message: str | None


class RestSubmissionClient:
    """The REST servers of one standalone cluster: every master of an HA ``spark://a:7077,b:7077`` URL is asked
    in turn until one answers (the active one; a standby refuses), and that one is asked first from then on."""

    def __init__(self, base_urls: str | list[str], timeout: float = 10.0) -> None:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self.base_urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout

    @property
    def base_url(self) -> str:
        return self.base_urls[0]

    def _call(self, path: str, method: str = "GET", body: Any = None) -> dict[str, Any]:
        problems = []
        for index, base in enumerate(self.base_urls):
            try:
                answer = get_json(f"{base}/v1/submissions/{path}", self.timeout, method, body)
            except Unavailable as exc:
                problems.append(str(exc))
                continue
            if not isinstance(answer, dict):
                raise SparkSubmitFailed(f"unexpected answer from {base}: {answer!r}")
            if index:
                self.base_urls.insert(0, self.base_urls.pop(index))
            return answer
        raise UserError(
            f"the Spark REST submission server at {', '.join(self.base_urls)} does not answer ({'; '.join(problems)});"
            " start the master with spark.master.rest.enabled=true (and spark.master.rest.port, default 6066) or set"
            " the connection's rest-port extra"
        )

    def create(self, request: dict[str, Any]) -> str:
        answer = self._call("create", "POST", request)
        if not answer.get("success") or not answer.get("submissionId"):
            message = str(answer.get("message", answer)).splitlines()[0]
            raise SparkSubmitFailed(f"the Spark master refused the submission: {message}")
        return str(answer["submissionId"])

    def status(self, driver_id: str) -> DriverStatus:
        answer = self._call(f"status/{driver_id}")
        return DriverStatus(
            driver_id=driver_id,
            state=answer.get("driverState") if answer.get("success") else None,
            worker_id=answer.get("workerId"),
            worker_host_port=answer.get("workerHostPort"),
            message=answer.get("message"),
        )

    def kill(self, driver_id: str) -> bool:
        return bool(self._call(f"kill/{driver_id}", "POST").get("success"))


_LOG_HEADER = re.compile(r"^==== Bytes (\d+)-(\d+) of (\d+) of .*====\n?")


class DriverLogTail:
    """Reads a cluster-mode driver's stdout/stderr from its worker's web UI (``/log?driverId=...``) by offset."""

    def __init__(self, master_ui: str, timeout: float = 5.0) -> None:
        self.master_ui = master_ui.rstrip("/")
        self.timeout = timeout
        self.offsets: dict[str, int] = {}
        self.worker_ui: str | None = None

    def _find_worker(self, worker_id: str) -> str | None:
        state = get_json(f"{self.master_ui}/json/", self.timeout)
        for worker in state.get("workers", []):
            if worker.get("id") == worker_id:
                return str(worker.get("webuiaddress"))
        return None

    def read(self, driver_id: str, worker_id: str | None, log_type: str) -> str:
        """New text of the driver's ``log_type`` (stdout/stderr) since the last call; '' when unavailable."""
        import urllib.request

        try:
            if self.worker_ui is None and worker_id:
                self.worker_ui = self._find_worker(worker_id)
            if self.worker_ui is None:
                return ""
            offset = self.offsets.get(log_type, 0)
            url = (f"{self.worker_ui}/log?driverId={driver_id}&logType={log_type}"
                   f"&offset={offset}&byteLength=1048576")
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                text = response.read().decode("utf-8", errors="replace")
        except (Unavailable, OSError):
            return ""
        header = _LOG_HEADER.match(text)
        if header is None:
            return ""
        self.offsets[log_type] = int(header.group(2))
        return text[header.end():]
