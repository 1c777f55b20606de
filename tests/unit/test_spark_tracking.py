"""Spark progress from REST answers (recorded shapes from Spark 4.3), the poller's tolerance, event-log metrics."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sparkflow.spark.eventlog import EventLogTail, find_event_log, metrics_from_events, read_metrics
from sparkflow.spark.run_tracker import SparkRunTracker
from sparkflow.spark.tracking import (
    EVENT_LOG_GRACE_SECONDS,
    DriverProgressPoller,
    KeepAliveJson,
    SparkProgress,
    Unavailable,
    progress_from_event_log,
    progress_from_rest,
)

JOBS = [  # newest first, as the driver answers: job 1 just started, job 0 done
    {"jobId": 1, "status": "RUNNING", "numTasks": 1, "numActiveTasks": 0, "numCompletedTasks": 0,
     "numSkippedTasks": 0, "numFailedTasks": 0},
    {"jobId": 0, "status": "SUCCEEDED", "numTasks": 2, "numActiveTasks": 0, "numCompletedTasks": 2,
     "numSkippedTasks": 0, "numFailedTasks": 0},
]
STAGES = [
    {"status": "ACTIVE", "stageId": 1, "numTasks": 1, "numActiveTasks": 1, "numCompleteTasks": 0,
     "numFailedTasks": 0, "name": "collect at slow_app.py:12"},
]


def test_progress_from_recorded_rest_answers() -> None:
    progress = progress_from_rest(JOBS, STAGES)
    assert (progress.jobs_total, progress.jobs_done, progress.jobs_running) == (2, 1, 1)
    assert (progress.tasks_total, progress.tasks_done, progress.tasks_failed) == (3, 2, 0)
    assert progress.active_stages[0].stage_id == 1 and progress.active_stages[0].tasks_total == 1
    assert progress.bar(10) == "[#######---]  67%"
    assert "jobs 1/2" in progress.describe() and "stage 1 (collect at slow_app.py:12) 0/1" in progress.describe()
    assert SparkProgress.from_dict(json.loads(json.dumps(progress.to_dict()))) == progress


class FakeDriver:
    """Answers like a starting driver: refused, then HTML, then JSON."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.answers = [Unavailable("refused"), Unavailable("text/html: Spark is starting up")]

    def __call__(self, url: str) -> object:
        self.calls.append(url)
        if self.answers:
            raise self.answers.pop(0)
        if url.endswith("/applications"):
            return [{"id": "local-1795964850322", "name": "x"}]
        if url.endswith("/jobs"):
            return JOBS
        return STAGES


def test_poller_survives_a_starting_driver_and_reports_only_changes() -> None:
    driver = FakeDriver()
    found: list[str] = []
    poller = DriverProgressPoller("http://127.0.0.1:4040/", 1, lambda p: None, found.append, fetch=driver)
    for _ in range(2):
        with pytest.raises(Unavailable):
            poller.poll_once()
    first = poller.poll_once()
    assert found == ["local-1795964850322"]
    assert first is not None and first.jobs_total == 2
    assert poller.poll_once() is None  # unchanged progress is not reported again
    assert driver.calls[-1] == "http://127.0.0.1:4040/api/v1/applications/local-1795964850322/stages?status=active"


def test_poller_asks_for_stages_only_while_a_job_runs() -> None:
    """No job running (before the first, between jobs, after the last): one request per poll, not two."""
    calls: list[str] = []
    jobs = [dict(job, status="SUCCEEDED") for job in JOBS]

    def driver(url: str) -> object:
        calls.append(url)
        return jobs if url.endswith("/jobs") else STAGES

    poller = DriverProgressPoller("http://127.0.0.1:4040", 1, lambda p: None, lambda a: None, app_id="local-1",
                                  fetch=driver)
    progress = poller.poll_once()
    assert calls == ["http://127.0.0.1:4040/api/v1/applications/local-1/jobs"]
    assert progress is not None and progress.jobs_done == 2 and progress.active_stages == ()
    jobs[0]["status"] = "RUNNING"
    progress = poller.poll_once()
    assert calls[-1].endswith("/stages?status=active") and len(calls) == 3
    assert progress is not None and progress.active_stages[0].stage_id == 1


