"""One Spark application's event log: its metrics when it ends, and its jobs while it runs.

Each try runs with ``spark.eventLog.enabled=true`` in a directory of its own, uncompressed and not rolling (Spark 4
defaults to zstd-compressed rolling logs, which would need a zstd library to read), so the directory holds exactly
one application's JSON-lines log: ``<app id>`` when it ended, ``<app id>.inprogress`` while it runs or when it was
killed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

# Confs that give each try its own readable event log; a user's own value for any of them wins.
EVENT_LOG_CONF = {
    "spark.eventLog.enabled": "true",
    "spark.eventLog.compress": "false",
    "spark.eventLog.rolling.enabled": "false",
}


@dataclass(frozen=True)
class SparkMetrics:
    app_id: str | None = None
    app_name: str | None = None
    duration_ms: int | None = None
    succeeded: bool | None = None  # every job succeeded and the application ended
    jobs: int = 0
    jobs_failed: int = 0
    stages: int = 0
    stages_failed: int = 0
    tasks: int = 0
    tasks_failed: int = 0
    tasks_killed: int = 0
    input_bytes: int = 0
    input_records: int = 0
    output_bytes: int = 0
    output_records: int = 0
    shuffle_read_bytes: int = 0
    shuffle_read_records: int = 0
    shuffle_write_bytes: int = 0
    shuffle_write_records: int = 0
    memory_spilled_bytes: int = 0
    disk_spilled_bytes: int = 0
    executor_run_time_ms: int = 0
    executor_cpu_time_ms: int = 0
    jvm_gc_time_ms: int = 0
    peak_execution_memory_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_event_log(directory: Path) -> Path | None:
    """The application's log in a per-try directory (finished or in progress), or None."""
    if not directory.is_dir():
        return None
    candidates = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    finished = [p for p in candidates if not p.name.endswith(".inprogress")]
    found = finished or candidates
    return found[0] if found else None


def _events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of an in-progress log may be cut short
        if isinstance(event, dict):
            yield event


def metrics_from_events(lines: Iterable[str]) -> SparkMetrics:
    totals: dict[str, int] = {name: 0 for name in (
        "jobs", "jobs_failed", "stages", "stages_failed", "tasks", "tasks_failed", "tasks_killed", "input_bytes",
        "input_records", "output_bytes", "output_records", "shuffle_read_bytes", "shuffle_read_records",
        "shuffle_write_bytes", "shuffle_write_records", "memory_spilled_bytes", "disk_spilled_bytes",
        "executor_run_time_ms", "executor_cpu_time_ms", "jvm_gc_time_ms", "peak_execution_memory_bytes",
    )}
    app_id = app_name = None
    start = end = None
    for event in _events(lines):
        kind = event.get("Event")
        if kind == "SparkListenerApplicationStart":
            app_id, app_name, start = event.get("App ID"), event.get("App Name"), event.get("Timestamp")
        elif kind == "SparkListenerApplicationEnd":
            end = event.get("Timestamp")
        elif kind == "SparkListenerJobEnd":
            totals["jobs"] += 1
            if (event.get("Job Result") or {}).get("Result") != "JobSucceeded":
                totals["jobs_failed"] += 1
        elif kind == "SparkListenerStageCompleted":
            totals["stages"] += 1
            if (event.get("Stage Info") or {}).get("Failure Reason"):
                totals["stages_failed"] += 1
        elif kind == "SparkListenerTaskEnd":
            _add_task(totals, event)
    duration = end - start if isinstance(start, int) and isinstance(end, int) else None
    succeeded = end is not None and totals["jobs_failed"] == 0
    return SparkMetrics(app_id=app_id, app_name=app_name, duration_ms=duration, succeeded=succeeded, **totals)


def _add_task(totals: dict[str, int], event: dict[str, Any]) -> None:
    info = event.get("Task Info") or {}
    totals["tasks"] += 1
    if info.get("Killed"):
        totals["tasks_killed"] += 1
    elif info.get("Failed"):
        totals["tasks_failed"] += 1
    metrics = event.get("Task Metrics") or {}
    read = metrics.get("Shuffle Read Metrics") or {}
    write = metrics.get("Shuffle Write Metrics") or {}
    inputs = metrics.get("Input Metrics") or {}
    outputs = metrics.get("Output Metrics") or {}
    totals["input_bytes"] += int(inputs.get("Bytes Read", 0))
    totals["input_records"] += int(inputs.get("Records Read", 0))
    totals["output_bytes"] += int(outputs.get("Bytes Written", 0))
    totals["output_records"] += int(outputs.get("Records Written", 0))
    totals["shuffle_read_bytes"] += int(read.get("Remote Bytes Read", 0)) + int(read.get("Local Bytes Read", 0))
    totals["shuffle_read_records"] += int(read.get("Total Records Read", 0))
    totals["shuffle_write_bytes"] += int(write.get("Shuffle Bytes Written", 0))
    totals["shuffle_write_records"] += int(write.get("Shuffle Records Written", 0))
    totals["memory_spilled_bytes"] += int(metrics.get("Memory Bytes Spilled", 0))
    totals["disk_spilled_bytes"] += int(metrics.get("Disk Bytes Spilled", 0))
    totals["executor_run_time_ms"] += int(metrics.get("Executor Run Time", 0))
    totals["executor_cpu_time_ms"] += int(metrics.get("Executor CPU Time", 0)) // 1_000_000  # reported in ns
    totals["jvm_gc_time_ms"] += int(metrics.get("JVM GC Time", 0))
    totals["peak_execution_memory_bytes"] = max(
        totals["peak_execution_memory_bytes"], int(metrics.get("Peak Execution Memory", 0))
    )


