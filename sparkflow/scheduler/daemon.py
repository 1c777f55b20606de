"""The `sparkflow scheduler` daemon: keeps the DAG folder parsed, creates scheduled runs and drives every active
run with the scheduler loop until SIGTERM/SIGINT.

Crash safety: every state lives in the metastore, so a restart after ``kill -9`` only has to look at what was in
flight. At start-up, queued tasks nobody launched go back to scheduled (SchedulerLoop.adopt_orphans); running
tasks whose process is gone are failed or retried (SchedulerLoop._detect_zombies: at once on this host, else by
heartbeat timeout); running tasks whose process lives are left to record their own outcome. Task processes run
in their own sessions, so they outlive a scheduler that dies or stops.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import list_dag_files
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord
from sparkflow.scheduler.asset_runs import create_asset_triggered_runs
from sparkflow.scheduler.dag_processing import parse_dags
from sparkflow.scheduler.loop import SchedulerLoop, utcnow
from sparkflow.scheduler.runs import create_scheduled_runs
from sparkflow.settings import Settings

log = logging.getLogger("sparkflow.scheduler")
# Scheduled runs are looked for at most this often (their times are minutes apart, the loop's are milliseconds).
SCHEDULE_EVERY = timedelta(seconds=1)


class SchedulerDaemon:
    def __init__(
        self, settings: Settings, metastore: Metastore, executor_name: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.ms = metastore
        self.clock = clock
        self.dags: dict[str, DAG] = {}
        self.executor = make_executor(settings, metastore, self.get_dag, executor_name, clock=clock)
        self.loop = SchedulerLoop(metastore, self.executor, self.get_dag, clock=clock,
                                  heartbeat_timeout=settings.heartbeat_timeout, log_folder=settings.resolved_log_folder,
                                  max_map_length=settings.max_map_length,
                                  callback_time_limit=settings.callback_time_limit)
        self.stop_requested = threading.Event()
        self._files_seen: dict[str, tuple[float, int]] | None = None
        self._next_parse = 0.0
        self._next_schedule: datetime | None = None

    def get_dag(self, dag_id: str) -> DAG | None:
        return self.dags.get(dag_id)

    # -- the DAG folder -------------------------------------------------------------------------------------
    def refresh_dags(self, force: bool = False) -> bool:
        """Re-parse the DAG folder when a file was added, changed or removed (or when forced). Import errors are
        replaced by those of this parse, so they stay current."""
        folder = self.settings.resolved_dags_folder
        files: dict[str, tuple[float, int]] = {}
        if folder.is_dir():
            for path in list_dag_files(folder):
                try:
                    st = path.stat()
                except OSError:
                    continue
                files[str(path)] = (st.st_mtime, st.st_size)
        if not force and files == self._files_seen:
            return False
        bag = parse_dags(self.settings, self.ms)
        self.dags = dict(bag.dags)
        self._files_seen = files
        self._next_schedule = None  # new or changed DAGs may be due now
        log.info("parsed %s: %d DAG(s), %d import error(s)", folder, len(bag.dags), len(bag.import_errors))
        return True

    # -- scheduled runs -------------------------------------------------------------------------------------
    def schedule_runs(self, now: datetime) -> list[DagRunRecord]:
        """Create the due scheduled runs of every unpaused DAG, capping each at max_runs_per_loop (warning)."""
        created: list[DagRunRecord] = []
        cap = self.settings.max_runs_per_loop
        for record in queries.list_dags(self.ms.db):
            dag = self.dags.get(record.dag_id)
            if dag is None or record.is_paused:
                continue
            result = create_scheduled_runs(self.ms, dag, now, cap)
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
        """One iteration: re-parse if due, create due runs, tick the loop. Returns whether anything changed."""
        self.ms.db.check_file()  # a stat: a deleted or replaced SQLite file must stop the scheduler, not strand runs
        if time.monotonic() >= self._next_parse:
            self._next_parse = time.monotonic() + self.settings.dag_parse_interval
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
        self.refresh_dags(force=True)
        self._next_parse = time.monotonic() + self.settings.dag_parse_interval
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
        left = len(self.executor.running())
        log.info("scheduler stopped; %d task(s) left running to their runners", left)
        return 0