def test_poller_takes_an_answer_that_is_not_a_list_for_not_available() -> None:
    """An error object where the job list should be is 'not ready yet' (normal backoff), not a parsing bug."""
    poller = DriverProgressPoller("http://127.0.0.1:4040", 1, lambda p: None, lambda a: None, app_id="local-1",
                                  fetch=lambda url: {"url": url, "status": "404", "message": "Not Found"})
    with pytest.raises(Unavailable, match="expected a JSON list"):
        poller.poll_once()


class _FakeTI:
    def __init__(self) -> None:
        self.ids: dict[str, str] = {}

    def record_external_ids(self, **ids: str) -> None:
        self.ids.update(ids)


def test_app_id_printed_after_the_ui_port_reaches_the_poller() -> None:
    """Spark prints the UI port before the app id: the poller must not have to ask /applications for it."""
    tracker = SparkRunTracker(_FakeTI(), 3600, logging.getLogger("test"), Path("/nonexistent"))  # type: ignore[arg-type]
    tracker.on_line("INFO Utils: Successfully started service 'SparkUI' on port 4041.")
    assert tracker.poller is not None and tracker.poller.app_id is None
    tracker.on_line("INFO Executor: Starting executor ID driver on host localhost, app local-1795973587190")
    tracker.poller.stop()
    assert tracker.poller.app_id == "local-1795973587190"


class _DriverUI(BaseHTTPRequestHandler):
    """A driver UI that keeps connections open (HTTP/1.1) and counts them."""

    protocol_version = "HTTP/1.1"
    connections = 0
    html_for = "/html"
    slow_for = "/slow"  # answers after slow_seconds, as a driver setting up its REST layer does
    slow_seconds = 0.5

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if self.path.startswith(self.slow_for):
            time.sleep(self.slow_seconds)
        html = self.path.startswith(self.html_for)
        body = b"<html>Spark is starting up</html>" if html else json.dumps([{"path": self.path}]).encode()
        if self.path.startswith("/missing"):  # Jetty's error page, rendered as JSON
            body = json.dumps({"url": self.path, "status": "404", "message": "Not Found"}).encode()
        self.send_response(404 if self.path.startswith("/missing") else 200)
        self.send_header("Content-Type", "text/html" if html else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def driver_ui() -> Iterator[ThreadingHTTPServer]:
    _DriverUI.connections = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DriverUI)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_keep_alive_fetch_reuses_one_connection(driver_ui: ThreadingHTTPServer) -> None:
    base = f"http://127.0.0.1:{driver_ui.server_address[1]}"
    fetch = KeepAliveJson(timeout=5)
    answers = [fetch(f"{base}/api/v1/applications/local-1/jobs") for _ in range(3)]
    assert answers[0] == [{"path": "/api/v1/applications/local-1/jobs"}]
    assert fetch(f"{base}/api/v1/applications/local-1/stages?status=active") == [
        {"path": "/api/v1/applications/local-1/stages?status=active"}]
    with pytest.raises(Unavailable, match="text/html"):
        fetch(f"{base}/html")  # "Spark is starting up": not JSON, not available yet
    with pytest.raises(Unavailable, match="404"):
        fetch(f"{base}/missing")  # REST handler not mounted yet: an error, even when the page is JSON
    assert fetch(f"{base}/jobs") == [{"path": "/jobs"}]  # the connection survived the HTML answer
    assert _DriverUI.connections == 1
    fetch.close()


def test_keep_alive_fetch_reconnects_when_the_driver_closed_an_idle_connection(
    driver_ui: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_DriverUI, "timeout", 0.2)  # the server drops connections idle for 0.2 s, as Jetty does
    base = f"http://127.0.0.1:{driver_ui.server_address[1]}"
    fetch = KeepAliveJson(timeout=5)
    fetch(f"{base}/jobs")
    time.sleep(0.6)
    assert fetch(f"{base}/jobs") == [{"path": "/jobs"}]  # retried at once on a fresh connection, no failure
    assert _DriverUI.connections == 2
    fetch.close()


