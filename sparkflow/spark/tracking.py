"""Live progress of a running Spark application: from its event log at first, from its REST API once a job runs long.

Why two sources: the driver's first REST request makes it set up its REST layer (Jersey: ~2,300 classes, 2-4 s of
CPU on 2 cores, once per application, whatever is asked). For a job that runs minutes that is noise and buys
per-task progress every poll; for an application whose jobs are over in seconds it is most of what following it
costs (bench/spark_submit_overhead.py). The event log, which each try writes anyway, says when jobs start and end
at no cost to the driver, so progress comes from it until a job has run ``REST_AFTER_JOB_SECONDS``; then the REST
API is polled every interval until the end. When no event log can be read here (a driver on another machine,
event logging turned off by the user), the REST API is polled from the start.

The driver UI (``<ui>/api/v1/applications/<id>/jobs|stages``) answers in stages while the driver starts: connection
refused, then an HTML "Spark is starting up" page (HTTP 200), then 404s and read timeouts, then JSON; it vanishes
when the driver exits. So every answer that is not JSON counts as "not available yet", failures back off, and a
poller never fails the task: the exit code and the event log decide the outcome.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sparkflow.spark.eventlog import EventLogTail

if TYPE_CHECKING:
    import http.client

# http.client and urllib.request (with ssl, ~15 ms) are imported where a request is made: a task process needs them
# only once it asks a REST API, after its spark-submit has started, not before.

HTTP_TIMEOUT = 3.0
# The first JSON request makes the driver set up its REST layer (Jersey), which takes seconds: 1.5-3.5 s on an idle
# 2-core machine, well over 3 s while the application itself starts (an integration test on a loaded machine got no
# answer in 17 s of polling). A 3 s timeout there only abandons and resends the request, and the backoff then
# pushes the next try past the end of a short application; waiting for that one answer costs the driver nothing.
FIRST_ANSWER_TIMEOUT = 30.0
MAX_BACKOFF = 30.0
# How long a job runs before its progress is worth the driver's REST set-up (see above). Spark's own console
# progress bar waits 0.5 s before it shows a stage; the REST layer costs the driver seconds, so this waits longer.
REST_AFTER_JOB_SECONDS = 10.0
# The event log appears within a second of the driver's UI; not there after this long, it is not readable here.
EVENT_LOG_GRACE_SECONDS = 5.0


class Unavailable(Exception):
    """The REST endpoint did not give JSON this time (starting, gone, busy)."""


def get_json(url: str, timeout: float = HTTP_TIMEOUT, method: str = "GET", body: Any = None) -> Any:
    """The JSON answer of ``url``; Unavailable when there is none (refused, timed out, not JSON)."""
    status, answer = request_json(url, timeout, method, body)
    if status >= 400:
        raise Unavailable(f"{url} answered HTTP {status}")
    return answer


def request_json(
    url: str, timeout: float = HTTP_TIMEOUT, method: str = "GET", body: Any = None,
    headers: dict[str, str] | None = None, context: Any = None,
) -> tuple[int, Any]:
    """(HTTP status, JSON answer) of one request; an error status with a JSON body is an answer too (the
    Kubernetes API says 404 that way). Unavailable when no JSON came back."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    sent = {"Accept": "application/json", **(headers or {})}
    if data is not None:
        sent["Content-Type"] = "application/json;charset=UTF-8"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout, context=context)  # noqa: S310 - http(s)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            content_type = response.headers.get("Content-Type") or ""
            status = int(getattr(response, "status", None) or response.getcode())
            if "json" not in content_type:
                raise Unavailable(f"{url} answered HTTP {status} {content_type or 'without a type'}, not JSON")
            return status, json.loads(response.read().decode("utf-8"))
    except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError, OSError) as exc:
        raise Unavailable(f"{url}: {exc}") from None


