"""The only writer of the metastore.

Every task and run state change goes through :meth:`Store.set_task_state` / :meth:`Store.set_run_state`: the
state machine is checked, then a compare-and-set ``UPDATE ... WHERE state = :expected`` runs in the same
transaction as its side rows (try history, audit event: metastore/compare_and_set.py). Zero rows updated means
someone else moved the row first; the caller is told (None instead of the record written) and nothing is
overwritten.

Pools, XComs, connections, variables and users have writers of their own (pool_store, xcom_store,
secret_store, user_store); everything a scheduler or a task's state depends on is written here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from sparkflow.definitions.context import XCOM_RETURN_KEY
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.schedule import DataInterval
from sparkflow.exceptions import InvalidTransition, NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.asset_store import AssetUpdate, record_events_in
from sparkflow.metastore.compare_and_set import (
    BY_KEY,
    EXTERNAL_ID_COLUMNS,
    TaskStateChange,
    audit_event,
    compare_and_set,
    key_params,
    mergeable,
    move_alike_instances,
    move_alike_rows,
    update_returning,
    update_rows,
    utcnow,
)
from sparkflow.metastore.dag_store import write_rendered_fields
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.metastore.xcom_store import write_xcom
from sparkflow.state import (
    RUN_CLEAR_TRANSITIONS,
    TASK_ACTIVE,
    TASK_UNFINISHED,
    RunState,
    TaskState,
    check_clear,
    check_mark,
    check_run_transition,
    check_transition,
)

_RUN_COLUMNS = tuple(c.name for c in t.dag_run.c)


class SchedulingClaims:
    """The DAGs one scheduler iteration may advance (PostgreSQL: their ``dag`` rows locked ``FOR UPDATE SKIP
    LOCKED`` in a transaction held until the iteration ends). Two schedulers on one database thus never advance
    the same DAG's runs at once, so max_active_runs and max_active_tasks hold across them; each skips, for this
    iteration, what the other holds. The lock is on the ``dag`` row because the iteration itself updates its runs
    and task instances through other connections (a lock on those rows would block its own writes); nothing in an
    iteration writes ``dag`` rows. DAGs without a ``dag`` row are not locked. On SQLite every run is claimed (its
    writers are serialised anyway)."""

    def __init__(self, conn: SAConnection | None) -> None:
        self._conn = conn
        self._dag_ids: set[str] = set()

    def runs(self, runs: Sequence[DagRunRecord]) -> list[DagRunRecord]:
        """Those of ``runs`` whose DAG this iteration holds (locking what it can without waiting)."""
        if self._conn is None:
            return list(runs)
        wanted = sorted({r.dag_id for r in runs} - self._dag_ids)
        if wanted:
            lock = S.select_any("dag", "dag_id", ("dag_id",), for_update=True)
            locked = {row.dag_id for row in lock.rows(self._conn, {"w_dag_id": wanted})}
            missing = sorted(set(wanted) - locked)  # held by another scheduler, or without a dag row
            known = S.select_any("dag", "dag_id", ("dag_id",))
            held = {row.dag_id for row in known.rows(self._conn, {"w_dag_id": missing})} if missing else set()
            self._dag_ids |= locked | (set(missing) - held)
        return [r for r in runs if r.dag_id in self._dag_ids]


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- runs ------------------------------------------------------------------------------------------------
    def create_dag_run(
        self,
        dag: DAG,
        run_id: str,
        run_type: str,
        logical_date: datetime,
        data_interval: DataInterval | None,
        conf: Mapping[str, Any] | None = None,
        actor: str = "cli",
        now: datetime | None = None,
    ) -> DagRunRecord:
        """Create a queued DagRun and one task instance (state none) per task, atomically."""
        now = now or utcnow()
        try:
            conf_text = json.dumps(dict(conf or {}))
        except TypeError as exc:
            raise UserError(f"run conf for DAG '{dag.dag_id}' is not JSON-serialisable: {exc}") from None
        with self.db.write() as conn:
            try:
                result = conn.execute(insert(t.dag_run).values(
                    dag_id=dag.dag_id, run_id=run_id, run_type=run_type, logical_date=logical_date,
                    data_interval_start=data_interval.start if data_interval else None,
                    data_interval_end=data_interval.end if data_interval else None,
                    conf=conf_text, state=RunState.QUEUED, queued_at=now, external_trigger=run_type == "manual",
                ))
            except IntegrityError:
                raise UserError(
                    f"DAG '{dag.dag_id}' already has a run with run_id '{run_id}'; choose another --run-id"
                ) from None
            inserted = result.inserted_primary_key
            assert inserted is not None  # one row inserted into a table with a primary key
            dag_run_id = inserted[0]
            if dag.tasks:
                conn.execute(insert(t.task_instance), [
                    dict(
                        dag_run_id=dag_run_id, dag_id=dag.dag_id, run_id=run_id, task_id=task.task_id,
                        state=TaskState.NONE, try_number=0, max_tries=task.retries, operator=task.task_type,
                        pool=task.pool, pool_slots=task.pool_slots, queue=task.queue,
                        priority_weight=task.priority_weight, updated_at=now,
                    )
                    for task in dag.tasks
                ])
            audit_event(conn, now, dag.dag_id, run_id, None, None, "trigger", None, RunState.QUEUED, actor,
                        f"run_type={run_type}")
            row = conn.execute(select(t.dag_run).where(t.dag_run.c.id == dag_run_id)).one()
        return DagRunRecord.from_row(row)

    def set_run_state(
        self, run: DagRunRecord, new: RunState, actor: str, now: datetime | None = None
    ) -> DagRunRecord | None:
        """Compare-and-set a run from the state ``run`` has to ``new`` (with its start or end date), audited;
        returns the run as written, or None (and writes nothing) when someone else moved it first."""
        check_run_transition(run.state, new)
        now = now or utcnow()
        values: dict[str, Any] = {"state": new}
        if new is RunState.RUNNING:
            values["start_date"] = now
        if new in (RunState.SUCCESS, RunState.FAILED):
            values["end_date"] = now
            if run.start_date is None:
                values["start_date"] = now
        with self.db.write() as conn:
            written = update_returning(conn, "dag_run", {"id": run.id, "state": run.state}, values, _RUN_COLUMNS)
            if written is None:
                return None
            audit_event(conn, now, run.dag_id, run.run_id, None, None, "state_change", run.state, new, actor, None)
        return DagRunRecord.from_row(written)

    @contextmanager
    def scheduling_claims(self) -> Iterator[SchedulingClaims]:
        """Hold the row locks of one scheduler iteration (see SchedulingClaims); released when the block ends."""
        if self.db.dialect != "postgresql":
            yield SchedulingClaims(None)
            return
        with self.db.engine.connect() as conn, conn.begin():
            yield SchedulingClaims(conn)

    # -- task instances ----------------------------------------------------------------------------------------
    # Every task state change is one compare-and-set (compare_and_set.compare_and_set).
    def set_task_state(
        self,
        key: TIKey,
        expected: TaskState,
        new: TaskState,
        actor: str,
        detail: str | None = None,
        now: datetime | None = None,
        expected_try: int | None = None,
        known: TaskInstanceRecord | None = None,
        asset_updates: Sequence[AssetUpdate] = (),
        rendered: tuple[Mapping[str, str], str | None] | None = None,
        return_value: str | None = None,
        **fields: Any,
    ) -> TaskInstanceRecord | None:
        """Compare-and-set one task instance from ``expected`` (and ``expected_try``, when given) to ``new`` with
        extra column values; returns the task instance as written, or None (and writes nothing) when the row was
        not in ``expected``. ``asset_updates``: the asset events of a success, recorded in the same transaction
        (no success without its events, no events without the success). ``rendered``: the try's rendered template
        fields and render error, stored with its outcome when it has not stored them yet. ``return_value``: the
        try's return value (JSON text), its ``return_value`` XCom, stored with its outcome.

        Entering RUNNING opens a try-history row (or re-opens it: a rescheduled sensor continues its try, keeping
        the try's first start); leaving RUNNING closes it. ``known``: the caller's own record of the row (the
        runner's of its try), which saves reading it first; the compare-and-set is the same.
        """
        check_transition(expected, new)
        now = now or utcnow()
        change = TaskStateChange(key, expected, new, actor, detail, now, expected_try, fields)
        with self.db.write() as conn:
            # A try's outcome: the try history, audit, rendered fields and XCom rows go in one round trip
            # (PostgreSQL).
            with S.pipelined(conn) if not asset_updates else nullcontext():
                written = compare_and_set(conn, self.db.dialect, [change], known=known)
                if written is not None and rendered is not None:
                    write_rendered_fields(conn, key, written.try_number, *rendered, now)
                if written is not None and return_value is not None:
                    write_xcom(conn, written, XCOM_RETURN_KEY, return_value, now)
            if written is not None and asset_updates:
                record_events_in(conn, written, asset_updates, now)
            return written

    def set_task_states(self, changes: Sequence[TaskStateChange]) -> list[TaskInstanceRecord | None]:
        """Several compare-and-set changes in one transaction (the scheduler loop's decisions of one iteration):
        one commit instead of one per change, each change exactly as :meth:`set_task_state` makes it. Changes run
        in order, so one task may move twice (none -> scheduled -> queued); a change whose compare-and-set fails
        is skipped with every later change of the same task instance. Returns, per change, the task instance as
        written (after the last change of it that was made with this one), or None when it did not move.

        PostgreSQL: each row is locked first, skipping one another scheduler (or a runner) holds right now; that
        change counts as "moved by someone else" and is decided again next iteration. No batch ever waits for a
        row, so two schedulers cannot deadlock."""
        for change in changes:
            check_transition(change.expected, change.new)
        done: list[TaskInstanceRecord | None] = [None] * len(changes)
        chains: dict[TIKey, list[int]] = {}  # each task instance's changes, in order
        for i, c in enumerate(changes):
            chains.setdefault(c.key, []).append(i)
        # Every change's audit row (with its change's position, to keep their order), inserted at once at the end
        # of the same transaction.
        events: list[tuple[int, dict[str, Any]]] = []
        with self.db.write() as conn:
            pending = list(chains.values())
            if self.db.dialect == "sqlite":
                pending = move_alike_instances(conn, changes, pending, done, events)
            else:
                pending = move_alike_rows(conn, changes, pending, done, events)
            for indexes in pending:
                at = 0
                while at < len(indexes):
                    group = mergeable([changes[i] for i in indexes[at:]])
                    group_events: list[dict[str, Any]] = []
                    written = compare_and_set(conn, self.db.dialect, group, lock=True, events=group_events)
                    if written is None:
                        break  # this change and every later one of the same task instance: not moved
                    taken = indexes[at:at + len(group)]
                    events += list(zip(taken, group_events, strict=True))
                    for i in taken:
                        done[i] = written
                    at += len(group)
            if events:
                events.sort(key=lambda e: e[0])
                S.insert_rows(conn, "state_event", [e for _, e in events])
        return done

    def start_try(
        self, key: TIKey, try_number: int, actor: str, now: datetime | None = None, **fields: Any
    ) -> tuple[TaskInstanceRecord, DagRunRecord | None]:
        """The runner's first transaction: the queued try ``try_number`` goes QUEUED -> RUNNING (the checked
        compare-and-set of :meth:`set_task_state`, with its try-history row and audit event), its XComs are
        cleared (a new try starts without any of its own, as in Airflow) and its run is read, all at once.
        Returns the task instance as it is now and its run; the run is None when the instance was not that queued
        try (or another writer moved it first), and then nothing was written."""
        check_transition(TaskState.QUEUED, TaskState.RUNNING)
        change = TaskStateChange(key, TaskState.QUEUED, TaskState.RUNNING, actor, None, now or utcnow(), try_number,
                                 fields)
        with self.db.write() as conn, S.pipelined(conn):  # the try history, audit and XCom statements at once
            row = BY_KEY.first(conn, S.params(key_params(key)))
            if row is None:
                raise NotFound(f"task instance {key} does not exist")
            if row.state != TaskState.QUEUED.value or row.try_number != try_number:
                return TaskInstanceRecord.from_row(row), None
            written = compare_and_set(conn, self.db.dialect, [change], known=row)
            if written is None:  # PostgreSQL: moved between the read and the compare-and-set
                moved = BY_KEY.first(conn, S.params(key_params(key)))
                if moved is None:
                    raise NotFound(f"task instance {key} does not exist")
                return TaskInstanceRecord.from_row(moved), None
            S.delete_where("xcom", S.TI_KEY).run(conn, S.params(key_params(key)))
            run = _RUN_BY_ID.first(conn, S.params({"id": row.dag_run_id}))
            assert run is not None  # the task instance's foreign key
        return written, DagRunRecord.from_row(run)

    def record_external_ids(self, key: TIKey, try_number: int, **ids: str | None) -> None:
        """Store Spark ids on the task instance and its current try, at once (before any polling)."""
        values = {k: v for k, v in ids.items() if k in EXTERNAL_ID_COLUMNS and v}
        if not values:
            return
        with self.db.write() as conn:
            self._update_try_columns(conn, key, try_number, values, on_try=values)

    def record_spark_progress(self, key: TIKey, try_number: int, progress: Mapping[str, Any]) -> None:
        with self.db.write() as conn:
            self._update_try_columns(conn, key, try_number, {"spark_progress": json.dumps(dict(progress))})

    def record_spark_metrics(self, key: TIKey, try_number: int, metrics: Mapping[str, Any]) -> None:
        """Metrics of the try's Spark application, on the task instance and in the try history."""
        text = json.dumps(dict(metrics))
        with self.db.write() as conn:
            self._update_try_columns(conn, key, try_number, {"spark_metrics": text}, on_try={"spark_metrics": text})

    @staticmethod
    def _update_try_columns(conn: SAConnection, key: TIKey, try_number: int, values: Mapping[str, Any],
                            on_try: Mapping[str, Any] | None = None) -> None:
        """Set columns of the task instance while it is on try ``try_number`` and, ``on_try``, of that try's
        history row."""
        row = update_returning(conn, "task_instance", {**key_params(key), "try_number": try_number}, values, ("id",))
        if on_try and row is not None:
            update_rows(conn, "task_instance_try", {"ti_id": row.id, "try_number": try_number}, on_try)

    def heartbeat(self, key: TIKey, try_number: int, now: datetime | None = None) -> bool:
        """Refresh a running try's heartbeat; False if the task is no longer running this try."""
        with self.db.write() as conn:
            changed = update_rows(conn, "task_instance", _cas_where(key, TaskState.RUNNING, try_number),
                              {"last_heartbeat_at": now or utcnow()})
        return changed == 1

    def skip_tasks(self, run: DagRunRecord, task_ids: Iterable[str], actor: str, detail: str) -> list[str]:
        """Mark not-yet-started tasks of a run skipped (branching, short-circuit). Returns those it moved."""
        moved = []
        c = t.task_instance.c
        for task_id in task_ids:
            with self.db.read() as conn:  # every instance of a mapped task, or the one of an unmapped task
                indexes = list(conn.execute(select(c.map_index).where(
                    c.dag_run_id == run.id, c.task_id == task_id)).scalars())
            for map_index in indexes:
                key = TIKey(run.dag_id, run.run_id, task_id, map_index)
                for expected in (TaskState.NONE, TaskState.SCHEDULED):
                    if self.set_task_state(key, expected, TaskState.SKIPPED, actor, detail):
                        if task_id not in moved:
                            moved.append(task_id)
                        break
        return moved

    def expand_mapped_task(self, key: TIKey, length: int, actor: str, now: datetime | None = None) -> bool:
        """Expand a mapped task's placeholder instance (``map_index`` -1, state none) into ``length`` instances
        0..n-1, atomically: the placeholder becomes instance 0 and the others are added with its scheduling
        columns; an audited ``expand`` event per instance. Zero instances skip the task (as in Airflow).
        False when the placeholder is gone or no longer none (another scheduler expanded it)."""
        now = now or utcnow()
        if length == 0:
            return self.set_task_state(key, TaskState.NONE, TaskState.SKIPPED, actor,
                                       "mapped over zero items: nothing to run", now=now) is not None
        with self.db.write() as conn:
            row = BY_KEY.first(conn, S.params(key_params(key)))
            if row is None or row.state != TaskState.NONE.value:
                return False
            if update_rows(conn, "task_instance", {"id": row.id, "state": TaskState.NONE, "map_index": -1},
                       {"map_index": 0, "updated_at": now}) == 0:
                return False
            copied = {name: getattr(row, name) for name in (
                "dag_run_id", "dag_id", "run_id", "task_id", "try_number", "max_tries", "operator", "pool",
                "pool_slots", "queue", "priority_weight")}
            if length > 1:
                conn.execute(insert(t.task_instance), [
                    dict(copied, map_index=i, state=TaskState.NONE, updated_at=now) for i in range(1, length)])
            S.insert_rows(conn, "state_event", [dict(  # one per instance: the loop's change tracking reads them
                at=now, dag_id=key.dag_id, run_id=key.run_id, task_id=key.task_id, map_index=i,
                try_number=row.try_number, event="expand", old_state=None, new_state=TaskState.NONE, actor=actor,
                detail=f"instance {i} of {length}") for i in range(length)])
        return True

    def clear_task_instances(
        self, dag: DAG, selection: Iterable[tuple[DagRunRecord, Iterable[str]]], actor: str,
        now: datetime | None = None, map_indexes: Iterable[int] | None = None,
    ) -> list[TIKey]:
        """Clear (re-run) the chosen task instances of each run, atomically: each goes back to ``none`` keeping its
        try_number (the next try is try_number + 1) with its retries available again; a finished run is queued
        again. Every change writes a ``clear`` event. Queued or running tasks are left alone (mark them failed
        first). Returns the keys it cleared. ``map_indexes``: only these instances of mapped tasks (default: all)."""
        now = now or utcnow()
        indexes = None if map_indexes is None else sorted(set(map_indexes))
        cleared: list[TIKey] = []
        c = t.task_instance.c
        with self.db.write() as conn:
            for run, task_ids in selection:
                wanted = set(task_ids)
                if not wanted:
                    continue
                query = select(t.task_instance).where(
                    c.dag_run_id == run.id, c.task_id.in_(wanted), c.state.not_in([s.value for s in TASK_ACTIVE]))
                if indexes is not None:
                    query = query.where(c.map_index.in_(indexes))
                rows = conn.execute(query).all()
                for row in rows:
                    old = TaskState(row.state)
                    check_clear(old)
                    task = dag.task_dict.get(row.task_id)
                    retries = task.retries if task is not None else row.max_tries
                    result = conn.execute(update(t.task_instance).where(c.id == row.id, c.state == old).values(
                        state=TaskState.NONE, max_tries=row.try_number + retries, next_try_at=None, end_date=None,
                        duration=None, error=None, queued_at=None, updated_at=now,
                    ))
                    if result.rowcount:
                        key = TIKey(row.dag_id, row.run_id, row.task_id, row.map_index)
                        cleared.append(key)
                        audit_event(conn, now, key.dag_id, key.run_id, key.task_id, row.try_number, "clear", old,
                                    TaskState.NONE, actor, None, map_index=row.map_index)
                current = RunState(conn.execute(select(t.dag_run.c.state).where(t.dag_run.c.id == run.id)).scalar_one())
                target = RUN_CLEAR_TRANSITIONS[current]
                if rows and target is not current:
                    conn.execute(update(t.dag_run).where(t.dag_run.c.id == run.id, t.dag_run.c.state == current)
                                 .values(state=target, queued_at=now, start_date=None, end_date=None))
                    audit_event(conn, now, run.dag_id, run.run_id, None, None, "clear", current, target, actor,
                                f"{len(rows)} task(s) cleared")
        return cleared

    def mark_task_state(
        self, key: TIKey, new: TaskState, actor: str, now: datetime | None = None
    ) -> TaskInstanceRecord:
        """Set a task's outcome by hand (success or failed), audited as a ``mark`` event; returns the task
        instance as it was before. A running try is closed; killing its process is the caller's job."""
        now = now or utcnow()
        with self.db.write() as conn:
            row = BY_KEY.first(conn, S.params(key_params(key)))
            if row is None:
                raise NotFound(f"task instance {key} does not exist")
            before = TaskInstanceRecord.from_row(row)
            try:
                check_mark(before.state, new)
            except InvalidTransition as exc:
                raise UserError(f"task '{key.task_id}' of run '{key.run_id}': {exc}; nothing to do") from None
            error = f"marked failed by {actor}" if new is TaskState.FAILED else None
            self._end_by_hand(conn, row.id, before, new, now, error)
            audit_event(conn, now, key.dag_id, key.run_id, key.task_id, row.try_number, "mark", before.state, new,
                        actor, None, map_index=key.map_index)
        return before

    def time_out_run(
        self, run: DagRunRecord, actor: str, detail: str, now: datetime | None = None
    ) -> tuple[DagRunRecord, list[TaskInstanceRecord]] | None:
        """A running run outlived its DAG's dagrun_timeout: it fails and each unfinished task is skipped, as in
        Airflow, in one transaction audited as ``timeout`` events with ``detail``. Returns the run as written and
        the tasks it skipped as they were before (killing the running ones is the caller's job), or None when the
        run was not running any more."""
        now = now or utcnow()
        c = t.task_instance.c
        with self.db.write() as conn:
            failed = update_returning(conn, "dag_run", {"id": run.id, "state": RunState.RUNNING},
                                       {"state": RunState.FAILED, "end_date": now}, _RUN_COLUMNS)
            if failed is None:
                return None
            audit_event(conn, now, run.dag_id, run.run_id, None, None, "timeout", RunState.RUNNING, RunState.FAILED,
                        actor, detail)
            skipped = []
            rows = conn.execute(select(t.task_instance).where(
                c.dag_run_id == run.id, c.state.in_([s.value for s in TASK_UNFINISHED])).order_by(c.id)).all()
            for row in rows:
                before = TaskInstanceRecord.from_row(row)
                if self._end_by_hand(conn, row.id, before, TaskState.SKIPPED, now, None):
                    skipped.append(before)
                    audit_event(conn, now, run.dag_id, run.run_id, row.task_id, row.try_number, "timeout",
                                before.state, TaskState.SKIPPED, actor, detail, map_index=row.map_index)
        return DagRunRecord.from_row(failed), skipped

    @staticmethod
    def _end_by_hand(conn: SAConnection, ti_id: int, before: TaskInstanceRecord, new: TaskState, now: datetime,
                     error: str | None) -> bool:
        """Move a task instance to ``new`` outside the state machine's transitions (mark, a run's time-out):
        compare-and-set on the state it had, closing a running try's history row with the same outcome. False
        when the row had moved meanwhile."""
        c = t.task_instance.c
        values: dict[str, Any] = {"state": new, "updated_at": now, "next_try_at": None, "end_date": now}
        if error is not None:
            values["error"] = error
        if before.start_date is not None:
            values["duration"] = (now - before.start_date).total_seconds()
        if not conn.execute(update(t.task_instance).where(c.id == ti_id, c.state == before.state)
                            .values(**values)).rowcount:
            return False
        if before.state is TaskState.RUNNING:
            conn.execute(
                update(t.task_instance_try)
                .where(t.task_instance_try.c.ti_id == ti_id, t.task_instance_try.c.try_number == before.try_number)
                .values(state=new, end_date=now, duration=values.get("duration"), error=values.get("error"))
            )
        return True


def _cas_where(key: TIKey, state: TaskState, try_number: int | None) -> dict[str, Any]:
    """The compare-and-set condition of a task instance: its key, the expected state and, when given, its try."""
    where: dict[str, Any] = {**key_params(key), "state": state}
    if try_number is not None:
        where["try_number"] = try_number
    return where


_RUN_BY_ID = S.select_where("dag_run", ("id",))
