"""The scheduler loop: apply the planner's decisions through the store and hand work to an executor.

One loop serves the daemon, `trigger --wait` and `dags test` alike; they differ only in which runs they look at,
which executor they use and when they stop. Time comes from an injectable clock so tests control it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sparkflow.definitions.dag import DAG
from sparkflow.definitions.expand_input import MAX_MAP_LENGTH
from sparkflow.definitions.serialization import is_serialized
from sparkflow.executors.base import Executor, ExecutorEvent, Workload, task_process_gone
from sparkflow.executors.factory import make_executor
from sparkflow.metastore import queries
from sparkflow.metastore.bootstrap import Metastore
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TaskSlot, TIKey
from sparkflow.metastore.store import SchedulingClaims, TaskStateChange
from sparkflow.runtime.lost_try import call_lost_try_callback, fail_lost_try, note_in_try_log
from sparkflow.scheduler import interventions
from sparkflow.scheduler.callbacks import CallbackRunner
from sparkflow.scheduler.mapping import expand_mapped_task
from sparkflow.scheduler.planner import RunPlan, TIRef, plan_run, task_of
from sparkflow.settings import Settings
from sparkflow.state import RUN_ACTIVE, RUN_TERMINAL, RunState, TaskState

log = logging.getLogger("sparkflow.scheduler")
ACTOR = "scheduler"
# How long a drive that is over waits for task processes still running callbacks after their outcome.
AFTER_OUTCOME_GRACE_SECONDS = 60.0
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TickResult:
    """``changed``: something happened after this iteration planned that may let more work start (a task ended
    while being launched, as every task does with the sequential executor; a run finished, so a queued one may
    start; a lost task was failed or re-queued), so the caller should run the next iteration at once. Decisions
    and queued tasks are not such a change: the iteration already acted on them, and the next thing to react
    to is a task ending, which the executor's wait() reports the moment it happens."""

    changed: bool = False
    finished_runs: list[DagRunRecord] = field(default_factory=list)


@dataclass
class _RunStep:
    """What one iteration decided for one run, written together with every other run's (one transaction)."""

    run: DagRunRecord
    dag: DAG
    changed: bool = False
    run_state: RunState | None = None
    changes: list[TaskStateChange] = field(default_factory=list)
    ready: list[tuple[TaskSlot, TaskState]] = field(default_factory=list)  # candidates to queue, from state


