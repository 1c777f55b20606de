"""Progress and metrics of one Spark Connect session, from the shared server's REST API.

Many task tries share one long-running application, so its event log and its job list mix everybody's work. Spark
Connect tags each job with ``SparkConnect_SessionTag_User_<user>_Session_<session id>_Tag_<tag>`` and
``SparkConnect_OperationTag_User_<user>_Session_<session id>_Operation_<id>`` (reference/spark-connect.md): a try
runs in a session of its own, so the jobs whose tags name its session id are exactly its jobs, and their stages
its stages. Progress is computed from those with tracking.progress_from_rest, metrics summed from their stages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sparkflow.spark.eventlog import SparkMetrics
from sparkflow.spark.tracking import KeepAliveJson, SparkProgress, Unavailable, progress_from_rest

# A job's end reaches the REST API through the listener bus a moment after the client saw its result.
SETTLE_SECONDS = 2.0
MAX_STAGE_REQUESTS = 200
HTTP_JOIN_SECONDS = 5.0


def session_marker(session_id: str) -> str:
    """What the tags of one session's jobs contain."""
    return f"_Session_{session_id}_"


def user_marker(user_id: str) -> str:
    """What the tags of the jobs of every session of one Connect user id contain (a process sparkflow does not
    drive itself, such as the pipelines CLI, runs under a user id of the try's own)."""
    return f"_User_{user_id}_Session_"


def ui_candidates(connect_host: str, driver_host: str | None, ui_port: str | None) -> list[str]:
    """Where the Spark UI of a server sparkflow did not start may answer (pure): on the host the client connects to
    first (the driver's own host name may resolve only inside the server's network), then on the driver's host;
    at its spark.ui.port, 4040 when unset."""
    port = ui_port if ui_port and ui_port.isdigit() and ui_port != "0" else "4040"
    hosts = [connect_host] + ([driver_host] if driver_host and driver_host != connect_host else [])
    return [f"http://{f'[{h}]' if ':' in h else h}:{port}" for h in hosts]


def find_ui(candidates: list[str], app_id: str, fetch: Callable[[str], Any]) -> str | None:
    """The first candidate UI whose REST API knows the application ``app_id``; None when none answers."""
    for url in candidates:
        try:
            answer = fetch(f"{url}/api/v1/applications/{app_id}")
        except Unavailable:
            continue
        if isinstance(answer, dict) and answer.get("id") == app_id:
            return url
    return None


