"""YARN and Kubernetes cluster mode through SparkSubmission, against small local fakes that answer as documented
(the YARN ResourceManager REST API, the Kubernetes API, the `yarn` CLI, spark-submit's output): YARN and
Kubernetes are not available here. Standalone cluster mode runs for real in tests/integration."""

from __future__ import annotations

import json
import logging
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sparkflow.connections import Connection
from sparkflow.exceptions import AirflowException, SparkSubmitFailed, UserError
from sparkflow.spark import kubernetes, yarn
from sparkflow.spark.spec import SparkSubmitSpec
from sparkflow.spark.submission import SparkSubmission, parse_k8s_line

LOG = logging.getLogger("test.cluster_modes")
APP_ID = "application_1700000000000_0042"
POD = "spark-pi-5a1b2c3d4e-driver"


class FakeTI:
    """What a running task offers a submission: a directory, the previous try's ids, and recording."""

    def __init__(self, tmp: Path, previous: dict[str, str | None] | None = None) -> None:
        self.tmp = tmp
        self.previous = previous or {}
        self.ids: dict[str, Any] = {}

    def artifact_dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def previous_try_ids(self) -> dict[str, str | None]:
        return self.previous

    def record_external_ids(self, **ids: Any) -> None:
        self.ids.update(ids)

    def record_spark_progress(self, progress: dict[str, Any]) -> None:
        pass

    def record_spark_metrics(self, metrics: dict[str, Any]) -> None:
        pass


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@dataclass
class FakeApi:
    """A loopback HTTP server answering from ``routes`` ((method, path) -> list of (status, JSON) answers, the
    last one repeated) and recording every request."""

    routes: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def answer(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body, {}))
        answers = self.routes.get((method, path))
        if not answers:
            return 404, {"kind": "Status", "code": 404}
        return answers.pop(0) if len(answers) > 1 else answers[0]


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = api.answer(self.command, self.path, body)
            api.requests[-1] = (self.command, self.path, body, dict(self.headers))
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do_POST = _handle

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_minimum_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider's 10 s (YARN RM) and 20 s (Kubernetes API) minimum poll intervals, shortened for tests."""
    monkeypatch.setattr("sparkflow.spark.submission.MIN_RM_POLL_SECONDS", 0.05)
    monkeypatch.setattr("sparkflow.spark.submission.K8S_MIN_POLL_SECONDS", 0.05)


def yarn_app(state: str, final: str, diagnostics: str = "") -> tuple[int, Any]:
    return 200, {"app": {"id": APP_ID, "state": state, "finalStatus": final, "diagnostics": diagnostics}}


def spark_submit_printing(tmp_path: Path, lines: str, exit_code: int = 0) -> str:
    return str(script(tmp_path / "bin" / "fake-spark-submit",
                      f'echo "$@" > {tmp_path}/argv\ncat <<\'OUT\'\n{lines}\nOUT\nexit {exit_code}\n'))


def yarn_submission(tmp_path: Path, fake_api: FakeApi | None, **spec: Any) -> tuple[SparkSubmission, FakeTI]:
    extra: dict[str, str] = {"deploy-mode": "cluster"}
    if fake_api is not None:
        extra["yarn_resourcemanager_webapp_address"] = fake_api.url.removeprefix("http://")
    conn = Connection("yarn_cluster", "yarn", host="rm-host", extra=json.dumps(extra))
    ti = FakeTI(tmp_path, spec.pop("previous", None))
    values = {"application": "/jobs/app.jar", "java_class": "demo.Main", "conn_id": "yarn_cluster",
              "status_poll_interval": 0.05, **spec}
    return SparkSubmission(SparkSubmitSpec.from_values(values), conn, ti, LOG), ti  # type: ignore[arg-type]


SUBMITTED = (f"INFO Client: Submitted application {APP_ID}\n"
             f"INFO Client: Application report for {APP_ID} (state: ACCEPTED)")