class SchedulerLoop:
    def __init__(
        self,
        metastore: Metastore,
        executor: Executor,
        get_dag: Callable[[str], DAG | None],
        clock: Clock = utcnow,
        heartbeat_timeout: float = 60.0,
        log_folder: Path | None = None,
        task_queued_timeout: float = 600.0,
        max_map_length: int = MAX_MAP_LENGTH,
        callback_time_limit: float = 60.0,
        callback_sink: Callable[[Mapping[str, Any]], None] | None = None,
    ) -> None:
        self.ms = metastore
        # Serialized DAGs hold no callbacks: their callbacks are requested from this sink (a callback process).
        self.callback_sink = callback_sink
        self.executor = executor
        self.get_dag = get_dag
        self.clock = clock
        self.heartbeat_timeout = timedelta(seconds=heartbeat_timeout)
        self.log_folder = log_folder
        self.max_map_length = max_map_length
        self.callbacks = CallbackRunner(callback_time_limit)  # user callbacks run off this loop
        self._warned_pools: set[str] = set()
        # Queued tasks nobody launched are looked for at most this often (see adopt_orphans).
        self._adopt_every = self.heartbeat_timeout / 4
        self._next_adopt_at: datetime | None = None
        # Queued tasks the executor has held too long are looked for at most this often (Airflow checks every
        # 120 s: task_queued_timeout_check_interval).
        self.task_queued_timeout = timedelta(seconds=task_queued_timeout)
        self._stuck_every = min(self.task_queued_timeout / 4, timedelta(seconds=120))
        self._next_stuck_check_at: datetime | None = None
        # Each active run's task instances as last read (run id -> task_id -> slot), kept up to date from the
        # audit events between iterations (see _changed_tasks).
        self._slots: dict[int, dict[TIRef, TaskSlot]] = {}
        self._events_seen: int | None = None
        self._next_full_read = 0.0

    # -- one iteration ---------------------------------------------------------------------------------------
    # An iteration reads each active run's task instances as a few plain columns (queries.task_slots, much cheaper than
    # full records), reads full records only for the instances it acts on, and writes every decision of the iteration
    # (none -> scheduled, retries -> scheduled, scheduled -> queued) in ONE transaction (Store.set_task_states): each
    # change is still a compare-and-set with its own audit event, so a crash leaves either all of them or none, and a
    # queued task nobody launched is adopted as before. The executor launches what was queued within the same iteration,
    # so a finished task's successor starts without a second pass through the loop.
    def tick(self, run_filter: Iterable[int] | None = None) -> TickResult:
        # PostgreSQL: the iteration holds row locks on the DAGs it advances (Store.scheduling_claims), so a second
        # scheduler on the same database skips them until this iteration ends.
        with self.ms.store.scheduling_claims() as claims:
            return self._tick(run_filter, claims)

    def _tick(self, run_filter: Iterable[int] | None, claims: SchedulingClaims) -> TickResult:
        result = TickResult()
        self._handle_events(self.executor.sync())  # what they changed is planned below, in this same iteration
        now = self.clock()
        if self._next_adopt_at is None or now >= self._next_adopt_at:
            self._next_adopt_at = now + self._adopt_every
            result.changed |= self.adopt_orphans(now - self.heartbeat_timeout) > 0
        if self._next_stuck_check_at is None:  # nothing this loop queued can be stuck yet: no query at start
            self._next_stuck_check_at = now + self._stuck_every
        elif now >= self._next_stuck_check_at:
            self._next_stuck_check_at = now + self._stuck_every
            result.changed |= self.fail_stuck_in_queued(now) > 0
        wanted = set(run_filter) if run_filter is not None else None
        changed_tasks = self._changed_tasks()
        runs = [r for r in queries.list_runs(self.ms.db, states=RUN_ACTIVE) if wanted is None or r.id in wanted]
        runs = claims.runs(sorted(runs, key=lambda r: (r.logical_date, r.id)))
        self._slots = {r.id: self._slots[r.id] for r in runs if r.id in self._slots}  # forget finished runs
        steps: list[_RunStep] = []
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
                started = self.ms.store.set_run_state(run, RunState.RUNNING, ACTOR, now=self.clock())
                if started is None:
                    continue
                started_per_dag[run.dag_id] = active + 1
                run = started
                result.changed = True
            if _timed_out(run, dag, now):
                finished = self._time_out(run, dag, now)
                if finished is not None:
                    result.finished_runs.append(finished)
                    result.changed = True
                continue
            step = self._advance_run(run, dag, now, changed_tasks)
            result.changed |= step.changed
            steps.append(step)
        queued = self._choose_queued(steps)
        changes = [c for step in steps for c in step.changes] + [c for c, _ in queued]
        moved = dict(zip(map(id, changes), self.ms.store.set_task_states(changes), strict=True)) if changes else {}
        for change, workload in queued:
            if moved[id(change)]:
                self.executor.queue(workload)
        for step in steps:
            if step.run_state is None or not all(moved[id(c)] for c in step.changes):
                continue  # not finished, or someone else moved a task meanwhile: decide again next time
            finished = self.ms.store.set_run_state(step.run, step.run_state, ACTOR, now=now)
            if finished is not None:
                self._run_callback(step.dag, finished)
                result.finished_runs.append(finished)
                result.changed = True
        if queued:
            # Launch now rather than in the next iteration's sync(); what ends meanwhile is handled here too.
            result.changed |= self._handle_events(self.executor.sync())
        return result

    def _changed_tasks(self) -> dict[tuple[str, str], list[TaskSlot]] | None:
        """The task instances that changed since the last iteration, as they are now, by run; None: read every
        run in full.

        Why: re-reading every task instance of every run each iteration grows with the size of the runs. On SQLite
        every change of a task's state, try or retry time writes an audit event in the same transaction, and event
        ids grow in commit order, so the events after the newest one seen name exactly what changed. Runs are still
        read in full once a second (and always on PostgreSQL, where ids do not follow commit order), so nothing is
        ever missed for longer than that."""
        if self.ms.db.dialect != "sqlite":
            return None
        mono = time.monotonic()
        if self._events_seen is None or mono >= self._next_full_read:
            self._events_seen = queries.last_event_id(self.ms.db)  # before the full reads, so nothing falls between
            self._next_full_read = mono + 1.0
            self._slots.clear()
            return None
        self._events_seen, changed = queries.task_changes_since(self.ms.db, self._events_seen)
        return changed

    def _run_slots(self, run: DagRunRecord, changed: dict[tuple[str, str], list[TaskSlot]] | None
                   ) -> dict[TIRef, TaskSlot]:
        slots = self._slots.get(run.id)
        if slots is None or changed is None:
            slots = queries.task_slots(self.ms.db, run.dag_id, run.run_id)
        elif (run_key := (run.dag_id, run.run_id)) in changed:
            fresh = changed[run_key]
            slots = {**slots, **{slot.ref: slot for slot in fresh}}
            for slot in fresh:
                if slot.map_index >= 0:
                    slots.pop(slot.task_id, None)  # the placeholder became instance 0 when the task was expanded
        self._slots[run.id] = slots
        return slots

    def _advance_run(self, run: DagRunRecord, dag: DAG, now: datetime,
                     changed_tasks: dict[tuple[str, str], list[TaskSlot]] | None = None) -> _RunStep:
        slots = self._run_slots(run, changed_tasks)
        changed = self._detect_zombies(run, slots, now)
        if changed:
            slots = self._read_slots(run)
        plan = self._plan(run, dag, slots, now)
        if plan.expand:
            # Mapped tasks whose upstream is done get their instances now, and are planned in this same iteration.
            for task_id in plan.expand:
                expand_mapped_task(self.ms, dag, run, task_id, ACTOR, self.max_map_length, now)
            changed = True
            slots = self._read_slots(run)
            plan = self._plan(run, dag, slots, now)
        step = _RunStep(run, dag, changed=changed, run_state=plan.run_state)
        # expected_try: the try number read above, so the store can make none -> scheduled -> queued one UPDATE
        # (Store.set_task_states) and still audit each change with its try.
        for ref, new in plan.decisions.items():
            step.changes.append(self._change(run, slots[ref], TaskState.NONE, new, now,
                                             expected_try=slots[ref].try_number))
            if new is TaskState.SCHEDULED:
                step.ready.append((slots[ref], TaskState.SCHEDULED))
        for ref in plan.retry_due:
            ti = slots[ref]
            if ti.state is TaskState.UP_FOR_RESCHEDULE and plan.run_state is None:
                step.ready.append((ti, ti.state))  # straight back to an executor, continuing its try
                continue
            step.changes.append(self._change(run, ti, ti.state, TaskState.SCHEDULED, now,
                                             expected_try=ti.try_number, next_try_at=None))
            step.ready.append((ti, TaskState.SCHEDULED))
        if plan.run_state is not None:
            step.ready = []
            return step
        step.ready += [(ti, ti.state) for ti in slots.values() if ti.state is TaskState.SCHEDULED]
        return step

    def _read_slots(self, run: DagRunRecord) -> dict[TIRef, TaskSlot]:
        slots = queries.task_slots(self.ms.db, run.dag_id, run.run_id)
        self._slots[run.id] = slots
        return slots

    def _plan(self, run: DagRunRecord, dag: DAG, slots: Mapping[TIRef, TaskSlot], now: datetime) -> RunPlan:
        return plan_run(
            dag,
            {ref: ti.state for ref, ti in slots.items() if task_of(ref) in dag.task_dict},
            {ref: ti.next_try_at for ref, ti in slots.items()},
            now,
            self._past_ok(run, dag, slots),
        )

    @staticmethod
    def _change(run: DagRunRecord, ti: TaskSlot, old: TaskState, new: TaskState, now: datetime,
                expected_try: int | None = None, **fields: Any) -> TaskStateChange:
        return TaskStateChange(TIKey(run.dag_id, run.run_id, ti.task_id, ti.map_index), old, new, ACTOR, now=now,
                               expected_try=expected_try, fields=fields)

    def _past_ok(self, run: DagRunRecord, dag: DAG, tis: Mapping[TIRef, TaskSlot]) -> dict[str, bool] | None:
        """depends_on_past: may each waiting task run, given its instance in the previous run (by logical date)?
        Yes when that one succeeded or was skipped, or when there is no previous run or instance."""
        waiting = [ti.task_id for ti in tis.values() if ti.state is TaskState.NONE
                   and ti.task_id in dag.task_dict and dag.task_dict[ti.task_id].depends_on_past]
        if not waiting:
            return None
        past = queries.previous_task_states(self.ms.db, run.dag_id, run.logical_date, waiting)
        if past is None:
            return None
        return {tid: past.get(tid, TaskState.SUCCESS) in (TaskState.SUCCESS, TaskState.SKIPPED) for tid in waiting}

    def _choose_queued(self, steps: list[_RunStep]) -> list[tuple[TaskStateChange, Workload]]:
        """Which ready tasks (scheduled, or due rescheduled sensors) go to the executor: highest priority first,
        within the executor's open slots, max_active_tasks per DAG and the open slots of each task's pool."""
        candidates = [(step.run, step.dag, ti, state) for step in steps for ti, state in step.ready]
        chosen: list[tuple[TaskStateChange, Workload]] = []
        if not candidates:
            return chosen
        open_slots = self.executor.open_slots()
        running = self.executor.running()
        # One read for the pools' and the DAGs' limits: each read transaction has a cost of its own.
        pools, active_per_dag = queries.queue_limits(self.ms.db, {c[1].dag_id for c in candidates})
        pool_open = {p.pool: p.open for p in pools}
        # max_active_tis_per_dag(run): read only when a candidate has such a limit (the hot path stays one read)
        limited = [c for c in candidates if _task_limits(c[1], c[2].task_id) != (None, None)]
        per_task = queries.active_task_counts(self.ms.db, {c[1].dag_id for c in limited}) if limited else {}
        per_dag_task: dict[tuple[str, str], int] = {}
        for (dag_id, _, task_id), count in per_task.items():
            per_dag_task[(dag_id, task_id)] = per_dag_task.get((dag_id, task_id), 0) + count
        candidates.sort(key=lambda c: (-c[2].priority_weight, c[0].logical_date, c[2].id))
        queued_at = self.clock()  # one time for the iteration: alike changes (mapped instances) make one UPDATE
        for run, dag, ti, state in candidates:
            if open_slots <= 0:
                break
            key = TIKey(run.dag_id, run.run_id, ti.task_id, ti.map_index)
            if key in running:
                continue
            if active_per_dag[dag.dag_id] >= dag.max_active_tasks:
                continue
            if ti.pool not in pool_open:
                if ti.pool not in self._warned_pools:
                    self._warned_pools.add(ti.pool)
                    log.warning("%s: pool '%s' does not exist, so the task waits; create it with "
                                "`sparkflow pools set %s SLOTS`", key, ti.pool, ti.pool)
                continue
            if ti.pool_slots > pool_open[ti.pool]:
                continue
            per_dag, per_run = _task_limits(dag, ti.task_id)
            if per_dag is not None and per_dag_task.get((dag.dag_id, ti.task_id), 0) >= per_dag:
                continue
            if per_run is not None and per_task.get((dag.dag_id, run.run_id, ti.task_id), 0) >= per_run:
                continue
            if per_dag is not None or per_run is not None:
                per_dag_task[(dag.dag_id, ti.task_id)] = per_dag_task.get((dag.dag_id, ti.task_id), 0) + 1
                per_task[(dag.dag_id, run.run_id, ti.task_id)] = per_task.get(
                    (dag.dag_id, run.run_id, ti.task_id), 0) + 1
            # A rescheduled sensor continues its try; anything else starts the next one.
            try_number = ti.try_number if state is TaskState.UP_FOR_RESCHEDULE else ti.try_number + 1
            change = TaskStateChange(key, state, TaskState.QUEUED, ACTOR, now=queued_at, fields=dict(
                try_number=try_number, queued_at=queued_at, executor=self.executor.name, next_try_at=None))
            chosen.append((change, Workload(key, try_number, ti.priority_weight, ti.queue)))
            pool_open[ti.pool] -= ti.pool_slots
            active_per_dag[dag.dag_id] += 1
            open_slots -= 1
        return chosen

    # -- failures the task could not report itself -------------------------------------------------------------
    def _handle_events(self, events: list[ExecutorEvent]) -> bool:
        """Act on workloads that ended; True when that may let more work start (not yet planned for). The
        instances of those the executor could not see recorded are read together (one read transaction)."""
        if not events:
            return False
        unseen = [e.workload.key for e in events if not e.recorded]
        found = queries.task_slots_of(self.ms.db, unseen) if unseen else []
        # One missing (its run deleted meanwhile): each is read on its own below.
        slots = dict(zip(unseen, found, strict=True)) if len(found) == len(unseen) else {}
        changed = False
        for event in events:
            changed |= self._handle_event(event, slots.get(event.workload.key))
        return changed

    def _handle_event(self, event: ExecutorEvent, slot: TaskSlot | None) -> bool:
        """``slot``: the instance's scheduling columns as read after the workload ended."""
        if event.recorded or (slot is not None and not _lost(event, slot.state, slot.try_number)):
            return True
        ti = queries.get_task_instance(self.ms.db, event.workload.key)
        if not _lost(event, ti.state, ti.try_number):
            return True  # the runner recorded an outcome before dying, or the task moved on
        if event.exit_code == 0:  # ended well without starting its try: its DAG file called exit() at import
            return self._fail_lost(ti, "the task process exited (code 0) before the try started; does its "
                                       "DAG file call exit() at import?")
        return self._fail_lost(ti, event.reason or f"task process exited with code {event.exit_code}")

    def _detect_zombies(self, run: DagRunRecord, slots: Mapping[TIRef, TaskSlot], now: datetime) -> bool:
        """Running tasks nobody here owns whose heartbeat stopped: their process died (kill -9, OOM, lost host)."""
        changed = False
        running = [slot for slot in slots.values() if slot.state is TaskState.RUNNING]
        owned = self.executor.running() if running else set()
        for slot in running:
            key = TIKey(run.dag_id, run.run_id, slot.task_id, slot.map_index)
            if key in owned:
                continue
            ti = queries.get_task_instance(self.ms.db, key)
            if ti.state is not TaskState.RUNNING:
                continue
            if task_process_gone(ti.pid, ti.hostname):
                changed |= self._fail_lost(
                    ti, f"the task process (pid {ti.pid} on {ti.hostname}) is gone without recording an outcome"
                )
                continue
            beat = ti.last_heartbeat_at or ti.start_date
            if beat is not None and now - beat > self.heartbeat_timeout:
                changed |= self._fail_lost(ti, f"no heartbeat for {self.heartbeat_timeout}; the task process died")
        return changed

    def adopt_orphans(self, queued_before: datetime, run: DagRunRecord | None = None) -> int:
        """Queued tasks (of ``run`` only, when given) that no executor here holds and that were queued before
        ``queued_before`` were lost between queuing and starting (the scheduler that queued them died, or a
        `trigger --wait` was interrupted): put them back to scheduled.
        A runner that still starts one fails its compare-and-set on (queued, try_number), so it never runs twice.
        Running tasks are judged in _detect_zombies (alive: left alone; gone: failed or retried)."""
        owned = self.executor.running()
        moved = 0
        for key, try_number, queued_at in queries.queued_task_instances(self.ms.db):
            if key in owned or (queued_at is not None and queued_at > queued_before):
                continue
            if run is not None and (key.dag_id, key.run_id) != (run.dag_id, run.run_id):
                continue
            if self.ms.store.set_task_state(
                key, TaskState.QUEUED, TaskState.SCHEDULED, ACTOR, now=self.clock(), expected_try=try_number,
                detail="queued but never started (its scheduler stopped); scheduled again",
            ):
                log.warning("%s was queued but never started; scheduled again", key)
                moved += 1
        return moved

    def fail_stuck_in_queued(self, now: datetime) -> int:
        """Airflow's task_queued_timeout: tasks this executor has held queued for longer, never started (no free
        worker; on Celery, no worker consuming their queue), are taken back from it and failed, up_for_retry
        while tries are left. Their try is over, so a start that still comes finds nothing to run."""
        owned = self.executor.running()
        stuck = [(key, try_number) for key, try_number, queued_at in queries.queued_task_instances(self.ms.db)
                 if key in owned and queued_at is not None and now - queued_at > self.task_queued_timeout]
        if not stuck:
            return 0
        self.executor.cleanup_stuck_queued_tasks({key for key, _ in stuck})
        seconds = self.task_queued_timeout.total_seconds()
        failed = 0
        for key, try_number in stuck:
            ti = queries.get_task_instance(self.ms.db, key)
            if ti.state is not TaskState.QUEUED or ti.try_number != try_number:
                continue  # it started after all
            queue = f"Celery queue '{ti.queue}'" if self.executor.name == "celery" else "the executor"
            failed += self._fail_lost(ti, f"queued for more than task_queued_timeout={seconds:g}s without starting "
                                          f"(is a worker free, and consuming {queue}?)")
        return failed

    def _fail_lost(self, ti: TaskInstanceRecord, reason: str) -> bool:
        dag = self.get_dag(ti.dag_id)
        lost = fail_lost_try(self.ms, dag, ti, reason, self.clock(), self.log_folder, ACTOR)
        if lost is None:
            return False
        if dag is not None and is_serialized(dag):
            task = dag.task_dict.get(ti.task_id)
            name = "on_failure_callback" if lost.state is TaskState.FAILED else "on_retry_callback"
            if getattr(task, "has_callback", {}).get(name) and self.callback_sink is not None:
                self.callback_sink({"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id,
                                    "map_index": ti.map_index, "state": lost.state.value, "reason": reason})
        elif dag is not None and self.log_folder is not None:  # every loop but some tests' has a log folder
            log_folder, clock = self.log_folder, self.clock
            self.callbacks.submit(f"{ti.key}: the {lost.state.value} callback of a lost try",
                                  lambda: call_lost_try_callback(self.ms, dag, lost, log_folder, clock))
        return True

    def _time_out(self, run: DagRunRecord, dag: DAG, now: datetime) -> DagRunRecord | None:
        """The run outlived dagrun_timeout: fail it, skip its unfinished tasks and kill the running ones (their
        runners kill the Spark applications), as Airflow does; the DAG's failure callback gets reason
        ``timed_out``. None when the run had ended meanwhile."""
        reason = f"the run exceeded its DAG's dagrun_timeout of {dag.dagrun_timeout}"
        timed_out = self.ms.store.time_out_run(run, ACTOR, reason, now=now)
        if timed_out is None:
            return None
        finished, skipped = timed_out
        # info, not a warning: the DAG asked for this ending (and `trigger --wait` reports it itself)
        log.info("run %s of DAG '%s' timed out: %s; %d unfinished task(s) skipped", run.run_id, run.dag_id, reason,
                 len(skipped))
        for ti in skipped:
            if ti.state is TaskState.RUNNING:
                killed = interventions.terminate(ti)
                how = f"process group {killed.killed_pid} sent SIGTERM" if killed.killed_pid else killed.note
                note_in_try_log(ti, self.log_folder, self.clock(), f"{reason}; the scheduler skipped the task ({how})")
        self._run_callback(dag, finished, reason="timed_out")
        return finished

    def _run_callback(self, dag: DAG, run: DagRunRecord, reason: str | None = None) -> None:
        if is_serialized(dag):
            name = "on_success_callback" if run.state is RunState.SUCCESS else "on_failure_callback"
            if name in getattr(dag, "serialized_callbacks", ()) and self.callback_sink is not None:
                self.callback_sink({"dag_id": dag.dag_id, "run_id": run.run_id, "reason": reason or run.state.value})
            return
        callback = dag.on_success_callback if run.state is RunState.SUCCESS else dag.on_failure_callback
        if callback is None:
            return
        context = {"dag": dag, "dag_run": run, "run_id": run.run_id, "reason": reason or run.state.value}
        self.callbacks.submit(f"DAG '{dag.dag_id}' {run.state.value} callback", lambda: callback(context))

    # -- driving ---------------------------------------------------------------------------------------------
    def run_until_finished(
        self,
        run: DagRunRecord,
        on_tick: Callable[[], None] | None = None,
        idle_sleep: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        on_interrupt: Callable[[], None] | None = None,
    ) -> DagRunRecord:
        """Drive one run to a final state (what `trigger --wait` and `dags test` do). Ctrl-C stops it: the tries
        that run are let finish (``on_interrupt`` is called first; a second Ctrl-C kills them), and the run stays
        as it is, to be resumed (see drive_run).

        A task's end wakes the loop at once (the executor's wait); ``idle_sleep`` only paces what nothing signals,
        such as ``on_tick`` printing new log lines and Spark progress: once a second, as often as a Spark task
        records its progress by default (status_poll_interval). Each tick costs CPU that a Spark job running on the
        same cores is slowed by."""
        self.executor.start()
        next_check = 0.0
        over = interrupted = False
        try:
            while True:
                result = self.tick(run_filter=[run.id])
                if on_tick is not None:
                    on_tick()
                for finished in result.finished_runs:
                    if finished.id == run.id:
                        over = True
                        return finished
                if result.changed:
                    continue  # more may be ready now: no sleep while there is work
                if time.monotonic() >= next_check:  # ended from outside (marked)? Looked at once per idle_sleep.
                    next_check = time.monotonic() + idle_sleep
                    current = queries.get_run(self.ms.db, run.dag_id, run.run_id)
                    if current.state in RUN_TERMINAL:
                        over = True
                        return current
                self.idle(idle_sleep, sleep)
        except KeyboardInterrupt:
            interrupted = True
            if on_interrupt is not None:
                on_interrupt()
            raise
        finally:
            end_drive(self.executor, over, self.callbacks, interrupted=interrupted)

    def idle(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Nothing changed: wait, but wake as soon as a task process ends (react at once, do not sleep)."""
        if self.executor.in_flight():
            self.executor.wait(seconds)
        else:
            sleep(seconds)


def end_drive(executor: Executor, over: bool, callbacks: CallbackRunner | None = None,
              grace: float = AFTER_OUTCOME_GRACE_SECONDS, interrupted: bool = False) -> None:
    """Stop the executor of a drive (`trigger --wait`, `dags test`, backfill). Over, every task has recorded its
    outcome or was ended from outside (sent SIGTERM, or ending at its next heartbeat), and a task process still
    busy is running what follows its outcome, such as an on_success_callback: it gets up to ``grace`` seconds to
    finish before what is left is killed; so do the loop's own ``callbacks`` (each within its time limit).
    Stopped by an error, what runs is killed at once; by Ctrl-C (``interrupted``), what runs may finish and record
    its outcome, so the run can be resumed (`trigger --run-id ... --wait`); Ctrl-C meanwhile kills it.
    Why wait rather than leave the tries running on their own: a task process forked from this one does not
    really hold SQLite's locks (the fork copies SQLite's record of this process's locks, not the locks), so this
    process's exit would checkpoint and delete the WAL under it, and lose its outcome."""
    if interrupted:
        executor.end()
        return
    if over and callbacks is not None:
        callbacks.drain()
    executor.end(kill=not over, grace=grace)


def _task_limits(dag: DAG, task_id: str) -> tuple[int | None, int | None]:
    task = dag.task_dict.get(task_id)
    if task is None:
        return None, None
    return task.max_active_tis_per_dag, task.max_active_tis_per_dagrun


def _lost(event: ExecutorEvent, state: TaskState, try_number: int) -> bool:
    """Whether the workload's try is where its ended process left it without an outcome: still queued after a
    clean exit (it never started), or queued or running after any other exit."""
    if try_number != event.workload.try_number:
        return False
    return state is TaskState.QUEUED if event.exit_code == 0 else state in (TaskState.QUEUED, TaskState.RUNNING)


def _timed_out(run: DagRunRecord, dag: DAG, now: datetime) -> bool:
    """Airflow's dagrun_timeout: a running run times out once it has run longer than that since it started."""
    return (dag.dagrun_timeout is not None and run.state is RunState.RUNNING and run.start_date is not None
            and now - run.start_date > dag.dagrun_timeout)


def drive_run(
    settings: Settings,
    metastore: Metastore,
    dag: DAG,
    run: DagRunRecord,
    executor_name: str | None = None,
    on_tick: Callable[[], None] | None = None,
    resume: bool = False,
    on_interrupt: Callable[[], None] | None = None,
) -> DagRunRecord:
    """Run one DagRun to its end with the configured executor: the scheduler's own loop, limited to this run.
    ``resume``: the run was driven before and interrupted; what it had queued but not started is scheduled
    again at once (its tries that had started finish, or are found lost, as usual)."""
    dags = {dag.dag_id: dag}
    executor = make_executor(settings, metastore, dags.get, executor_name)
    loop = SchedulerLoop(metastore, executor, dags.get, heartbeat_timeout=settings.heartbeat_timeout,
                         task_queued_timeout=settings.task_queued_timeout,
                         max_map_length=settings.max_map_length, log_folder=settings.resolved_log_folder,
                         callback_time_limit=settings.callback_time_limit)
    if resume:
        loop.adopt_orphans(loop.clock(), run)
    return loop.run_until_finished(run, on_tick=on_tick, on_interrupt=on_interrupt)
