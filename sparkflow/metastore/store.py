"""The only writer of the metastore.

Every task and run state change goes through :meth:`Store.set_task_state` / :meth:`Store.set_run_state`: the
state machine is checked, then a compare-and-set ``UPDATE ... WHERE state = :expected`` runs in the same
transaction as its side rows (try history, audit event). Zero rows updated means someone else moved the row
first; the caller is told (False) and nothing is overwritten.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from sparkflow.connections import Connection, SecretBox
from sparkflow.definitions import serialization
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import ImportErrorInfo
from sparkflow.definitions.schedule import DataInterval
from sparkflow.exceptions import ConfigError, InvalidTransition, NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import DagFileStat, DagRunRecord, TaskInstanceRecord, TIKey
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

DEFAULT_POOL = "default_pool"
USER_ROLES = ("admin", "op", "viewer")  # web roles: everything / run and edit / read only
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
EXTERNAL_ID_COLUMNS = ("spark_app_id", "spark_driver_id", "spark_ui_url")
# Columns of task_instance copied to the current try's history row whenever they change.
_TRY_COLUMNS = ("hostname", "pid", "log_path", "error", *EXTERNAL_ID_COLUMNS)
_TI_FIELDS = frozenset(f.name for f in dataclasses.fields(TaskInstanceRecord))


def _insert_if_absent(dialect: str) -> Any:
    """The dialect's INSERT that can say ON CONFLICT DO NOTHING; imported when needed (PostgreSQL's dialect module
    costs ~25 ms of every CLI start on SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TaskStateChange:
    """One compare-and-set of :meth:`Store.set_task_states`: the arguments of :meth:`Store.set_task_state`."""

    key: TIKey
    expected: TaskState
    new: TaskState
    actor: str
    detail: str | None = None
    now: datetime | None = None
    expected_try: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


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
            c = t.dag.c
            query = select(c.dag_id).where(c.dag_id.in_(wanted))
            locked = set(self._conn.execute(query.with_for_update(skip_locked=True)).scalars())
            known = set(self._conn.execute(query).scalars())
            self._dag_ids |= locked | (set(wanted) - known)
        return [r for r in runs if r.dag_id in self._dag_ids]


