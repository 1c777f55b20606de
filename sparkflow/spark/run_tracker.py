"""Following one Spark application for its task instance: the ids Spark prints (recorded at once), live
progress (sparkflow.spark.tracking), and the metrics of its event log when it ends."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from sparkflow.definitions.context import TaskInstanceHandle
from sparkflow.logs import mask_sensitive_settings
from sparkflow.spark.eventlog import EventLogTail, read_metrics
from sparkflow.spark.submit import parse_ids
from sparkflow.spark.tracking import EVENT_LOG_GRACE_SECONDS, DriverProgressPoller, SparkProgress


class SparkRunTracker:
    """Follows one submission: ids from the output (recorded at once), live progress from the try's event log and
    the driver's REST API (sparkflow.spark.tracking), metrics from the event log at the end."""

    def __init__(
        self, ti: TaskInstanceHandle | None, interval: float, log: logging.Logger, event_dir: Path | None
    ) -> None:
        self.ti = ti
        self.interval = float(interval)
        self.log = log
        self.event_dir = event_dir
        self.ids: dict[str, str] = {}
        self.ui_host = "127.0.0.1"  # a client-mode driver runs here; Spark's "Start Jetty HOST:PORT" line may say more
        self.poller: DriverProgressPoller | None = None
        self.expected_ui_url: str | None = None

    def on_line(self, line: str) -> None:
        self.log.info("%s", mask_sensitive_settings(line))
        seen = parse_ids(line)
        if not seen.any():
            return
        if seen.ui_host:
            self.ui_host = seen.ui_host
        ui_url = seen.ui_url or (f"http://{self.ui_host}:{seen.ui_port}" if seen.ui_port else None)
        found = {k: v for k, v in (("app_id", seen.app_id), ("driver_id", seen.driver_id), ("ui_url", ui_url))
                 if v and self.ids.get(k) != v}
        if not found:
            return
        self.record(**found)
        if "app_id" in found and self.poller is not None and self.poller.app_id is None:
            self.poller.app_id = found["app_id"]  # Spark prints the UI port first: spares the /applications call
        if "ui_url" in found and self.poller is None:
            self._start_poller(found["ui_url"])

    def expect_driver(self, ui_url: str, event_log_written: bool) -> None:
        """Follow a driver that prints no ids (a pipeline's, see sparkflow.spark.pipelines) from now on: its UI
        will be at ``ui_url`` (a port the try chose), and, when ``event_log_written``, its event log in this try's
        directory whenever the driver gets that far. Its app id (then the UI URL) is recorded once known."""
        self.expected_ui_url = ui_url
        if self.poller is None:
            self._start_poller(ui_url, event_log_grace=None if event_log_written else 0.0)

    def _start_poller(self, ui_url: str, event_log_grace: float | None = EVENT_LOG_GRACE_SECONDS) -> None:
        self.poller = DriverProgressPoller(
            ui_url, self.interval, self.on_progress, self.on_app_id, app_id=self.ids.get("app_id"),
            event_log=EventLogTail(self.event_dir) if self.event_dir is not None else None, log=self.log,
            event_log_grace=event_log_grace,
        )
        self.poller.start()

    def record(self, **ids: str) -> None:
        """Keep these ids (app_id, driver_id, ui_url) and store them on the task instance at once."""
        self.ids.update(ids)
        if self.ti is not None:
            self.ti.record_external_ids(**{f"spark_{k}": v for k, v in ids.items()})

    def on_app_id(self, app_id: str) -> None:
        """The id the driver's REST API reports; what the output or event log said wins (it is this app's)."""
        if "app_id" not in self.ids:
            self.record(app_id=app_id)
        if self.expected_ui_url is not None and "ui_url" not in self.ids:
            self.record(ui_url=self.expected_ui_url)  # the driver has started: its UI is up

    def on_progress(self, progress: SparkProgress) -> None:
        if self.ti is not None:
            self.ti.record_spark_progress(progress.to_dict())
        self.log.info("Spark progress %s", progress.describe())

    @contextlib.contextmanager
    def following(self) -> Iterator[None]:
        """While the application runs; afterwards (also when it failed or was killed) stop polling and record
        the metrics from its event log."""
        try:
            yield
        finally:
            if self.poller is not None:
                self.poller.stop()
            self.record_metrics()

    def record_metrics(self) -> None:
        metrics = read_metrics(self.event_dir) if self.event_dir is not None else None
        if metrics is None or self.ti is None:
            return
        if metrics.app_id and self.ids.get("app_id") != metrics.app_id:  # the event log is the authority
            self.record(app_id=metrics.app_id)
        self.ti.record_spark_metrics(metrics.to_dict())
        if metrics.jobs:
            final = SparkProgress(jobs_total=metrics.jobs, jobs_done=metrics.jobs - metrics.jobs_failed,
                                  jobs_failed=metrics.jobs_failed, tasks_total=metrics.tasks,
                                  tasks_done=metrics.tasks - metrics.tasks_failed - metrics.tasks_killed,
                                  tasks_failed=metrics.tasks_failed)
            self.ti.record_spark_progress(final.to_dict())
        self.log.info(
            "Spark metrics: %s jobs, %s stages, %s tasks (%s failed), input %s B, shuffle read %s B / write %s B, "
            "spill %s B, GC %s ms, duration %s ms",
            metrics.jobs, metrics.stages, metrics.tasks, metrics.tasks_failed, metrics.input_bytes,
            metrics.shuffle_read_bytes, metrics.shuffle_write_bytes,
            metrics.memory_spilled_bytes + metrics.disk_spilled_bytes, metrics.jvm_gc_time_ms, metrics.duration_ms,
        )