def test_yarn_rm_api_follows_the_application_to_success(tmp_path: Path, fake_api: FakeApi) -> None:
    path = f"/ws/v1/cluster/apps/{APP_ID}"
    fake_api.routes[("GET", path)] = [yarn_app("ACCEPTED", "UNDEFINED"), yarn_app("RUNNING", "UNDEFINED"),
                                      yarn_app("FINISHED", "SUCCEEDED")]
    binary = spark_submit_printing(tmp_path, SUBMITTED)
    submission, ti = yarn_submission(tmp_path, fake_api, spark_binary=binary, yarn_track_via_rm_api=True,
                                     yarn_rm_auth=("etl", "pw"))
    assert submission.run() == APP_ID
    assert ti.ids["spark_app_id"] == APP_ID
    argv = (tmp_path / "argv").read_text()
    assert "--master yarn://rm-host --conf spark.yarn.submit.waitAppCompletion=false" in argv
    gets = [r for r in fake_api.requests if r[0] == "GET"]
    assert len(gets) == 3 and gets[0][3]["Authorization"] == "Basic ZXRsOnB3"


def test_yarn_rm_api_failure_fails_the_task_with_the_diagnostics(tmp_path: Path, fake_api: FakeApi) -> None:
    fake_api.routes[("GET", f"/ws/v1/cluster/apps/{APP_ID}")] = [yarn_app("FAILED", "FAILED", "AM container OOM")]
    binary = spark_submit_printing(tmp_path, SUBMITTED)
    submission, _ = yarn_submission(tmp_path, fake_api, spark_binary=binary, yarn_track_via_rm_api=True)
    with pytest.raises(AirflowException, match="ended with state FAILED, final status FAILED\nDiagnostics: AM "):
        submission.run()


def test_yarn_rm_api_needs_the_address_extra_and_refuses_waiting_spark_submit(tmp_path: Path) -> None:
    submission, _ = yarn_submission(tmp_path, None, yarn_track_via_rm_api=True)
    with pytest.raises(UserError, match="extra yarn_resourcemanager_webapp_address"):
        submission.run()