class Store:
    def __init__(self, db: Database, secrets: SecretBox | None = None) -> None:
        self.db = db
        self._secrets = secrets

    @property
    def secrets(self) -> SecretBox:
        if self._secrets is None:
            raise ConfigError("no fernet key is configured; run `sparkflow db init` to create one")
        return self._secrets

    # -- DAGs and import errors --------------------------------------------------------------------------------
    def sync_dags(
        self, dags: Iterable[DAG], import_errors: Sequence[ImportErrorInfo], parsed_files: Iterable[str],
        now: datetime | None = None, complete: bool = False, folder_files: Collection[str] | None = None,
        serialized: Mapping[str, tuple[str, str]] | None = None, file_stats: Sequence[DagFileStat] = (),
    ) -> None:
        """Record what a parse found, each DAG serialized too; errors of the parsed files replace their old ones.

        ``folder_files`` is every file of the DAG folder (``complete``: ``parsed_files`` is the whole folder):
        DAGs, import errors and file stats of any other file (a deleted or renamed one) are then stale, so the
        DAGs go inactive and the rest goes away. ``serialized`` gives a DAG's serialized text and hash when the
        parse made them already (dag_id -> (text, hash)); ``file_stats`` what each parsed file cost.
        """
        now = now or utcnow()
        files = set(parsed_files)
        if complete and folder_files is None:
            folder_files = files
        dags = list(dags)
        texts = dict(serialized or {})
        for dag in dags:
            if dag.dag_id not in texts:
                text = serialization.dumps(serialization.serialize_dag(dag))
                texts[dag.dag_id] = (text, serialization.dag_hash(text))
        with self.db.write() as conn:
            seen: list[str] = []
            for dag in dags:
                seen.append(dag.dag_id)
                values = dict(
                    fileloc=dag.fileloc or "",
                    is_active=True,
                    description=dag.description,
                    schedule=dag.timetable.description,
                    tags=json.dumps(sorted(dag.tags)),
                    owners=", ".join(sorted({task.owner for task in dag.tasks})) or None,
                    max_active_runs=dag.max_active_runs,
                    max_active_tasks=dag.max_active_tasks,
                    last_parsed_at=now,
                )
                updated = conn.execute(update(t.dag).where(t.dag.c.dag_id == dag.dag_id).values(**values))
                if updated.rowcount == 0:
                    paused = bool(dag.is_paused_upon_creation) if dag.is_paused_upon_creation is not None else False
                    # Two schedulers starting together both find no row; the second insert then waits for the
                    # first (PostgreSQL) and does nothing: the row holds the same parse.
                    insert_dag = _insert_if_absent(self.db.dialect)(t.dag).values(
                        dag_id=dag.dag_id, is_paused=paused, **values)
                    conn.execute(insert_dag.on_conflict_do_nothing(index_elements=["dag_id"]))
            self._store_serialized(conn, dags, texts, now, self.db.dialect)
            gone_from_parsed_files = t.dag.c.fileloc.in_(files) & t.dag.c.dag_id.not_in(seen)
            if folder_files is not None:
                gone = t.dag.c.fileloc.not_in(set(folder_files))
                conn.execute(update(t.dag).where(gone_from_parsed_files | gone).values(is_active=False))
                conn.execute(delete(t.import_error).where(
                    t.import_error.c.filename.in_(files) | t.import_error.c.filename.not_in(set(folder_files))))
                conn.execute(delete(t.dag_file).where(t.dag_file.c.fileloc.not_in(set(folder_files))))
            else:
                conn.execute(update(t.dag).where(gone_from_parsed_files).values(is_active=False))
                conn.execute(delete(t.import_error).where(t.import_error.c.filename.in_(files)))
            for error in import_errors:
                conn.execute(insert(t.import_error).values(
                    filename=error.filename, lineno=error.lineno, dag_id=error.dag_id, task_id=error.task_id,
                    message=error.message, timestamp=now,
                ))
            if file_stats:
                conn.execute(delete(t.dag_file).where(t.dag_file.c.fileloc.in_([f.fileloc for f in file_stats])))
                conn.execute(insert(t.dag_file), [
                    dict(fileloc=f.fileloc, content_hash=f.content_hash, dag_ids=json.dumps(list(f.dag_ids)),
                         task_count=f.task_count, error_count=f.error_count, parse_duration=f.parse_duration,
                         last_parsed_at=now)
                    for f in file_stats
                ])

    @staticmethod
    def _store_serialized(conn: SAConnection, dags: Sequence[DAG], texts: Mapping[str, tuple[str, str]],
                          now: datetime, dialect: str) -> None:
        """Write each DAG's serialized form when its hash changed (readers re-read a DAG only then)."""
        if not dags:
            return
        c = t.serialized_dag.c
        stored = dict(conn.execute(select(c.dag_id, c.dag_hash).where(c.dag_id.in_([d.dag_id for d in dags]))).all())
        for dag in dags:
            text, digest = texts[dag.dag_id]
            if stored.get(dag.dag_id) == digest:
                continue
            values = dict(fileloc=dag.fileloc or "", data=text, dag_hash=digest, last_updated=now)
            if dag.dag_id in stored:
                conn.execute(update(t.serialized_dag).where(c.dag_id == dag.dag_id).values(**values))
            else:
                # Two parsers of the same file (two schedulers, a CLI command): the second insert does nothing.
                conn.execute(_insert_if_absent(dialect)(t.serialized_dag).values(dag_id=dag.dag_id, **values)
                             .on_conflict_do_nothing(index_elements=["dag_id"]))

    def store_rendered_fields(self, key: TIKey, try_number: int, fields: Mapping[str, str], error: str | None,
                              now: datetime | None = None) -> None:
        """A try's rendered template fields (masked by the caller), replacing the previous try's."""
        values = dict(try_number=try_number, fields=json.dumps(dict(fields)), error=error, updated_at=now or utcnow())
        where = _key(key)
        with self.db.write() as conn:
            if _update(conn, "rendered_task_fields", where, values) == 0:
                conn.execute(insert(t.rendered_task_fields).values(**where, **values))

    def set_paused(self, dag_id: str, paused: bool) -> None:
        with self.db.write() as conn:
            result = conn.execute(update(t.dag).where(t.dag.c.dag_id == dag_id).values(is_paused=paused))
            if result.rowcount == 0:
                raise NotFound(f"DAG '{dag_id}' is not in the metastore; check `sparkflow dags list`")

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
            self._event(conn, now, dag.dag_id, run_id, None, None, "trigger", None, RunState.QUEUED, actor,
                        f"run_type={run_type}")
            row = conn.execute(select(t.dag_run).where(t.dag_run.c.id == dag_run_id)).one()
        return DagRunRecord.from_row(row)

    def set_run_state(
        self, run: DagRunRecord, new: RunState, actor: str, now: datetime | None = None
    ) -> bool:
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
            if _update(conn, "dag_run", {"id": run.id, "state": run.state}, values) == 0:
                return False
            self._event(conn, now, run.dag_id, run.run_id, None, None, "state_change", run.state, new, actor, None)
        return True

    @contextmanager
    def scheduling_claims(self) -> Iterator[SchedulingClaims]:
        """Hold the row locks of one scheduler iteration (see SchedulingClaims); released when the block ends."""
        if self.db.dialect != "postgresql":
            yield SchedulingClaims(None)
            return
        with self.db.engine.connect() as conn, conn.begin():
            yield SchedulingClaims(conn)

    # -- task instances ----------------------------------------------------------------------------------------
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
        **fields: Any,
    ) -> bool:
        """Compare-and-set one task instance from ``expected`` (and ``expected_try``, when given) to ``new`` with
        extra column values.

        Entering RUNNING opens a try-history row (or re-opens it: a rescheduled sensor continues its try, keeping
        the try's first start); leaving RUNNING closes it. Returns False (and writes nothing) when the row was
        not in ``expected``. ``known``: the caller's own record of the row (the runner's of its try), which saves
        reading it first; the compare-and-set is the same.
        """
        check_transition(expected, new)
        with self.db.write() as conn:
            return self._set_task_state(conn, key, expected, new, actor, detail, now, expected_try, fields,
                                        known=known) is not None

    def set_task_states(self, changes: Sequence[TaskStateChange]) -> list[bool]:
        """Several compare-and-set changes in one transaction (the scheduler loop's decisions of one iteration):
        one commit instead of one per change, each change exactly as :meth:`set_task_state` makes it. Changes run
        in order, so one task may move twice (none -> scheduled -> queued); a change whose compare-and-set fails
        is skipped with every later change of the same task instance. Returns, per change, whether it moved."""
        for change in changes:
            check_transition(change.expected, change.new)
        done = [False] * len(changes)
        chains: dict[TIKey, list[int]] = {}  # each task instance's changes, in order
        for i, c in enumerate(changes):
            chains.setdefault(c.key, []).append(i)
        # Every change's audit row (with its change's position, to keep their order), inserted at once at the end
        # of the same transaction.
        events: list[tuple[int, dict[str, Any]]] = []
        with self.db.write() as conn:
            for indexes in chains.values():
                at = 0
                while at < len(indexes):
                    group = self._mergeable(conn, [changes[i] for i in indexes[at:]])
                    if len(group) > 1:
                        moved = self._set_chain(conn, group, indexes[at:at + len(group)], events)
                    else:
                        c, one = group[0], list[dict[str, Any]]()
                        moved = self._set_task_state(
                            conn, c.key, c.expected, c.new, c.actor, c.detail, c.now, c.expected_try,
                            dict(c.fields), skip_locked=True, events=one) is not None
                        events += [(indexes[at], e) for e in one]
                    if not moved:
                        break  # this change and every later one of the same task instance: not moved
                    for i in indexes[at:at + len(group)]:
                        done[i] = True
                    at += len(group)
            if events:
                events.sort(key=lambda e: e[0])
                S.insert_rows(conn, "state_event", [e for _, e in events])
        return done

    def _mergeable(self, conn: SAConnection, chain: list[TaskStateChange]) -> list[TaskStateChange]:
        """The longest start of ``chain`` that one UPDATE can make (none -> scheduled -> queued, say): changes
        that need no read of the row (no try history, no duration), each starting where the previous ended,
        where every audit row's try number is known. Just the first change otherwise. SQLite only (PostgreSQL
        keeps the row lock of each change, see _set_task_state)."""
        first = chain[0]
        if self.db.dialect != "sqlite" or not conn.dialect.update_returning or not _lean(first):
            return chain[:1]
        group = [first]
        for c in chain[1:]:
            if not _lean(c) or c.expected is not group[-1].new or c.expected_try is not None:
                break
            group.append(c)
        if first.expected_try is None and any("try_number" in c.fields for c in group):
            return chain[:1]  # the first audit rows' try number would not be known without a read
        return group

    def _set_chain(
        self, conn: SAConnection, group: list[TaskStateChange], indexes: list[int],
        events: list[tuple[int, dict[str, Any]]],
    ) -> bool:
        """Several consecutive changes of one task instance as one compare-and-set (on the first's expected
        state and try), each with its own audit row: the same outcome as making them one by one."""
        first, last = group[0], group[-1]
        values: dict[str, Any] = {}
        for change in group:
            values.update(change.fields)
        now = last.now or utcnow()
        values.update(state=last.new, updated_at=now)
        returned = _update_returning(conn, "task_instance", _cas_where(first.key, first.expected, first.expected_try),
                                     values, ("id", "try_number"))
        if returned is None:
            _check_exists(conn, first.key)
            return False
        try_number = first.expected_try if first.expected_try is not None else returned.try_number
        for index, change in zip(indexes, group, strict=True):
            try_number = change.fields.get("try_number", try_number)
            one: list[dict[str, Any]] = []
            self._task_event(conn, one, change.now or now, change.key, try_number, change.expected, change.new,
                             change.actor, change.detail)
            events += [(index, e) for e in one]
        return True

    def _set_task_state(
        self, conn: SAConnection, key: TIKey, expected: TaskState, new: TaskState, actor: str, detail: str | None,
        now: datetime | None, expected_try: int | None, fields: dict[str, Any], skip_locked: bool = False,
        known: Any = None, events: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any] | None:
        """The compare-and-set itself; returns the values it wrote, or None when the row was not in ``expected``.

        ``known``: the row as the caller read it in this transaction, or a record of it the caller owns (the
        runner's own try): its id, try number, start date and try columns are taken from it instead of a SELECT;
        the UPDATE still compares the state (and try), so a stale ``known`` only makes the change fail.
        ``events``: collect the audit row here for the caller to insert with its batch (same transaction).
        """
        now = now or utcnow()
        values: dict[str, Any] = {"state": new, "updated_at": now, **fields}
        needs_row = new is TaskState.RUNNING or expected is TaskState.RUNNING or new in (TaskState.FAILED,
                                                                                          TaskState.SUCCESS)
        if (known is None and not needs_row and conn.dialect.update_returning
                and not (skip_locked and self.db.dialect != "sqlite")):
            # Speed (issue 4): no SELECT first; the compare-and-set UPDATE returns what the audit event needs.
            returned = _update_returning(conn, "task_instance", _cas_where(key, expected, expected_try), values,
                                         ("id", "try_number"))
            if returned is None:
                _check_exists(conn, key)
                return None
            self._task_event(conn, events, now, key, returned.try_number, expected, new, actor, detail)
            return values
        ti = known
        if ti is None:
            # PostgreSQL, a batch of scheduler decisions: lock the row, skipping one another scheduler (or a
            # runner) holds right now; that change counts as "moved by someone else" and is decided again next
            # iteration. No batch ever waits for a row, so two schedulers cannot deadlock. SQLite ignores FOR
            # UPDATE.
            ti = S.select_where("task_instance", S.TI_KEY, for_update=skip_locked).first(conn, S.params(_key(key)))
            if ti is None and skip_locked and _BY_KEY.first(conn, S.params(_key(key))) is not None:
                return None
            if ti is None:
                raise NotFound(f"task instance {key} does not exist")
        continued = None
        if new is TaskState.RUNNING:
            continued = _TRY_START.first(conn, S.params(
                {"ti_id": ti.id, "try_number": values.get("try_number", ti.try_number)}))
            if continued is not None and continued.start_date is not None:
                values.setdefault("start_date", continued.start_date)
            values.setdefault("start_date", now)
            values.setdefault("last_heartbeat_at", now)
            values.setdefault("end_date", None)
            values.setdefault("duration", None)
            values.setdefault("error", None)
            for column in (*EXTERNAL_ID_COLUMNS, "spark_progress", "spark_metrics"):
                values.setdefault(column, None)  # a new try starts without the last try's Spark state
        if expected is TaskState.RUNNING or new in (TaskState.FAILED, TaskState.SUCCESS):
            values.setdefault("end_date", now)
            start = values.get("start_date", ti.start_date)
            if start is not None and values["end_date"] is not None:
                values.setdefault("duration", (values["end_date"] - start).total_seconds())
        where: dict[str, Any] = {"id": ti.id, "state": expected}
        if expected_try is not None:
            where["try_number"] = expected_try
        if _update(conn, "task_instance", where, values) == 0:
            return None
        try_number = values.get("try_number", ti.try_number)
        this_try = {"ti_id": ti.id, "try_number": try_number}
        if new is TaskState.RUNNING and continued is not None:
            _update(conn, "task_instance_try", this_try, dict(
                state=new, end_date=None, duration=None, **{c: values.get(c, getattr(ti, c)) for c in _TRY_COLUMNS}))
        elif new is TaskState.RUNNING:
            S.insert_rows(conn, "task_instance_try", [dict(
                this_try, dag_id=key.dag_id, run_id=key.run_id, task_id=key.task_id, map_index=key.map_index,
                state=new,
                start_date=values["start_date"], **{c: values.get(c, getattr(ti, c)) for c in _TRY_COLUMNS})])
        elif expected is TaskState.RUNNING:
            _update(conn, "task_instance_try", this_try, dict(
                state=new, end_date=values.get("end_date"), duration=values.get("duration"),
                **{c: values[c] for c in _TRY_COLUMNS if c in values}))
        self._task_event(conn, events, now, key, try_number, expected, new, actor, detail)
        return values

    def _task_event(
        self, conn: SAConnection, events: list[dict[str, Any]] | None, at: datetime, key: TIKey, try_number: int,
        old: TaskState, new: TaskState, actor: str, detail: str | None,
    ) -> None:
        if events is None:
            self._event(conn, at, key.dag_id, key.run_id, key.task_id, try_number, "state_change", old, new, actor,
                        detail, map_index=key.map_index)
        else:
            events.append(dict(at=at, dag_id=key.dag_id, run_id=key.run_id, task_id=key.task_id,
                               map_index=key.map_index, try_number=try_number, event="state_change",
                               old_state=old, new_state=new, actor=actor, detail=detail))

    def start_try(
        self, key: TIKey, try_number: int, actor: str, now: datetime | None = None, **fields: Any
    ) -> tuple[TaskInstanceRecord, DagRunRecord | None]:
        """The runner's first transaction: the queued try ``try_number`` goes QUEUED -> RUNNING (the checked
        compare-and-set of :meth:`set_task_state`, with its try-history row and audit event), its XComs are
        cleared (a new try starts without any of its own, as in Airflow) and its run is read, all at once.
        Returns the task instance as it is now and its run; the run is None when the instance was not that queued
        try (or another writer moved it first), and then nothing was written."""
        check_transition(TaskState.QUEUED, TaskState.RUNNING)
        now = now or utcnow()
        with self.db.write() as conn:
            row = _BY_KEY.first(conn, S.params(_key(key)))
            if row is None:
                raise NotFound(f"task instance {key} does not exist")
            if row.state != TaskState.QUEUED.value or row.try_number != try_number:
                return TaskInstanceRecord.from_row(row), None
            values = self._set_task_state(conn, key, TaskState.QUEUED, TaskState.RUNNING, actor, None, now,
                                          try_number, dict(fields), known=row)
            if values is None:  # PostgreSQL: moved between the read and the compare-and-set
                moved = _BY_KEY.first(conn, S.params(_key(key)))
                if moved is None:
                    raise NotFound(f"task instance {key} does not exist")
                return TaskInstanceRecord.from_row(moved), None
            S.delete_where("xcom", S.TI_KEY).run(conn, S.params(_key(key)))
            run = _RUN_BY_ID.first(conn, S.params({"id": row.dag_run_id}))
            assert run is not None  # the task instance's foreign key
        record = TaskInstanceRecord.from_row(row)
        record = dataclasses.replace(record, **{k: v for k, v in values.items() if k in _TI_FIELDS})
        return record, DagRunRecord.from_row(run)

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
        row = _update_returning(conn, "task_instance", {**_key(key), "try_number": try_number}, values, ("id",))
        if on_try and row is not None:
            _update(conn, "task_instance_try", {"ti_id": row.id, "try_number": try_number}, on_try)

    def heartbeat(self, key: TIKey, try_number: int, now: datetime | None = None) -> bool:
        """Refresh a running try's heartbeat; False if the task is no longer running this try."""
        with self.db.write() as conn:
            changed = _update(conn, "task_instance", _cas_where(key, TaskState.RUNNING, try_number),
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
                                       "mapped over zero items: nothing to run", now=now)
        with self.db.write() as conn:
            row = _BY_KEY.first(conn, S.params(_key(key)))
            if row is None or row.state != TaskState.NONE.value:
                return False
            if _update(conn, "task_instance", {"id": row.id, "state": TaskState.NONE, "map_index": -1},
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
                        self._event(conn, now, key.dag_id, key.run_id, key.task_id, row.try_number, "clear", old,
                                    TaskState.NONE, actor, None, map_index=row.map_index)
                current = RunState(conn.execute(select(t.dag_run.c.state).where(t.dag_run.c.id == run.id)).scalar_one())
                target = RUN_CLEAR_TRANSITIONS[current]
                if rows and target is not current:
                    conn.execute(update(t.dag_run).where(t.dag_run.c.id == run.id, t.dag_run.c.state == current)
                                 .values(state=target, queued_at=now, start_date=None, end_date=None))
                    self._event(conn, now, run.dag_id, run.run_id, None, None, "clear", current, target, actor,
                                f"{len(rows)} task(s) cleared")
        return cleared

    def mark_task_state(
        self, key: TIKey, new: TaskState, actor: str, now: datetime | None = None
    ) -> TaskInstanceRecord:
        """Set a task's outcome by hand (success or failed), audited as a ``mark`` event; returns the task
        instance as it was before. A running try is closed; killing its process is the caller's job."""
        now = now or utcnow()
        with self.db.write() as conn:
            row = _BY_KEY.first(conn, S.params(_key(key)))
            if row is None:
                raise NotFound(f"task instance {key} does not exist")
            before = TaskInstanceRecord.from_row(row)
            try:
                check_mark(before.state, new)
            except InvalidTransition as exc:
                raise UserError(f"task '{key.task_id}' of run '{key.run_id}': {exc}; nothing to do") from None
            error = f"marked failed by {actor}" if new is TaskState.FAILED else None
            self._end_by_hand(conn, row.id, before, new, now, error)
            self._event(conn, now, key.dag_id, key.run_id, key.task_id, row.try_number, "mark", before.state, new,
                        actor, None, map_index=key.map_index)
        return before

    def time_out_run(
        self, run: DagRunRecord, actor: str, detail: str, now: datetime | None = None
    ) -> list[TaskInstanceRecord] | None:
        """A running run outlived its DAG's dagrun_timeout: it fails and each unfinished task is skipped, as in
        Airflow, in one transaction audited as ``timeout`` events with ``detail``. Returns the tasks it skipped as
        they were before (killing the running ones is the caller's job), or None when the run was not running
        any more."""
        now = now or utcnow()
        c = t.task_instance.c
        with self.db.write() as conn:
            if _update(conn, "dag_run", {"id": run.id, "state": RunState.RUNNING},
                       {"state": RunState.FAILED, "end_date": now}) == 0:
                return None
            self._event(conn, now, run.dag_id, run.run_id, None, None, "timeout", RunState.RUNNING, RunState.FAILED,
                        actor, detail)
            skipped = []
            rows = conn.execute(select(t.task_instance).where(
                c.dag_run_id == run.id, c.state.in_([s.value for s in TASK_UNFINISHED])).order_by(c.id)).all()
            for row in rows:
                before = TaskInstanceRecord.from_row(row)
                if self._end_by_hand(conn, row.id, before, TaskState.SKIPPED, now, None):
                    skipped.append(before)
                    self._event(conn, now, run.dag_id, run.run_id, row.task_id, row.try_number, "timeout",
                                before.state, TaskState.SKIPPED, actor, detail, map_index=row.map_index)
        return skipped

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

    # -- pools -----------------------------------------------------------------------------------------------
    def set_pool(self, name: str, slots: int, description: str | None = None) -> None:
        """Create or resize a pool (Airflow: `pools set`)."""
        if not name or not set(name) <= _ID_CHARS or len(name) > t.ID:
            raise UserError(f"pool name {name!r} is invalid; use letters, digits, '_', '.', '-'")
        if slots < 0:
            raise UserError(f"pool '{name}': slots {slots} is negative; use 0 or more (0 holds its tasks back)")
        with self.db.write() as conn:
            values: dict[str, Any] = {"slots": slots}
            if description is not None:
                values["description"] = description
            if conn.execute(update(t.pool).where(t.pool.c.pool == name).values(**values)).rowcount == 0:
                conn.execute(insert(t.pool).values(pool=name, slots=slots, description=description))

    def delete_pool(self, name: str) -> None:
        if name == DEFAULT_POOL:
            raise UserError(f"pool '{name}' cannot be deleted; resize it with `sparkflow pools set {name} SLOTS`")
        with self.db.write() as conn:
            if conn.execute(delete(t.pool).where(t.pool.c.pool == name)).rowcount == 0:
                raise NotFound(f"pool '{name}' does not exist; see `sparkflow pools list`")

    # -- XCom ------------------------------------------------------------------------------------------------
    def set_xcom(self, ti: TaskInstanceRecord, key: str, value: Any, now: datetime | None = None) -> None:
        try:
            text = json.dumps(value, default=_sequence_as_list)
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"task '{ti.task_id}': XCom '{key}' value of type {type(value).__name__} is not JSON-serialisable "
                f"({exc}); return or push JSON types (str, int, float, bool, None, list, dict)"
            ) from None
        with self.db.write() as conn:
            conn.execute(delete(t.xcom).where(
                t.xcom.c.dag_id == ti.dag_id, t.xcom.c.run_id == ti.run_id, t.xcom.c.task_id == ti.task_id,
                t.xcom.c.map_index == ti.map_index, t.xcom.c.key == key,
            ))
            conn.execute(insert(t.xcom).values(
                dag_run_id=ti.dag_run_id, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id,
                map_index=ti.map_index, key=key, value=text, created_at=now or utcnow(),
            ))

    def clear_xcoms(self, key: TIKey) -> None:
        """A new try starts with no XComs of its own (as in Airflow)."""
        with self.db.write() as conn:
            conn.execute(delete(t.xcom).where(
                t.xcom.c.dag_id == key.dag_id, t.xcom.c.run_id == key.run_id, t.xcom.c.task_id == key.task_id,
                t.xcom.c.map_index == key.map_index,
            ))

    # -- connections -----------------------------------------------------------------------------------------
    def _connection_values(self, conn: Connection) -> dict[str, Any]:
        return dict(
            conn_id=conn.conn_id, conn_type=conn.conn_type, description=conn.description, host=conn.host,
            schema=conn.schema, login=conn.login, port=conn.port,
            password=self.secrets.encrypt(conn.password), extra=self.secrets.encrypt(conn.extra),
        )

    def add_connections(self, conns: Sequence[Connection], overwrite: bool = False) -> None:
        """Add connections in one transaction: all of them or (on any clash) none."""
        with self.db.write() as conn:
            for item in conns:
                exists = conn.execute(
                    select(t.connection.c.conn_id).where(t.connection.c.conn_id == item.conn_id)
                ).first()
                if exists and not overwrite:
                    raise UserError(
                        f"connection '{item.conn_id}' already exists; delete it first or use --overwrite"
                    )
                if exists:
                    conn.execute(delete(t.connection).where(t.connection.c.conn_id == item.conn_id))
                conn.execute(insert(t.connection).values(**self._connection_values(item)))

    def delete_connection(self, conn_id: str) -> None:
        with self.db.write() as conn:
            result = conn.execute(delete(t.connection).where(t.connection.c.conn_id == conn_id))
            if result.rowcount == 0:
                raise NotFound(f"connection '{conn_id}' does not exist; see `sparkflow connections list`")

    # -- variables -------------------------------------------------------------------------------------------
    def set_variable(self, key: str, value: str, description: str | None = None) -> None:
        self.set_variables({key: (value, description)})

    def set_variables(self, items: Mapping[str, tuple[str, str | None]]) -> None:
        """Set (key -> (value, description)) in one transaction: all of them or none."""
        with self.db.write() as conn:
            for key, (value, description) in items.items():
                conn.execute(delete(t.variable).where(t.variable.c.key == key))
                conn.execute(
                    insert(t.variable).values(key=key, val=self.secrets.encrypt(value), description=description)
                )

    def delete_variable(self, key: str) -> None:
        with self.db.write() as conn:
            result = conn.execute(delete(t.variable).where(t.variable.c.key == key))
            if result.rowcount == 0:
                raise NotFound(f"variable '{key}' does not exist; see `sparkflow variables list`")

    # -- web users and API tokens ----------------------------------------------------------------------------
    def create_user(self, username: str, password_hash: str, role: str, now: datetime | None = None) -> None:
        """Add a web user; the caller hashes the password (sparkflow.web.auth), the store never sees it."""
        if not username or not set(username) <= _ID_CHARS or len(username) > t.ID:
            raise UserError(f"username {username!r} is invalid; use letters, digits, '_', '.', '-'")
        if role not in USER_ROLES:
            raise UserError(f"role {role!r} is unknown; choose one of {', '.join(USER_ROLES)}")
        with self.db.write() as conn:
            try:
                conn.execute(insert(t.ab_user).values(username=username, password_hash=password_hash, role=role,
                                                      active=True, created_at=now or utcnow()))
            except IntegrityError:
                raise UserError(f"user '{username}' already exists; choose another --username") from None

    def add_api_token(self, username: str, token_hash: str, now: datetime | None = None) -> None:
        """Store the SHA-256 of a new API token of ``username`` (the token itself is shown once, never kept)."""
        with self.db.write() as conn:
            user_id = conn.execute(select(t.ab_user.c.id).where(t.ab_user.c.username == username)).scalar()
            if user_id is None:
                raise NotFound(f"user '{username}' does not exist; create it with `sparkflow users create`")
            conn.execute(insert(t.api_token).values(user_id=user_id, token_hash=token_hash,
                                                    created_at=now or utcnow()))

    # -- audit -----------------------------------------------------------------------------------------------
    @staticmethod
    def _event(
        conn: SAConnection, at: datetime, dag_id: str, run_id: str | None, task_id: str | None,
        try_number: int | None, event: str, old: str | None, new: str | None, actor: str, detail: str | None,
        map_index: int = -1,
    ) -> None:
        S.insert_rows(conn, "state_event", [dict(
            at=at, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number,
            event=event,
            old_state=old, new_state=new, actor=actor, detail=detail,
        )])