def test_keep_alive_fetch_waits_longer_for_the_first_json_answer(
    driver_ui: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's first REST answer is slow (it sets Jersey up): abandoning it would only delay progress."""
    # wide margins both ways: a loaded CI machine must neither time out the quick answers nor the slow first one
    monkeypatch.setattr(_DriverUI, "slow_seconds", 3.0)
    base = f"http://127.0.0.1:{driver_ui.server_address[1]}"
    fetch = KeepAliveJson(timeout=1.0, first_timeout=20)
    with pytest.raises(Unavailable, match="text/html"):
        fetch(f"{base}/html")  # "starting up" is not the first JSON answer yet
    assert fetch(f"{base}/slow") == [{"path": "/slow"}]
    with pytest.raises(Unavailable, match="timed out"):
        fetch(f"{base}/slow")  # later answers get the short timeout, on the kept connection too
    assert fetch(f"{base}/jobs") == [{"path": "/jobs"}]  # on a new connection: the timed-out one is never reused
    fetch.close()


def test_keep_alive_fetch_reports_a_driver_that_is_gone() -> None:
    fetch = KeepAliveJson(timeout=2)
    with pytest.raises(Unavailable, match="refused"):
        fetch("http://127.0.0.1:1/api/v1/applications")


def test_poller_thread_backs_off_and_never_raises() -> None:
    calls: list[str] = []

    def always_down(url: str) -> object:
        calls.append(url)
        raise Unavailable("connection refused")

    poller = DriverProgressPoller("http://127.0.0.1:1", 0.2, lambda p: None, lambda a: None, fetch=always_down)
    poller.start()
    time.sleep(1.5)
    poller.stop()
    assert poller.failures == len(calls) >= 1
    assert len(calls) <= 4  # 0.2, 0.4, 0.8 ... seconds apart, not 7 polls in 1.5 s


def _event(kind: str, **fields: object) -> str:
    return json.dumps({"Event": kind, **fields})


def _task_end(failed: bool = False, killed: bool = False, **metrics: object) -> str:
    base = {"Executor Run Time": 100, "Executor CPU Time": 50_000_000, "JVM GC Time": 7,
            "Memory Bytes Spilled": 10, "Disk Bytes Spilled": 20, "Peak Execution Memory": 4096,
            "Input Metrics": {"Bytes Read": 1000, "Records Read": 10},
            "Output Metrics": {"Bytes Written": 300, "Records Written": 3},
            "Shuffle Read Metrics": {"Remote Bytes Read": 5, "Local Bytes Read": 6, "Total Records Read": 2},
            "Shuffle Write Metrics": {"Shuffle Bytes Written": 40, "Shuffle Records Written": 4}}
    base.update(metrics)
    return _event("SparkListenerTaskEnd", **{"Task Info": {"Failed": failed, "Killed": killed},
                                            "Task Metrics": base})


def test_metrics_from_event_log_lines() -> None:
    lines = [
        _event("SparkListenerApplicationStart", **{"App Name": "count", "App ID": "local-1", "Timestamp": 1000}),
        _task_end(),
        _task_end(failed=True, **{"Peak Execution Memory": 9000}),
        _task_end(killed=True),
        _event("SparkListenerStageCompleted", **{"Stage Info": {"Stage ID": 0}}),
        _event("SparkListenerStageCompleted", **{"Stage Info": {"Stage ID": 1, "Failure Reason": "boom"}}),
        _event("SparkListenerJobEnd", **{"Job Result": {"Result": "JobSucceeded"}}),
        _event("SparkListenerApplicationEnd", Timestamp=4500),
    ]
    m = metrics_from_events(lines)
    assert (m.app_id, m.app_name, m.duration_ms, m.succeeded) == ("local-1", "count", 3500, True)
    assert (m.jobs, m.stages, m.stages_failed) == (1, 2, 1)
    assert (m.tasks, m.tasks_failed, m.tasks_killed) == (3, 1, 1)
    assert (m.input_bytes, m.input_records, m.output_bytes) == (3000, 30, 900)
    assert (m.shuffle_read_bytes, m.shuffle_write_bytes, m.shuffle_write_records) == (33, 120, 12)
    assert (m.memory_spilled_bytes, m.disk_spilled_bytes) == (30, 60)
    assert (m.executor_run_time_ms, m.executor_cpu_time_ms, m.jvm_gc_time_ms) == (300, 150, 21)
    assert m.peak_execution_memory_bytes == 9000


def test_killed_application_log_is_read_in_progress(tmp_path: Path) -> None:
    log = tmp_path / "local-1795964850322.inprogress"
    log.write_text("\n".join([
        _event("SparkListenerApplicationStart", **{"App Name": "x", "App ID": "local-1795964850322",
                                                   "Timestamp": 1}),
        _task_end(),
        '{"Event": "SparkListenerTaskEnd", "Task Info": {"Fai',  # cut short by the kill
    ]))
    assert find_event_log(tmp_path) == log
    metrics = read_metrics(tmp_path)
    assert metrics is not None and metrics.tasks == 1 and metrics.succeeded is False
    assert read_metrics(tmp_path / "missing") is None


def test_stop_does_not_wait_for_a_request_in_flight() -> None:
    """A driver that is shutting down may hold a request for seconds; the task must not wait for it."""
    reported: list[object] = []

    def slow(url: str) -> object:
        time.sleep(20)
        raise Unavailable("read timed out")

    poller = DriverProgressPoller("http://127.0.0.1:1", 0.2, reported.append, lambda a: None, fetch=slow)
    poller.start()
    time.sleep(0.5)  # the first request is in flight
    started = time.monotonic()
    poller.stop()
    assert time.monotonic() - started < 10  # far from the request's 20 s, with room for a loaded machine
    assert reported == []


def _compact(kind: str, **fields: object) -> str:
    """An event line as Spark writes it: compact JSON, the event name first."""
    return json.dumps({"Event": kind, **fields}, separators=(",", ":"))


def _job_start(job_id: int, *stages: tuple[int, int]) -> str:
    return _compact("SparkListenerJobStart", **{
        "Job ID": job_id, "Submission Time": 1,
        "Stage Infos": [{"Stage ID": s, "Stage Name": f"collect at app.py:{s}", "Number of Tasks": n,
                         "Details": "a long stack trace"} for s, n in stages],
        "Stage IDs": [s for s, _ in stages]})


def _stage(kind: str, stage_id: int, tasks: int, **info: object) -> str:
    return _compact(f"SparkListenerStage{kind}", **{"Stage Info": {
        "Stage ID": stage_id, "Stage Name": f"collect at app.py:{stage_id}", "Number of Tasks": tasks, **info}})


def _ended_task(stage_id: int, failed: bool = False) -> str:
    return _compact("SparkListenerTaskEnd", **{"Stage ID": stage_id, "Task Info": {"Failed": failed,
                                                                                  "Killed": False}})


def test_event_log_tail_follows_a_growing_log(tmp_path: Path) -> None:
    """Lines arrive as the driver flushes, the last one possibly cut short; only whole lines count."""
    tail = EventLogTail(tmp_path)
    assert tail.read() is False and not tail.found  # the driver has not created the log yet
    log = tmp_path / "local-1795984536466.inprogress"
    start = _job_start(0, (0, 4))
    log.write_text(_compact("SparkListenerLogStart", **{"Spark Version": "4.3.0"}) + "\n"
                   + _compact("SparkListenerApplicationStart", **{"App ID": "local-1795984536466",
                                                                   "App Name": "bench"}) + "\n"
                   + start[:40])
    assert tail.read() is True and tail.found
    assert tail.app_id == "local-1795984536466" and tail.jobs == {}
    with log.open("a") as fh:
        fh.write(start[40:] + "\n" + _stage("Submitted", 0, 4) + "\n" + _ended_task(0) + "\n")
    assert tail.read() is True
    assert tail.jobs[0].running and tail.jobs[0].stage_ids == (0,)
    assert (tail.stages[0].tasks, tail.stages[0].succeeded, tail.stages[0].submitted) == (4, 1, True)
    assert tail.read() is False  # nothing new
    log.rename(tmp_path / "local-1795984536466")  # what Spark does at the end: the open log is still read
    with (tmp_path / "local-1795984536466").open("a") as fh:
        fh.write(_compact("SparkListenerJobEnd", **{"Job ID": 0, "Job Result": {"Result": "JobSucceeded"}}) + "\n")
    assert tail.read() is True and not tail.jobs[0].running
    tail.close()


def test_progress_from_the_event_log(tmp_path: Path) -> None:
    """Job 0 ran stages 0 and 1 (1 failed task, retried); job 1 reused stage 2's output (skipped) and runs stage 3."""
    (tmp_path / "app-1.inprogress").write_text("\n".join([
        _job_start(0, (0, 4), (1, 2)),
        _stage("Submitted", 0, 4), *[_ended_task(0) for _ in range(4)], _stage("Completed", 0, 4),
        _stage("Submitted", 1, 2), _ended_task(1, failed=True), _ended_task(1), _ended_task(1),
        _stage("Completed", 1, 2),
        _compact("SparkListenerJobEnd", **{"Job ID": 0, "Job Result": {"Result": "JobSucceeded"}}),
        _job_start(1, (2, 2), (3, 3)),
        _stage("Submitted", 3, 3), _ended_task(3),
    ]) + "\n")
    tail = EventLogTail(tmp_path)
    tail.read()
    running = progress_from_event_log(tail)
    assert (running.jobs_total, running.jobs_done, running.jobs_running) == (2, 1, 1)
    # job 1 still runs: its not-yet-submitted stage 2 may yet run, so its tasks count
    assert (running.tasks_total, running.tasks_done, running.tasks_failed) == (11, 7, 1)
    assert [(s.stage_id, s.tasks_done, s.tasks_total) for s in running.active_stages] == [(3, 1, 3)]
    with (tmp_path / "app-1.inprogress").open("a") as fh:
        fh.write(_stage("Completed", 3, 3) + "\n"
                 + _compact("SparkListenerJobEnd", **{"Job ID": 1, "Job Result": {"Result": "JobSucceeded"}}) + "\n")
    tail.read()
    done = progress_from_event_log(tail)
    assert (done.jobs_total, done.jobs_done, done.tasks_total, done.tasks_done) == (2, 2, 9, 9)
    assert done.active_stages == () and done.bar(10) == "[##########] 100%"
    tail.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_poller_reads_the_event_log_until_a_job_runs_long_then_asks_the_driver(tmp_path: Path) -> None:
    """A short job never costs the driver its REST set-up; a long one gets per-task progress from REST."""
    clock, calls, found = _Clock(), [], []

    def driver(url: str) -> object:
        calls.append(url)
        return JOBS if url.endswith("/jobs") else STAGES

    log = tmp_path / "local-1.inprogress"
    log.write_text(_compact("SparkListenerApplicationStart", **{"App ID": "local-1"}) + "\n")
    poller = DriverProgressPoller("http://127.0.0.1:4040", 1, lambda p: None, found.append, fetch=driver,
                                  event_log=EventLogTail(tmp_path), rest_after=10, clock=clock)
    assert poller.poll_once() is None and found == ["local-1"]  # no job yet: nothing to show
    with log.open("a") as fh:
        fh.write(_job_start(0, (0, 4)) + "\n")
    clock.now += 1
    progress = poller.poll_once()
    assert progress is not None and (progress.jobs_total, progress.tasks_total, progress.tasks_done) == (1, 4, 0)
    clock.now += 9.5
    assert poller.poll_once() is None and calls == []  # unchanged, and the job has run 9.5 s: no REST yet
    clock.now += 0.5
    progress = poller.poll_once()
    assert poller.asking_rest and calls[0] == "http://127.0.0.1:4040/api/v1/applications/local-1/jobs"
    assert progress == progress_from_rest(JOBS, STAGES)
    poller.event_log.close()  # type: ignore[union-attr]


def test_poller_asks_the_driver_when_no_event_log_appears(tmp_path: Path) -> None:
    """Event logging turned off in the user's conf, or a driver on another machine: REST from the start."""
    clock, calls = _Clock(), []

    def driver(url: str) -> object:
        calls.append(url)
        return JOBS if url.endswith("/jobs") else STAGES

    poller = DriverProgressPoller("http://127.0.0.1:4040", 1, lambda p: None, lambda a: None, app_id="local-1",
                                  fetch=driver, event_log=EventLogTail(tmp_path / "none"), clock=clock)
    assert poller.poll_once() is None and calls == []
    clock.now += EVENT_LOG_GRACE_SECONDS
    assert poller.poll_once() is not None and poller.asking_rest and len(calls) == 2


def test_poller_waits_for_an_event_log_known_to_come(tmp_path: Path) -> None:
    """A pipeline's driver takes tens of seconds to start and prints nothing: its log is waited for, not given up."""
    clock, calls = _Clock(), []
    poller = DriverProgressPoller("http://127.0.0.1:4040", 1, lambda p: None, lambda a: None, app_id="local-1",
                                  fetch=lambda url: calls.append(url), event_log=EventLogTail(tmp_path / "none"),
                                  clock=clock, event_log_grace=None)
    clock.now += 100 * EVENT_LOG_GRACE_SECONDS
    assert poller.poll_once() is None and not poller.asking_rest and calls == []