def test_yarn_cli_reports_the_final_state_and_kills(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = tmp_path / "yarn-calls"
    script(tmp_path / "bin" / "yarn", f"""echo "$@ ENV_K=$ENV_K" >> {calls}
if [ "$2" = "-status" ]; then
  printf 'Application Report : \\n\\tApplication-Id : {APP_ID}\\n\\tState : FINISHED\\n'
  printf '\\tFinal-State : FAILED\\n\\tDiagnostics : User class threw exception\\n'
fi
""")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    binary = spark_submit_printing(tmp_path, SUBMITTED)
    submission, _ = yarn_submission(tmp_path, None, spark_binary=binary, env_vars={"ENV_K": "v"})
    with pytest.raises(SparkSubmitFailed, match="final status FAILED\nDiagnostics: User class threw exception"):
        submission.run()
    assert calls.read_text().splitlines() == [f"application -status {APP_ID} ENV_K=v"]
    argv = (tmp_path / "argv").read_text()
    assert "--conf spark.yarn.appMasterEnv.ENV_K=v" in argv and "waitAppCompletion" not in argv
    submission._finished = False
    submission.kill()
    assert calls.read_text().splitlines()[-1] == f"application -kill {APP_ID} ENV_K=v"  # env_vars reach yarn too


def test_yarn_rm_kill_puts_the_killed_state(tmp_path: Path, fake_api: FakeApi) -> None:
    fake_api.routes[("PUT", f"/ws/v1/cluster/apps/{APP_ID}/state")] = [(202, {"state": "KILLED"})]
    submission, _ = yarn_submission(tmp_path, fake_api, yarn_track_via_rm_api=True)
    submission.tracker.record(app_id=APP_ID)
    submission.kill()
    assert ("PUT", f"/ws/v1/cluster/apps/{APP_ID}/state", {"state": "KILLED"}) in [r[:3] for r in fake_api.requests]


def test_yarn_retry_reattaches_to_a_running_application(tmp_path: Path, fake_api: FakeApi) -> None:
    fake_api.routes[("GET", f"/ws/v1/cluster/apps/{APP_ID}")] = [yarn_app("RUNNING", "UNDEFINED"),
                                                                 yarn_app("FINISHED", "SUCCEEDED")]
    binary = spark_submit_printing(tmp_path, "never run", exit_code=9)
    submission, ti = yarn_submission(tmp_path, fake_api, spark_binary=binary, yarn_track_via_rm_api=True,
                                     previous={"spark_app_id": APP_ID})
    assert submission.run() == APP_ID
    assert not (tmp_path / "argv").exists()  # no second submission
    again, _ = yarn_submission(tmp_path, fake_api, spark_binary=binary, yarn_track_via_rm_api=True,
                               previous={"spark_app_id": APP_ID}, )
    again.durable = False
    with pytest.raises(SparkSubmitFailed, match="exited with code 9"):
        again.run()  # durable=False: always a fresh submission


K8S_OUTPUT = f"""INFO LoggingPodStatusWatcherImpl: State changed, new state:
\t pod name: {POD}
\t namespace: etl
\t labels: spark-app-selector -> spark-0123456789abcdef0123456789abcdef, spark-role -> driver
INFO LoggingPodStatusWatcherImpl: Container final statuses:
\t container name: spark-kubernetes-driver
\t Exit code: {{code}}"""


def k8s_submission(tmp_path: Path, master: str, **spec: Any) -> tuple[SparkSubmission, FakeTI]:
    conn = Connection("k8s", "k8s", host=master.removeprefix("k8s://"), extra=json.dumps(
        {"deploy-mode": "cluster", "namespace": "from-connection"}))
    ti = FakeTI(tmp_path, spec.pop("previous", None))
    values = {"application": "local:///opt/app.py", "conn_id": "k8s", "status_poll_interval": 0.05,
              "conf": {"spark.kubernetes.namespace": "etl"}, **spec}
    return SparkSubmission(SparkSubmitSpec.from_values(values), conn, ti, LOG), ti  # type: ignore[arg-type]


def test_k8s_exit_code_from_spark_submit_output_decides(tmp_path: Path) -> None:
    ok = spark_submit_printing(tmp_path, K8S_OUTPUT.format(code=0))
    submission, ti = k8s_submission(tmp_path, "k8s://https://127.0.0.1:1", spark_binary=ok)
    submission.run()
    assert ti.ids["spark_driver_id"] == POD
    failed = spark_submit_printing(tmp_path, K8S_OUTPUT.format(code=1))
    submission, _ = k8s_submission(tmp_path, "k8s://https://127.0.0.1:1", spark_binary=failed)
    with pytest.raises(SparkSubmitFailed, match="Kubernetes spark exit code is: 1"):
        submission.run()  # spark-submit exited 0, the driver did not
    silent = spark_submit_printing(tmp_path, "no driver report")
    submission, _ = k8s_submission(tmp_path, "k8s://https://127.0.0.1:1", spark_binary=silent)
    with pytest.raises(SparkSubmitFailed, match="exit code is: None"):
        submission.run()  # no exit code seen: not a success (as in the provider)


def test_k8s_api_follows_the_pod_and_deletes_it(tmp_path: Path, fake_api: FakeApi) -> None:
    path = f"/api/v1/namespaces/etl/pods/{POD}"
    fake_api.routes[("GET", path)] = [(200, {"status": {"phase": "Pending"}}), (200, {"status": {"phase": "Running"}}),
                                      (200, {"status": {"phase": "Succeeded"}})]
    fake_api.routes[("DELETE", path)] = [(200, {"kind": "Pod"})]
    binary = spark_submit_printing(tmp_path, f"\t pod name: {POD}")
    submission, _ = k8s_submission(tmp_path, f"k8s://{fake_api.url}", spark_binary=binary,
                                   track_driver_via_k8s_api=True,
                                   conf={"spark.kubernetes.namespace": "etl",
                                         "spark.kubernetes.authenticate.submission.oauthToken": "tok3n"})
    submission.run()
    argv = (tmp_path / "argv").read_text()
    # the conf's namespace wins over the connection's; the provider's waitAppCompletion=false comes last
    assert argv.count("--conf spark.kubernetes.namespace=etl") == 2 and "from-connection" not in argv
    assert argv.rstrip().endswith("spark.kubernetes.submission.waitAppCompletion=false local:///opt/app.py")
    assert [r[0] for r in fake_api.requests] == ["GET", "GET", "GET", "DELETE"]
    assert fake_api.requests[0][3]["Authorization"] == "Bearer tok3n"


def test_k8s_api_failed_pod_fails_with_its_exit_code(tmp_path: Path, fake_api: FakeApi) -> None:
    container = {"state": {"terminated": {"exitCode": 3, "reason": "Error"}}}
    terminated = {"phase": "Failed", "containerStatuses": [container]}
    fake_api.routes[("GET", f"/api/v1/namespaces/etl/pods/{POD}")] = [(200, {"status": terminated})]
    binary = spark_submit_printing(tmp_path, f"\t pod name: {POD}")
    submission, _ = k8s_submission(tmp_path, f"k8s://{fake_api.url}", spark_binary=binary,
                                   track_driver_via_k8s_api=True)
    with pytest.raises(SparkSubmitFailed, match="phase Failed exit_code=3 reason=Error"):
        submission.run()


def test_k8s_kill_deletes_the_driver_pod(tmp_path: Path, fake_api: FakeApi) -> None:
    fake_api.routes[("DELETE", f"/api/v1/namespaces/etl/pods/{POD}")] = [(200, {"kind": "Pod"})]
    submission, _ = k8s_submission(tmp_path, f"k8s://{fake_api.url}")
    submission.k8s_pod = POD
    submission.kill()
    assert [r[:2] for r in fake_api.requests] == [("DELETE", f"/api/v1/namespaces/etl/pods/{POD}")]


def test_k8s_retry_reattaches_to_a_running_pod(tmp_path: Path, fake_api: FakeApi) -> None:
    path = f"/api/v1/namespaces/etl/pods/{POD}"
    fake_api.routes[("GET", path)] = [(200, {"status": {"phase": "Running"}}), (200, {"status": {"phase": "Running"}}),
                                      (200, {"status": {"phase": "Succeeded"}})]
    binary = spark_submit_printing(tmp_path, "never run", exit_code=9)
    submission, _ = k8s_submission(tmp_path, f"k8s://{fake_api.url}", spark_binary=binary,
                                   previous={"spark_driver_id": POD})
    submission.run()
    assert not (tmp_path / "argv").exists()


@pytest.mark.parametrize(
    ("line", "pod", "code"),
    [
        (f"\t pod name: {POD}", POD, None),
        (f"Deployed Spark application spark-pi with application ID spark-0a1b and submission ID etl:{POD} into "
         "Kubernetes", POD, None),
        ("\t Exit code: 137", None, 137),
        ("\t exit code: 0", None, 0),
        ("INFO Client: Application report (phase: Running)", None, None),
    ],
)
def test_parse_k8s_lines(line: str, pod: str | None, code: int | None) -> None:
    assert parse_k8s_line(line) == (pod, code)


def test_yarn_report_normalized_like_the_provider() -> None:
    assert yarn.YarnReport(APP_ID, "RUNNING", "UNDEFINED").normalized() == "RUNNING"
    assert yarn.YarnReport(APP_ID, "FINISHED", "SUCCEEDED").normalized() == "SUCCEEDED"
    assert yarn.YarnReport(APP_ID, "FINISHED", "FAILED").normalized() == "FAILED"
    assert yarn.YarnReport(APP_ID, "KILLED", "KILLED").normalized() == "FAILED"
    assert kubernetes.api_server("k8s://https://k8s-host:443") == "https://k8s-host:443"
    assert kubernetes.api_server("k8s://k8s-host") == "https://k8s-host"


def test_standalone_rest_client_reads_the_driver_state_and_fails_over_between_ha_masters(fake_api: FakeApi) -> None:
    from sparkflow.spark.rest_submission import RestSubmissionClient
    from tests.services import free_port

    driver = "driver-20261129135930-0002"
    fake_api.routes[("GET", f"/v1/submissions/status/{driver}")] = [(200, {
        "action": "SubmissionStatusResponse", "driverState": "RUNNING", "submissionId": driver, "success": True,
        "workerHostPort": "127.0.0.1:46419", "workerId": "worker-20261129135902-127.0.0.1-46419"})]
    fake_api.routes[("POST", f"/v1/submissions/kill/{driver}")] = [(200, {
        "action": "KillSubmissionResponse", "submissionId": driver, "success": True})]
    standby = f"http://127.0.0.1:{free_port()}"  # nothing listens: a master that is down
    client = RestSubmissionClient([standby, fake_api.url], timeout=2)
    status = client.status(driver)
    assert (status.state, status.worker_id) == ("RUNNING", "worker-20261129135902-127.0.0.1-46419")
    assert client.base_urls[0] == fake_api.url  # the answering master is asked first from now on
    assert client.kill(driver) is True
    fake_api.routes[("GET", "/v1/submissions/status/driver-nope")] = [(200, {
        "action": "SubmissionStatusResponse", "submissionId": "driver-nope", "success": False})]
    assert client.status("driver-nope").state is None  # unknown to the master