def _sequence_as_list(value: Any) -> Any:
    """A lazy sequence (a mapped task's outputs, ``XComArg.map``) is stored as the list it reads as."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _lean(change: TaskStateChange) -> bool:
    """A change that touches neither the try history nor the duration: it needs no read of the row first."""
    return change.expected is not TaskState.RUNNING and change.new not in (
        TaskState.RUNNING, TaskState.FAILED, TaskState.SUCCESS)


def _key(key: TIKey) -> dict[str, Any]:
    return {"dag_id": key.dag_id, "run_id": key.run_id, "task_id": key.task_id, "map_index": key.map_index}


def _cas_where(key: TIKey, state: TaskState, try_number: int | None) -> dict[str, Any]:
    """The compare-and-set condition of a task instance: its key, the expected state and, when given, its try."""
    where: dict[str, Any] = {**_key(key), "state": state}
    if try_number is not None:
        where["try_number"] = try_number
    return where


def _update(conn: SAConnection, table: str, where: Mapping[str, Any], values: Mapping[str, Any]) -> int:
    """One prepared UPDATE (statements.update_where) of ``table``; returns how many rows it changed."""
    return S.update_where(table, tuple(where), tuple(values)).run(conn, S.params(where, values))


def _update_returning(conn: SAConnection, table: str, where: Mapping[str, Any], values: Mapping[str, Any],
                      returning: tuple[str, ...]) -> S.Row | None:
    """The same, returning these columns of the row it changed (None: no row matched)."""
    return S.update_where(table, tuple(where), tuple(values), returning).first(conn, S.params(where, values))


def _check_exists(conn: SAConnection, key: TIKey) -> None:
    if S.select_where("task_instance", S.TI_KEY, ("id",)).first(conn, S.params(_key(key))) is None:
        raise NotFound(f"task instance {key} does not exist")


_BY_KEY = S.select_where("task_instance", S.TI_KEY)
_RUN_BY_ID = S.select_where("dag_run", ("id",))
_TRY_START = S.select_where("task_instance_try", ("ti_id", "try_number"), ("start_date",))