def session_jobs(jobs: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    """The jobs whose tags contain ``marker`` (pure)."""
    return [job for job in jobs if any(marker in str(tag) for tag in job.get("jobTags") or ())]


def metrics_from_stages(app_id: str | None, jobs: list[dict[str, Any]], stages: list[dict[str, Any]],
                        duration_ms: int | None) -> SparkMetrics:
    """One try's metrics from its jobs and the REST API's stage records (pure; stage attempts counted each)."""
    def total(key: str) -> int:
        return sum(int(stage.get(key, 0) or 0) for stage in stages)

    return SparkMetrics(
        app_id=app_id,
        app_name=None,
        duration_ms=duration_ms,
        succeeded=all(job.get("status") == "SUCCEEDED" for job in jobs),
        jobs=len(jobs),
        jobs_failed=sum(job.get("status") == "FAILED" for job in jobs),
        stages=len(stages),
        stages_failed=sum(stage.get("status") == "FAILED" for stage in stages),
        tasks=total("numCompleteTasks") + total("numFailedTasks") + total("numKilledTasks"),
        tasks_failed=total("numFailedTasks"),
        tasks_killed=total("numKilledTasks"),
        input_bytes=total("inputBytes"),
        input_records=total("inputRecords"),
        output_bytes=total("outputBytes"),
        output_records=total("outputRecords"),
        shuffle_read_bytes=total("shuffleReadBytes"),
        shuffle_read_records=total("shuffleReadRecords"),
        shuffle_write_bytes=total("shuffleWriteBytes"),
        shuffle_write_records=total("shuffleWriteRecords"),
        memory_spilled_bytes=total("memoryBytesSpilled"),
        disk_spilled_bytes=total("diskBytesSpilled"),
        executor_run_time_ms=total("executorRunTime"),
        executor_cpu_time_ms=total("executorCpuTime") // 1_000_000,  # reported in ns
        jvm_gc_time_ms=total("jvmGcTime"),
        peak_execution_memory_bytes=max((int(s.get("peakExecutionMemory", 0) or 0) for s in stages), default=0),
    )


def _json_list(answer: Any) -> list[dict[str, Any]]:
    if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
        raise Unavailable(f"expected a JSON list of objects, got {str(answer)[:200]}")
    return answer


class SessionTracker:
    """Follows the jobs of one session (or Connect user, see user_marker) on a Spark Connect server: live progress
    from a thread every ``interval`` seconds while the try runs, then the try's metrics. REST failures are logged
    and retried, never raised."""

    def __init__(self, ui_url: str, app_id: str, marker: str, interval: float,
                 on_progress: Callable[[SparkProgress], None], log: logging.Logger,
                 fetch: Callable[[str], Any] | None = None) -> None:
        self.api = f"{ui_url.rstrip('/')}/api/v1/applications/{app_id}"
        self.app_id = app_id
        self.marker = marker
        self.interval = max(interval, 0.2)
        self.on_progress = on_progress
        self.log = log
        self.fetch = fetch if fetch is not None else KeepAliveJson()
        self.last: SparkProgress | None = None
        self._lock = threading.Lock()  # one request at a time on the kept-alive connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spark-connect-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(HTTP_JOIN_SECONDS)  # a poll in flight ends within its request time-out

    def jobs(self) -> list[dict[str, Any]]:
        with self._lock:
            return session_jobs(_json_list(self.fetch(f"{self.api}/jobs")), self.marker)

    def poll_once(self) -> SparkProgress | None:
        jobs = self.jobs()
        if not jobs:
            return None
        running = any(job.get("status") == "RUNNING" for job in jobs)
        stages: list[dict[str, Any]] = []
        if running:
            ours = {int(s) for job in jobs for s in job.get("stageIds") or ()}
            with self._lock:
                active = _json_list(self.fetch(f"{self.api}/stages?status=active"))
            stages = [s for s in active if int(s.get("stageId", -1)) in ours]
        progress = progress_from_rest(jobs, stages)
        if progress == self.last:
            return None
        self.last = progress
        return progress

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.interval if not failures else min(self.interval * 2 ** failures, 30.0)):
            try:
                progress = self.poll_once()
            except Unavailable as exc:
                failures += 1
                self.log.debug("Spark Connect progress poll failed: %s", exc)
                continue
            except Exception:  # a parsing bug must not take the task down
                failures += 1
                self.log.exception("Spark Connect progress poll failed")
                continue
            failures = 0
            if progress is not None and not self._stop.is_set():
                self.on_progress(progress)

    def final(self, duration_ms: int) -> tuple[SparkProgress, SparkMetrics] | None:
        """The try's final progress and metrics, once the server lists none of its jobs as running (at most
        SETTLE_SECONDS later); None when the REST API does not answer."""
        self.stop()
        try:
            deadline = time.monotonic() + SETTLE_SECONDS
            jobs = self.jobs()
            while any(job.get("status") == "RUNNING" for job in jobs) and time.monotonic() < deadline:
                time.sleep(0.1)
                jobs = self.jobs()
            stage_ids = sorted({int(s) for job in jobs for s in job.get("stageIds") or ()})
            stages = []
            for stage_id in stage_ids[:MAX_STAGE_REQUESTS]:
                try:
                    with self._lock:
                        stages += _json_list(self.fetch(f"{self.api}/stages/{stage_id}"))
                except Unavailable:
                    continue  # skipped stages (their output reused) are not listed
            stages = [s for s in stages if s.get("status") != "SKIPPED"]
        except Unavailable as exc:
            self.log.warning("Spark metrics of this session are not available: %s", exc)
            return None
        finally:
            close = getattr(self.fetch, "close", None)
            if close is not None:
                with self._lock:
                    close()
        metrics = metrics_from_stages(self.app_id, jobs, stages, duration_ms)
        progress = SparkProgress(
            jobs_total=metrics.jobs, jobs_done=sum(job.get("status") == "SUCCEEDED" for job in jobs),
            jobs_failed=metrics.jobs_failed, tasks_total=metrics.tasks,
            tasks_done=metrics.tasks - metrics.tasks_failed - metrics.tasks_killed, tasks_failed=metrics.tasks_failed,
        )
        return progress, metrics