class KeepAliveJson:
    """GETs JSON over one persistent HTTP/1.1 connection (the driver's Jetty keeps it open), as ``fetch(url)``.

    A poll every second for hours should cost the driver one request, not also a TCP handshake and a new Jetty
    connection each time (a connection per request nearly doubles the driver's CPU per poll). After any error the
    connection is dropped and the next call opens a new one; a kept connection the server has closed meanwhile is
    retried once at once on a fresh one (that is not a failure). Until the first JSON answer, ``first_timeout`` applies
    instead of ``timeout``. Used by one thread at a time.
    """

    def __init__(self, timeout: float = HTTP_TIMEOUT, first_timeout: float = FIRST_ANSWER_TIMEOUT) -> None:
        self.timeout = timeout
        self.first_timeout = first_timeout
        self.answered = False
        self._conn: http.client.HTTPConnection | None = None
        self._origin: tuple[str, str, int | None] | None = None

    def __call__(self, url: str) -> Any:
        import http.client

        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname or "", parts.port)
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        while True:
            reused = self._conn is not None and self._origin == origin
            if not reused:
                self.close()
                conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                timeout = self.timeout if self.answered else self.first_timeout
                self._conn = conn_class(origin[1], origin[2], timeout=timeout)
                self._origin = origin
            assert self._conn is not None
            try:
                self._conn.request("GET", target)
                response = self._conn.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self.close()
                if reused:
                    continue  # closed while idle (keep-alive timeout, driver restart): once more, freshly
                raise Unavailable(f"{url}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()  # a timed-out connection may still deliver the old answer: never reuse it
                raise Unavailable(f"{url}: {exc}") from None
            if response.will_close:
                self.close()
            content_type = response.getheader("Content-Type") or ""
            if response.status != 200 or "json" not in content_type:
                # Also a JSON 404: Jetty renders its error pages as JSON for a client that accepts it, while the
                # REST handler is not mounted yet.
                raise Unavailable(f"{url} answered {response.status} {content_type or 'without a type'}")
            try:
                answer = json.loads(body)
            except ValueError as exc:
                raise Unavailable(f"{url}: {exc}") from None
            if not self.answered:
                self.answered = True
                if self._conn is not None and self._conn.sock is not None:
                    self._conn.sock.settimeout(self.timeout)
            return answer

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
        self._origin = None


@dataclass(frozen=True)
class StageProgress:
    stage_id: int
    name: str
    tasks_done: int
    tasks_total: int
    tasks_active: int
    tasks_failed: int


@dataclass(frozen=True)
class SparkProgress:
    jobs_total: int = 0
    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_running: int = 0
    tasks_total: int = 0
    tasks_done: int = 0
    tasks_failed: int = 0
    active_stages: tuple[StageProgress, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SparkProgress:
        stages = tuple(StageProgress(**s) for s in data.get("active_stages", ()))
        return cls(**{**data, "active_stages": stages})

    def bar(self, width: int = 20) -> str:
        """``[########------------] 40%`` over the tasks of the jobs seen so far."""
        fraction = self.tasks_done / self.tasks_total if self.tasks_total else 0.0
        filled = int(round(fraction * width))
        return f"[{'#' * filled}{'-' * (width - filled)}] {fraction:4.0%}"

    def describe(self) -> str:
        parts = [f"jobs {self.jobs_done}/{self.jobs_total}", f"tasks {self.tasks_done}/{self.tasks_total}"]
        if self.tasks_failed or self.jobs_failed:
            parts.append(f"failed tasks {self.tasks_failed}, jobs {self.jobs_failed}")
        for stage in self.active_stages[:3]:
            parts.append(f"stage {stage.stage_id} ({stage.name[:40]}) {stage.tasks_done}/{stage.tasks_total}")
        return f"{self.bar()} " + ", ".join(parts)


def progress_from_rest(jobs: list[dict[str, Any]], stages: list[dict[str, Any]]) -> SparkProgress:
    """Progress from the driver's /jobs and /stages answers (pure: tests feed recorded JSON)."""
    active = tuple(
        StageProgress(
            stage_id=int(s.get("stageId", -1)),
            name=str(s.get("name", "")),
            tasks_done=int(s.get("numCompleteTasks", 0)),
            tasks_total=int(s.get("numTasks", 0)),
            tasks_active=int(s.get("numActiveTasks", 0)),
            tasks_failed=int(s.get("numFailedTasks", 0)),
        )
        for s in sorted(stages, key=lambda s: s.get("stageId", 0))
        if s.get("status") == "ACTIVE"
    )
    return SparkProgress(
        jobs_total=len(jobs),
        jobs_done=sum(j.get("status") == "SUCCEEDED" for j in jobs),
        jobs_failed=sum(j.get("status") == "FAILED" for j in jobs),
        jobs_running=sum(j.get("status") == "RUNNING" for j in jobs),
        tasks_total=sum(int(j.get("numTasks", 0)) - int(j.get("numSkippedTasks", 0)) for j in jobs),
        tasks_done=sum(int(j.get("numCompletedTasks", 0)) for j in jobs),
        tasks_failed=sum(int(j.get("numFailedTasks", 0)) for j in jobs),
        active_stages=active,
    )


def progress_from_event_log(tail: EventLogTail) -> SparkProgress:
    """Progress from what a running application's event log said so far (pure). A stage that ended counts all
    its tasks done; a job that ended without running some of its stages (their output was reused) does not count
    their tasks, as the REST API's numSkippedTasks does not."""
    tasks_total = tasks_done = tasks_failed = 0
    for job in tail.jobs.values():
        for stage_id in job.stage_ids:
            stage = tail.stages.get(stage_id)
            if stage is None or (not job.running and not stage.submitted):
                continue
            tasks_total += stage.tasks
            done = stage.tasks if stage.completed and not stage.failure else min(stage.succeeded, stage.tasks)
            tasks_done += done
            tasks_failed += stage.failed
    active = tuple(
        StageProgress(stage_id=stage_id, name=stage.name, tasks_done=min(stage.succeeded, stage.tasks),
                      tasks_total=stage.tasks, tasks_active=0, tasks_failed=stage.failed)
        for stage_id, stage in sorted(tail.stages.items())
        if stage.submitted and not stage.completed
    )
    jobs = tail.jobs.values()
    return SparkProgress(
        jobs_total=len(tail.jobs),
        jobs_done=sum(job.result == "JobSucceeded" for job in jobs),
        jobs_failed=sum(not job.running and job.result != "JobSucceeded" for job in jobs),
        jobs_running=sum(job.running for job in jobs),
        tasks_total=tasks_total,
        tasks_done=tasks_done,
        tasks_failed=tasks_failed,
        active_stages=active,
    )


def _json_list(answer: Any) -> list[dict[str, Any]]:
    """The REST API answers lists of objects; anything else is an error page or a driver not ready yet."""
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise Unavailable(f"expected a JSON list of objects, got {str(answer)[:200]}")
    return answer


class DriverProgressPoller:
    """Follows one application's progress every ``interval`` seconds in a thread; reports the app id and changed
    progress.

    With ``event_log``, progress comes from it until a job has run ``rest_after`` seconds, then from the driver's
    REST API (module docstring); without one, or when none appears within ``event_log_grace`` seconds (None: it is
    known to come), from the REST API from the start. Consecutive REST failures back off (interval x 2^n, at most
    30 s) and are only logged: a blip in the REST API never fails a ten-hour job.

    What the REST API costs the driver: the first request sets up Jersey (Spark 4.3: ~2,300 classes loaded, 2-4 s
    of CPU on 2 cores), once per application; after it, a poll is one /jobs request (~2 ms of driver CPU), plus
    /stages only while a job runs.
    """

    def __init__(
        self,
        ui_url: str,
        interval: float,
        on_progress: Callable[[SparkProgress], None],
        on_app_id: Callable[[str], None],
        app_id: str | None = None,
        fetch: Callable[[str], Any] | None = None,
        event_log: EventLogTail | None = None,
        rest_after: float = REST_AFTER_JOB_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
        event_log_grace: float | None = EVENT_LOG_GRACE_SECONDS,
    ) -> None:
        self.ui_url = ui_url.rstrip("/")
        self.interval = max(interval, 0.2)
        self.on_progress = on_progress
        self.on_app_id = on_app_id
        self.app_id = app_id
        self.fetch = fetch if fetch is not None else KeepAliveJson()
        self.event_log = event_log
        self.rest_after = rest_after
        self.event_log_grace = event_log_grace  # None: the log will come, however long the driver takes to start
        self.clock = clock
        self.asking_rest = event_log is None
        self.failures = 0
        self.last: SparkProgress | None = None
        self._created = clock()
        self._job_seen_running: dict[int, float] = {}  # job id -> when this poller first saw it running
        self._stop = threading.Event()
        self._reporting = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="spark-progress", daemon=True)
        self._log = log or logging.getLogger("sparkflow.spark.tracking")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop at once: a request still in flight (to a driver that is shutting down or starting) is
        abandoned rather than waited for, so the task does not end seconds after its application."""
        self._stop.set()
        with self._reporting:  # but never leave while a report is being written
            pass

    def poll_once(self) -> SparkProgress | None:
        """One poll; returns the progress when it changed. Raises Unavailable when the driver did not answer."""
        progress = self._from_event_log() if not self.asking_rest else None
        if self.asking_rest:
            progress = self._from_rest()
        if progress is None or progress == self.last:
            return None
        self.last = progress
        return progress

    def _from_event_log(self) -> SparkProgress | None:
        """Progress from the event log (None before the first job), until it is time to ask the REST API."""
        assert self.event_log is not None
        tail = self.event_log
        tail.read()
        if tail.app_id is not None and self.app_id is None:
            self._found_app_id(tail.app_id)
        now = self.clock()
        running = [job_id for job_id, job in tail.jobs.items() if job.running]
        longest = max((now - self._job_seen_running.setdefault(job_id, now) for job_id in running), default=0.0)
        grace = self.event_log_grace
        missing = not tail.found and grace is not None and now - self._created >= grace
        if longest >= self.rest_after or missing:
            self.asking_rest = True
            self._log.info("Following Spark progress through the driver's REST API (%s) from now on: %s",
                           self.ui_url, f"a job has run {longest:.0f} s" if not missing else "no event log here")
            return None
        return progress_from_event_log(tail) if tail.jobs else None

    def _from_rest(self) -> SparkProgress:
        api = f"{self.ui_url}/api/v1/applications"
        if self.app_id is None:
            apps = _json_list(self.fetch(api))
            if not apps:
                raise Unavailable("no application listed yet")
            self._found_app_id(str(apps[0]["id"]))
        jobs = _json_list(self.fetch(f"{api}/{self.app_id}/jobs"))
        # Active stages exist only while a job runs; before the first job, between jobs and after the last, the
        # answer is known to be empty and asking would cost the driver a request (a second one per poll).
        running = any(job.get("status") == "RUNNING" for job in jobs)
        stages = _json_list(self.fetch(f"{api}/{self.app_id}/stages?status=active")) if running else []
        return progress_from_rest(jobs, stages)

    def _found_app_id(self, app_id: str) -> None:
        self.app_id = app_id
        with self._reporting:
            if not self._stop.is_set():
                self.on_app_id(app_id)

    def _run(self) -> None:
        try:
            self._poll_until_stopped()
        finally:
            if self.event_log is not None:
                self.event_log.close()
            close = getattr(self.fetch, "close", None)
            if close is not None:
                close()

    def _poll_until_stopped(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                progress = self.poll_once()
            except Unavailable as exc:
                self.failures += 1
                delay = min(self.interval * 2 ** min(self.failures, 8), MAX_BACKOFF)
                self._log.debug("progress poll failed (%s in a row): %s", self.failures, exc)
                continue
            except Exception:  # a bug in parsing must not take the task down either
                self.failures += 1
                self._log.exception("progress poll failed")
                delay = MAX_BACKOFF
                continue
            self.failures = 0
            delay = self.interval
            if progress is not None:
                with self._reporting:
                    if not self._stop.is_set():  # after stop() the final figures come from the event log
                        self.on_progress(progress)