def read_metrics(directory: Path) -> SparkMetrics | None:
    """Metrics of the application logged in ``directory``, or None when it holds no event log."""
    path = find_event_log(directory)
    if path is None:
        return None
    with path.open(encoding="utf-8", errors="replace") as fh:
        return metrics_from_events(fh)


@dataclass
class LoggedStage:
    name: str
    tasks: int
    succeeded: int = 0  # task ends seen; the driver writes them in bursts
    failed: int = 0
    submitted: bool = False
    completed: bool = False
    failure: str | None = None


@dataclass
class LoggedJob:
    stage_ids: tuple[int, ...]
    result: str | None = None  # "JobSucceeded", "JobFailed"... once it ended

    @property
    def running(self) -> bool:
        return self.result is None


# The events a running application's progress needs; the others (most of the log) are not even parsed.
_TAIL_EVENTS = tuple(f'{{"Event":"SparkListener{kind}"'.encode() for kind in (
    "ApplicationStart", "JobStart", "JobEnd", "StageSubmitted", "StageCompleted", "TaskEnd"))


class EventLogTail:
    """A running application's event log, read as it grows: its app id, jobs and stages so far.

    What it sees when: the driver writes the log through a buffer that it flushes at application start, at each
    job start and end and at each stage end (Spark's EventLoggingListener; checked on Spark 4.3), so a job shows
    here within a poll of starting or ending, while task ends in between arrive in bursts. Reading it costs the
    driver nothing, unlike its REST API (see sparkflow.spark.tracking).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.app_id: str | None = None
        self.jobs: dict[int, LoggedJob] = {}
        self.stages: dict[int, LoggedStage] = {}
        self._file: IO[bytes] | None = None
        self._partial = b""

    @property
    def found(self) -> bool:
        return self._file is not None

    def read(self) -> bool:
        """Take in the events written since the last call; True if there were any. A line still being written
        waits for the next call."""
        if self._file is None:
            path = find_event_log(self.directory)
            if path is None:
                return False
            self._file = path.open("rb")  # stays valid when Spark renames the log at the end
        data = self._partial + self._file.read()
        complete, _, self._partial = data.rpartition(b"\n")
        lines = [line for line in complete.split(b"\n") if line.startswith(_TAIL_EVENTS)]
        for event in _events(line.decode("utf-8", "replace") for line in lines):
            self._take(event)
        return bool(lines)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _take(self, event: dict[str, Any]) -> None:
        kind = event.get("Event")
        if kind == "SparkListenerApplicationStart":
            self.app_id = event.get("App ID") or self.app_id
        elif kind == "SparkListenerJobStart":
            infos = [info for info in event.get("Stage Infos") or () if isinstance(info, dict)]
            for info in infos:
                self.stages.setdefault(int(info.get("Stage ID", -1)), LoggedStage(
                    name=str(info.get("Stage Name", "")), tasks=int(info.get("Number of Tasks", 0))))
            self.jobs[int(event.get("Job ID", -1))] = LoggedJob(tuple(int(i.get("Stage ID", -1)) for i in infos))
        elif kind == "SparkListenerJobEnd":
            job = self.jobs.get(int(event.get("Job ID", -1)))
            if job is not None:
                job.result = str((event.get("Job Result") or {}).get("Result", "JobFailed"))
        elif kind in ("SparkListenerStageSubmitted", "SparkListenerStageCompleted"):
            info = event.get("Stage Info") or {}
            stage = self.stages.setdefault(int(info.get("Stage ID", -1)), LoggedStage(
                name=str(info.get("Stage Name", "")), tasks=int(info.get("Number of Tasks", 0))))
            stage.submitted = True
            if kind == "SparkListenerStageCompleted":
                stage.completed = True
                stage.failure = info.get("Failure Reason")
        elif kind == "SparkListenerTaskEnd":
            of_stage = self.stages.get(int(event.get("Stage ID", -1)))
            task = event.get("Task Info") or {}
            if of_stage is not None:
                if task.get("Failed") or task.get("Killed"):
                    of_stage.failed += 1
                else:
                    of_stage.succeeded += 1
