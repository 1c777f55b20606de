"""The scheduler loop: apply the planner's decisions through the store and hand work to an executor.

One loop serves the daemon, `trigger --wait` and `dags test` alike; they differ only in which runs they look at,
which executor they use and when they stop. Time comes from an injectable clock so tests control it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sparkflow.definitions.dag import DAG
from sparkflow.executors.base import Executor, ExecutorEvent, Workload
from sparkflow.executors.factory import make_executor
from sparkflow.logs import task_log_path
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord
from sparkflow.scheduler.planner import plan_run
from sparkflow.settings import Settings
from sparkflow.state import RUN_ACTIVE, RunState, TaskState

log = logging.getLogger("sparkflow.scheduler")
ACTOR = "scheduler"
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TickResult:
    changed: bool = False
    finished_runs: list[DagRunRecord] = field(default_factory=list)


class SchedulerLoop:
    def __init__(
        self,
        metastore: Metastore,
        executor: Executor,
        get_dag: Callable[[str], DAG | None],
        clock: Clock = utcnow,
        heartbeat_timeout: float = 60.0,
        log_folder: Path | None = None,
    ) -> None:
        self.ms = metastore
        self.executor = executor
        self.get_dag = get_dag
        self.clock = clock
        self.heartbeat_timeout = timedelta(seconds=heartbeat_timeout)
        self.log_folder = log_folder
        self.hostname = socket.gethostname()
        self._warned_pools: set[str] = set()
        # Queued tasks nobody launched are looked for at most this often (see adopt_orphans).
        self._adopt_every = self.heartbeat_timeout / 4
        self._next_adopt_at: datetime | None = None

    # -- one iteration ---------------------------------------------------------------------------------------
    def tick(self, run_filter: Iterable[int] | None = None) -> TickResult:
        result = TickResult()
        for event in self.executor.sync():
            result.changed |= self._handle_event(event)
        now = self.clock()
        if self._next_adopt_at is None or now >= self._next_adopt_at:
            self._next_adopt_at = now + self._adopt_every
            result.changed |= self.adopt_orphans(now - self.heartbeat_timeout) > 0
        wanted = set(run_filter) if run_filter is not None else None
        runs = [r for r in queries.list_runs(self.ms.db, states=RUN_ACTIVE) if wanted is None or r.id in wanted]
        runs.sort(key=lambda r: (r.logical_date, r.id))
        schedulable: list[tuple[DagRunRecord, DAG, TaskInstanceRecord]] = []
        started_per_dag: dict[str, int] = {}
        for run in runs:
            dag = self.get_dag(run.dag_id)
            if dag is None:
                continue
            if run.state is RunState.QUEUED:
                active = started_per_dag.setdefault(
                    run.dag_id, len(queries.list_runs(self.ms.db, run.dag_id, states=[RunState.RUNNING]))
                )
                if active >= dag.max_active_runs:
                    continue
                if not self.ms.store.set_run_state(run, RunState.RUNNING, ACTOR, now=self.clock()):
                    continue
                started_per_dag[run.dag_id] = active + 1
                run = queries.get_run(self.ms.db, run.dag_id, run.run_id)
                result.changed = True
            changed, finished, ready = self._advance_run(run, dag)
            result.changed |= changed
            if finished is not None:
                result.finished_runs.append(finished)
            schedulable.extend((run, dag, ti) for ti in ready)
        result.changed |= self._queue(schedulable)
        return result

    def _advance_run(
        self, run: DagRunRecord, dag: DAG
    ) -> tuple[bool, DagRunRecord | None, list[TaskInstanceRecord]]:
        now = self.clock()
        tis = {ti.task_id: ti for ti in queries.task_instances(self.ms.db, run.dag_id, run.run_id)}
        changed = self._detect_zombies(tis.values(), now)
        if changed:
            tis = {ti.task_id: ti for ti in queries.task_instances(self.ms.db, run.dag_id, run.run_id)}
        plan = plan_run(
            dag,
            {tid: ti.state for tid, ti in tis.items() if tid in dag.task_dict},
            {tid: ti.next_try_at for tid, ti in tis.items()},
            now,
            self._past_ok(run, dag, tis),
        )
        store = self.ms.store
        for task_id, new in plan.decisions.items():
            changed |= store.set_task_state(tis[task_id].key, TaskState.NONE, new, ACTOR, now=now)
        rescheduled = []
        for task_id in plan.retry_due:
            ti = tis[task_id]
            if ti.state is TaskState.UP_FOR_RESCHEDULE:
                rescheduled.append(task_id)  # straight back to an executor in _queue, continuing its try
                continue
            changed |= store.set_task_state(ti.key, ti.state, TaskState.SCHEDULED, ACTOR, now=now, next_try_at=None)
        finished = None
        if plan.run_state is not None:
            if store.set_run_state(run, plan.run_state, ACTOR, now=now):
                finished = queries.get_run(self.ms.db, run.dag_id, run.run_id)
                self._run_callback(dag, finished)
                changed = True
            return changed, finished, []
        if changed:
            tis = {ti.task_id: ti for ti in queries.task_instances(self.ms.db, run.dag_id, run.run_id)}
        ready = [ti for ti in tis.values() if ti.state is TaskState.SCHEDULED]
        ready += [tis[tid] for tid in rescheduled if tis[tid].state is TaskState.UP_FOR_RESCHEDULE]
        return changed, finished, ready

    def _past_ok(
        self, run: DagRunRecord, dag: DAG, tis: dict[str, TaskInstanceRecord]
    ) -> dict[str, bool] | None:
        """depends_on_past: may each waiting task run, given its instance in the previous run (by logical date)?
        Yes when that one succeeded or was skipped, or when there is no previous run or instance."""
        waiting = [tid for tid, ti in tis.items() if ti.state is TaskState.NONE
                   and tid in dag.task_dict and dag.task_dict[tid].depends_on_past]
        if not waiting:
            return None
        past = queries.previous_task_states(self.ms.db, run.dag_id, run.logical_date, waiting)
        if past is None:
            return None
        return {tid: past.get(tid, TaskState.SUCCESS) in (TaskState.SUCCESS, TaskState.SKIPPED) for tid in waiting}

    def _queue(self, candidates: list[tuple[DagRunRecord, DAG, TaskInstanceRecord]]) -> bool:
        """Hand scheduled tasks (and due rescheduled sensors) to the executor: highest priority first, within
        max_active_tasks per DAG and the open slots of each task's pool."""
        changed = False
        if not candidates:
            return changed
        running = self.executor.running()
        active_per_dag: dict[str, int] = {}
        pool_open = {p.pool: p.open for p in queries.list_pools(self.ms.db)}
        candidates.sort(key=lambda c: (-c[2].priority_weight, c[0].logical_date, c[2].id))
        for _run, dag, ti in candidates:
            if self.executor.open_slots() <= 0:
                break
            if ti.key in running:
                continue
            if dag.dag_id not in active_per_dag:
                active_per_dag[dag.dag_id] = self._active_tasks(dag.dag_id)
            if active_per_dag[dag.dag_id] >= dag.max_active_tasks:
                continue
            if ti.pool not in pool_open:
                if ti.pool not in self._warned_pools:
                    self._warned_pools.add(ti.pool)
                    log.warning("%s: pool '%s' does not exist, so the task waits; create it with "
                                "`sparkflow pools set %s SLOTS`", ti.key, ti.pool, ti.pool)
                continue
            if ti.pool_slots > pool_open[ti.pool]:
                continue
            # A rescheduled sensor continues its try; anything else starts the next one.
            try_number = ti.try_number if ti.state is TaskState.UP_FOR_RESCHEDULE else ti.try_number + 1
            if not self.ms.store.set_task_state(
                ti.key, ti.state, TaskState.QUEUED, ACTOR, now=self.clock(),
                try_number=try_number, queued_at=self.clock(), executor=self.executor.name, next_try_at=None,
            ):
                continue
            pool_open[ti.pool] -= ti.pool_slots
            active_per_dag[dag.dag_id] += 1
            self.executor.queue(Workload(ti.key, try_number, ti.priority_weight, ti.queue))
            changed = True
        return changed

    def _active_tasks(self, dag_id: str) -> int:
        runs = queries.list_runs(self.ms.db, dag_id, states=[RunState.RUNNING])
        tis = queries.task_instances_of_runs(self.ms.db, [r.id for r in runs])
        return sum(ti.state in (TaskState.QUEUED, TaskState.RUNNING) for ti in tis)

    # -- failures the task could not report itself -------------------------------------------------------------
    def _handle_event(self, event: ExecutorEvent) -> bool:
        if event.exit_code == 0:
            return True
        ti = queries.get_task_instance(self.ms.db, event.workload.key)
        if ti.try_number != event.workload.try_number or ti.state not in (TaskState.QUEUED, TaskState.RUNNING):
            return True  # the runner recorded an outcome before dying, or the task moved on
        return self._fail_lost(ti, event.reason or f"task process exited with code {event.exit_code}")

    def _detect_zombies(self, tis: Iterable[TaskInstanceRecord], now: datetime) -> bool:
        """Running tasks nobody here owns whose heartbeat stopped: their process died (kill -9, OOM, lost host)."""
        changed = False
        owned = self.executor.running()
        for ti in tis:
            if ti.state is not TaskState.RUNNING or ti.key in owned:
                continue
            if self._process_gone(ti):
                changed |= self._fail_lost(
                    ti, f"the task process (pid {ti.pid} on {ti.hostname}) is gone without recording an outcome"
                )
                continue
            beat = ti.last_heartbeat_at or ti.start_date
            if beat is not None and now - beat > self.heartbeat_timeout:
                changed |= self._fail_lost(ti, f"no heartbeat for {self.heartbeat_timeout}; the task process died")
        return changed

    def _process_gone(self, ti: TaskInstanceRecord) -> bool:
        """True when the task's process ran on this host and no longer exists (or is a zombie nobody reaps).
        A process elsewhere, or one we cannot see, is judged by its heartbeat instead."""
        if ti.pid is None or ti.hostname != self.hostname or ti.pid == os.getpid():
            return False
        try:
            os.kill(ti.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        try:
            stat = Path(f"/proc/{ti.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]

    def adopt_orphans(self, queued_before: datetime) -> int:
        """Queued tasks that no executor here holds and that were queued before ``queued_before`` were lost
        between queuing and starting (the scheduler that queued them died): put them back to scheduled.
        A runner that still starts one fails its compare-and-set on (queued, try_number), so it never runs twice.
        Running tasks are judged in _detect_zombies (alive: left alone; gone: failed or retried)."""
        owned = self.executor.running()
        moved = 0
        for ti in queries.task_instances_in_states(self.ms.db, [TaskState.QUEUED]):
            if ti.key in owned or (ti.queued_at is not None and ti.queued_at > queued_before):
                continue
            if self.ms.store.set_task_state(
                ti.key, TaskState.QUEUED, TaskState.SCHEDULED, ACTOR, now=self.clock(), expected_try=ti.try_number,
                detail="queued but never started (its scheduler stopped); scheduled again",
            ):
                log.warning("%s was queued but never started; scheduled again", ti.key)
                moved += 1
        return moved

    def _fail_lost(self, ti: TaskInstanceRecord, reason: str) -> bool:
        dag = self.get_dag(ti.dag_id)
        task = dag.task_dict.get(ti.task_id) if dag else None
        now = self.clock()
        if ti.try_number <= ti.max_tries and task is not None:
            new, fields = TaskState.UP_FOR_RETRY, {"next_try_at": now + task.retry_delay_for(ti.try_number)}
        else:
            new, fields = TaskState.FAILED, {}
        log.warning("%s: %s; marking %s", ti.key, reason, new.value)
        moved = self.ms.store.set_task_state(ti.key, ti.state, new, ACTOR, detail=reason, now=now, error=reason,
                                             expected_try=ti.try_number, **fields)
        if moved:
            self._note_in_task_log(ti, f"{reason}; the scheduler marked the task {new.value}")
        return moved

    def _note_in_task_log(self, ti: TaskInstanceRecord, message: str) -> None:
        """Put the scheduler's reason in the try's own log, where the user looks first."""
        if ti.log_path:
            path = Path(ti.log_path)
        elif self.log_folder is not None:
            path = task_log_path(self.log_folder, ti.dag_id, ti.run_id, ti.task_id, max(ti.try_number, 1))
        else:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as fh:
                fh.write(f"[{self.clock().isoformat()}] ERROR - {message}\n")
        except OSError:
            log.exception("could not write to the task log %s", path)

    def _run_callback(self, dag: DAG, run: DagRunRecord) -> None:
        callback = dag.on_success_callback if run.state is RunState.SUCCESS else dag.on_failure_callback
        if callback is None:
            return
        try:
            callback({"dag": dag, "dag_run": run, "run_id": run.run_id, "reason": run.state.value})
        except Exception:
            log.exception("DAG '%s' %s callback raised", dag.dag_id, run.state.value)

    # -- driving ---------------------------------------------------------------------------------------------
    def run_until_finished(
        self,
        run: DagRunRecord,
        on_tick: Callable[[], None] | None = None,
        idle_sleep: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> DagRunRecord:
        """Drive one run to a final state (what `trigger --wait` and `dags test` do)."""
        self.executor.start()
        try:
            while True:
                result = self.tick(run_filter=[run.id])
                if on_tick is not None:
                    on_tick()
                current = queries.get_run(self.ms.db, run.dag_id, run.run_id)
                if current.state not in RUN_ACTIVE:
                    return current
                if not result.changed:
                    self.idle(idle_sleep, sleep)
        finally:
            self.executor.end(kill=True)

    def idle(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Nothing changed: wait, but wake as soon as a task process ends (react at once, do not sleep)."""
        if self.executor.running():
            self.executor.wait(seconds)
        else:
            sleep(seconds)


def drive_run(
    settings: Settings,
    metastore: Metastore,
    dag: DAG,
    run: DagRunRecord,
    executor_name: str | None = None,
    on_tick: Callable[[], None] | None = None,
) -> DagRunRecord:
    """Run one DagRun to its end with the configured executor: the scheduler's own loop, limited to this run."""
    dags = {dag.dag_id: dag}
    executor = make_executor(settings, metastore, dags.get, executor_name)
    loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=settings.heartbeat_timeout,
                         log_folder=settings.resolved_log_folder)
    return loop.run_until_finished(run, on_tick=on_tick)
