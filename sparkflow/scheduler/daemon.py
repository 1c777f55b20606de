"""The `sparkflow scheduler` daemon: creates scheduled runs and drives every active run with the scheduler loop
until SIGTERM/SIGINT, planning from the serialized DAGs in the metastore (it imports no DAG file). It starts a DAG
processor as its child process (dag_processor.py), which keeps those serialized DAGs in step with the DAG folder,
unless told not to (a separate `sparkflow dag-processor` does it).

Crash safety: every state lives in the metastore, so a restart after ``kill -9`` only has to look at what was in
flight. At start-up, queued tasks nobody launched go back to scheduled (SchedulerLoop.adopt_orphans); running
tasks whose process is gone are failed or retried (SchedulerLoop._detect_zombies: at once on this host, else by
heartbeat timeout); running tasks whose process lives are left to record their own outcome. Task processes run
in their own sessions, so they outlive a scheduler that dies or stops.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType

from sparkflow.compat.airflow import airflow_finders
from sparkflow.definitions.custom_timetable import add_import_folders
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.serialization import deserialize_dag
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.runtime.callback_process import CallbackProcesses
from sparkflow.scheduler.asset_runs import create_asset_triggered_runs
from sparkflow.scheduler.dag_processor import DagProcessorChild
from sparkflow.scheduler.loop import SchedulerLoop, utcnow
from sparkflow.scheduler.runs import create_scheduled_runs
from sparkflow.settings import Settings

log = logging.getLogger("sparkflow.scheduler")
# Scheduled runs are looked for at most this often (their times are minutes apart, the loop's are milliseconds).
SCHEDULE_EVERY = timedelta(seconds=1)
# The serialized DAGs' hashes are read this often: a changed DAG file is planned from within about a second of
# its parse (one query of ~1,000 short rows when nothing changed).
REFRESH_EVERY = 1.0
# Creating due runs stops after this long and goes on in the next iteration, so a scheduler with 1,000 DAGs due at
# once still re-reads changed DAGs and moves running tasks along between them.
SCHEDULE_BUDGET_SECONDS = 0.5


class SchedulerDaemon:
    def __init__(
        self, settings: Settings, metastore: Metastore, executor_name: str | None = None,
        clock: Callable[[], datetime] = utcnow, dag_processor: bool = False,
    ) -> None:
        self.settings = settings
        self.ms = metastore
        add_import_folders(settings.import_folders, airflow_finders())  # a custom timetable's module by path
        self.clock = clock
        self.dags: dict[str, DAG] = {}  # serialized DAGs, by dag_id
        self._hashes: dict[str, str] | None = None
        # A serialized DAG cannot run a task: every task process (the sequential executor's too) imports its file.
        self.executor = make_executor(settings, metastore, lambda dag_id: None, executor_name, clock=clock)
        self.callbacks = CallbackProcesses()
        self.loop = SchedulerLoop(metastore, self.executor, self.get_dag, clock=clock,
                                  heartbeat_timeout=settings.heartbeat_timeout, log_folder=settings.resolved_log_folder,
                                  task_queued_timeout=settings.task_queued_timeout,
                                  max_map_length=settings.max_map_length,
                                  callback_time_limit=settings.callback_time_limit, callback_sink=self.callbacks)
        self.processor = DagProcessorChild() if dag_processor else None
        self.stop_requested = threading.Event()
        self._next_refresh = 0.0
        self._next_schedule: datetime | None = None
        self._not_due: dict[str, datetime] = {}  # dag_id -> no scheduled run is due before this
        self._schedule_from = ""  # the dag_id where an unfinished pass of schedule_runs goes on

    def get_dag(self, dag_id: str) -> DAG | None:
        return self.dags.get(dag_id)

    # -- the serialized DAGs --------------------------------------------------------------------------------
    def refresh_dags(self, force: bool = False) -> bool:
        """Read the serialized DAGs that changed since the last look (one query of their hashes when none did).
        DAGs that went inactive (their file was deleted) are dropped."""
        hashes = queries.serialized_dag_hashes(self.ms.db)
        if not force and hashes == self._hashes:
            return False
        changed = [d for d, h in hashes.items() if force or self._hashes is None or self._hashes.get(d) != h]
        for record in queries.serialized_dags(self.ms.db, changed):
            try:
                self.dags[record.dag_id] = deserialize_dag(json.loads(record.data), record.dag_hash)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("DAG '%s' is not scheduled: its serialized form cannot be read: %s", record.dag_id, exc)
                self.dags.pop(record.dag_id, None)
        for gone in set(self.dags) - set(hashes):
            del self.dags[gone]
        for dag_id in changed:
            self._not_due.pop(dag_id, None)
        self._hashes = hashes
        self._next_schedule = None  # new or changed DAGs may be due now
        log.info("%d DAG(s) read from the metastore (%d changed)", len(self.dags), len(changed))
        return True

    # -- scheduled runs -------------------------------------------------------------------------------------
    def schedule_runs(self, now: datetime) -> list[DagRunRecord]:
        """Create the due scheduled runs of every unpaused DAG, capping each at max_runs_per_loop (warning)."""
        created: list[DagRunRecord] = []
        cap = self.settings.max_runs_per_loop
        records = queries.list_dags(self.ms.db)
        # Go on where an unfinished pass stopped, then wrap around: no DAG waits behind the others for long.
        records.sort(key=lambda r: (r.dag_id < self._schedule_from, r.dag_id))
        self._schedule_from = ""
        deadline = time.monotonic() + SCHEDULE_BUDGET_SECONDS
        for record in records:
            dag = self.dags.get(record.dag_id)
            if dag is None or record.is_paused or now < self._not_due.get(record.dag_id, now):
                continue
            if time.monotonic() > deadline:
                self._schedule_from = record.dag_id
                self._next_schedule = None  # the next iteration goes on from here
                break
            result = create_scheduled_runs(self.ms, dag, now, cap)
            if result.not_due_before is not None:
                self._not_due[record.dag_id] = result.not_due_before
            created += result.created
            for run in result.created:
                log.info("created %s of DAG '%s' (data interval %s - %s)", run.run_id, run.dag_id,
                         run.data_interval_start, run.data_interval_end)
            if result.capped:
                log.warning("DAG '%s' has more than %d runs due (catchup); created %d now, the rest follow in later "
                            "loops (setting max_runs_per_loop)", dag.dag_id, cap, len(result.created))
        unpaused = {r.dag_id for r in queries.list_dags(self.ms.db) if not r.is_paused}
        created += create_asset_triggered_runs(self.ms, [d for i, d in self.dags.items() if i in unpaused], now)
        return created

    # -- the loop -------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing this loop iteration, then stopping", signal.Signals(signum).name)
        self.stop_requested.set()

    def step(self) -> bool:
        """One iteration: re-read changed serialized DAGs if due, create due runs, tick the loop. Returns whether
        anything changed."""
        self.ms.db.check_file()  # a stat: a deleted or replaced SQLite file must stop the scheduler, not strand runs
        if time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + REFRESH_EVERY
            if self.processor is not None:
                self.processor.ensure_running()
            self.callbacks.reap()
            self.refresh_dags()
        now = self.clock()
        changed = False
        if self._next_schedule is None or now >= self._next_schedule:
            self._next_schedule = now + SCHEDULE_EVERY
            changed = bool(self.schedule_runs(now))
        result = self.loop.tick()
        if result.finished_runs:
            self._next_schedule = None  # a run ended: max_active_runs may let the next one be created now
        return result.changed or changed

    def run(self, num_runs: int | None = None, install_signals: bool = True) -> int:
        """Run until SIGTERM/SIGINT (or ``num_runs`` iterations). Running tasks are left to their runners."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.executor.start()
        if self.processor is not None:
            self.processor.ensure_running()
        self.refresh_dags(force=True)
        self._next_refresh = time.monotonic() + REFRESH_EVERY
        # Another scheduler may share a PostgreSQL metastore (high availability): its queued tasks are not orphans,
        # so there only those queued longer than the heartbeat timeout are adopted (as in every loop iteration).
        shared = self.ms.db.dialect != "sqlite"
        adopted = self.loop.adopt_orphans(
            self.clock() - timedelta(seconds=self.settings.heartbeat_timeout) if shared else self.clock())
        if adopted:
            log.warning("%d queued task(s) of a previous scheduler never started; scheduled them again", adopted)
        log.info("scheduler started (executor %s, parallelism %d)", self.executor.name, self.settings.parallelism)
        iterations = 0
        while not self.stop_requested.is_set():
            changed = self.step()
            iterations += 1
            if num_runs is not None and iterations >= num_runs:
                break
            if not changed and not self.stop_requested.is_set():
                if self.executor.in_flight():
                    self.executor.wait(self.settings.scheduler_loop_interval)
                else:
                    self.stop_requested.wait(self.settings.scheduler_loop_interval)
        self.executor.sync()  # launch what the last iteration queued; from here its runners are on their own
        self.loop.callbacks.drain(self.settings.callback_time_limit)  # a DAG callback of the last iteration
        if self.processor is not None:
            self.processor.stop()
        left = len(self.executor.running())
        log.info("scheduler stopped; %d task(s) left running to their runners", left)
        return 0
