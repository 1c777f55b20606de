"""The only writer of the metastore.

Every task and run state change goes through :meth:`Store.set_task_state` / :meth:`Store.set_run_state`: the
state machine is checked, then a compare-and-set ``UPDATE ... WHERE state = :expected`` runs in the same
transaction as its side rows (try history, audit event). Zero rows updated means someone else moved the row
first; the caller is told (False) and nothing is overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection as SAConnection
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from sparkflow.connections import Connection, SecretBox
from sparkflow.definitions.dag import DAG
from sparkflow.definitions.loader import ImportErrorInfo
from sparkflow.definitions.schedule import DataInterval
from sparkflow.exceptions import ConfigError, NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import DagRunRecord, TaskInstanceRecord, TIKey
from sparkflow.state import RunState, TaskState, check_run_transition, check_transition

EXTERNAL_ID_COLUMNS = ("spark_app_id", "spark_driver_id", "spark_ui_url")
# Columns of task_instance copied to the current try's history row whenever they change.
_TRY_COLUMNS = ("hostname", "pid", "log_path", "error", *EXTERNAL_ID_COLUMNS)


def utcnow() -> datetime:
    return datetime.now(UTC)


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
        now: datetime | None = None, deactivate_missing: bool = True,
    ) -> None:
        """Record what a parse of the DAG folder found; errors of the parsed files replace the old ones."""
        now = now or utcnow()
        files = set(parsed_files)
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
                    conn.execute(insert(t.dag).values(dag_id=dag.dag_id, is_paused=paused, **values))
            if deactivate_missing and files:
                conn.execute(
                    update(t.dag)
                    .where(t.dag.c.fileloc.in_(files), t.dag.c.dag_id.not_in(seen))
                    .values(is_active=False)
                )
            conn.execute(delete(t.import_error).where(t.import_error.c.filename.in_(files)))
            for error in import_errors:
                conn.execute(insert(t.import_error).values(
                    filename=error.filename, lineno=error.lineno, dag_id=error.dag_id, task_id=error.task_id,
                    message=error.message, timestamp=now,
                ))

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
            dag_run_id = result.inserted_primary_key[0]
            if dag.tasks:
                conn.execute(insert(t.task_instance), [
                    dict(
                        dag_run_id=dag_run_id, dag_id=dag.dag_id, run_id=run_id, task_id=task.task_id,
                        state=TaskState.NONE, try_number=0, max_tries=task.retries, operator=type(task).__name__,
                        pool=task.pool, queue=task.queue, priority_weight=task.priority_weight, updated_at=now,
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
            result = conn.execute(
                update(t.dag_run).where(t.dag_run.c.id == run.id, t.dag_run.c.state == run.state).values(**values)
            )
            if result.rowcount == 0:
                return False
            self._event(conn, now, run.dag_id, run.run_id, None, None, "state_change", run.state, new, actor, None)
        return True

    # -- task instances ----------------------------------------------------------------------------------------
    def set_task_state(
        self,
        key: TIKey,
        expected: TaskState,
        new: TaskState,
        actor: str,
        detail: str | None = None,
        now: datetime | None = None,
        **fields: Any,
    ) -> bool:
        """Compare-and-set one task instance from ``expected`` to ``new`` with extra column values.

        Entering RUNNING opens a try-history row; leaving RUNNING closes it. Returns False (and writes nothing)
        when the row was not in ``expected``.
        """
        check_transition(expected, new)
        now = now or utcnow()
        values: dict[str, Any] = {"state": new, "updated_at": now, **fields}
        with self.db.write() as conn:
            ti = conn.execute(select(t.task_instance).where(*_ti_where(key))).one_or_none()
            if ti is None:
                raise NotFound(f"task instance {key} does not exist")
            if new is TaskState.RUNNING:
                values.setdefault("start_date", now)
                values.setdefault("last_heartbeat_at", now)
                values.setdefault("end_date", None)
                values.setdefault("duration", None)
                values.setdefault("error", None)
            if expected is TaskState.RUNNING or new in (TaskState.FAILED, TaskState.SUCCESS):
                values.setdefault("end_date", now)
                start = values.get("start_date", ti.start_date)
                if start is not None and values["end_date"] is not None:
                    values.setdefault("duration", (values["end_date"] - start).total_seconds())
            result = conn.execute(
                update(t.task_instance).where(t.task_instance.c.id == ti.id, t.task_instance.c.state == expected)
                .values(**values)
            )
            if result.rowcount == 0:
                return False
            try_number = values.get("try_number", ti.try_number)
            if new is TaskState.RUNNING:
                conn.execute(insert(t.task_instance_try).values(
                    ti_id=ti.id, dag_id=key.dag_id, run_id=key.run_id, task_id=key.task_id, try_number=try_number,
                    state=new, start_date=values["start_date"],
                    **{c: values.get(c, ti._mapping[c]) for c in _TRY_COLUMNS},
                ))
            elif expected is TaskState.RUNNING:
                conn.execute(
                    update(t.task_instance_try)
                    .where(t.task_instance_try.c.ti_id == ti.id, t.task_instance_try.c.try_number == try_number)
                    .values(state=new, end_date=values.get("end_date"), duration=values.get("duration"),
                            **{c: values[c] for c in _TRY_COLUMNS if c in values})
                )
            self._event(conn, now, key.dag_id, key.run_id, key.task_id, try_number, "state_change", expected, new,
                        actor, detail)
        return True

    def record_external_ids(self, key: TIKey, try_number: int, **ids: str | None) -> None:
        """Store Spark ids on the task instance and its current try, at once (before any polling)."""
        values = {k: v for k, v in ids.items() if k in EXTERNAL_ID_COLUMNS and v}
        if not values:
            return
        with self.db.write() as conn:
            conn.execute(update(t.task_instance).where(*_ti_where(key), t.task_instance.c.try_number == try_number)
                         .values(**values))
            ti_id = select(t.task_instance.c.id).where(*_ti_where(key)).scalar_subquery()
            conn.execute(update(t.task_instance_try)
                         .where(t.task_instance_try.c.ti_id == ti_id, t.task_instance_try.c.try_number == try_number)
                         .values(**values))

    def heartbeat(self, key: TIKey, try_number: int, now: datetime | None = None) -> bool:
        """Refresh a running try's heartbeat; False if the task is no longer running this try."""
        with self.db.write() as conn:
            result = conn.execute(
                update(t.task_instance)
                .where(*_ti_where(key), t.task_instance.c.state == TaskState.RUNNING,
                       t.task_instance.c.try_number == try_number)
                .values(last_heartbeat_at=now or utcnow())
            )
        return result.rowcount == 1

    def skip_tasks(self, run: DagRunRecord, task_ids: Iterable[str], actor: str, detail: str) -> list[str]:
        """Mark not-yet-started tasks of a run skipped (branching, short-circuit). Returns those it moved."""
        moved = []
        for task_id in task_ids:
            key = TIKey(run.dag_id, run.run_id, task_id)
            for expected in (TaskState.NONE, TaskState.SCHEDULED):
                if self.set_task_state(key, expected, TaskState.SKIPPED, actor, detail):
                    moved.append(task_id)
                    break
        return moved

    # -- XCom ------------------------------------------------------------------------------------------------
    def set_xcom(self, ti: TaskInstanceRecord, key: str, value: Any, now: datetime | None = None) -> None:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"task '{ti.task_id}': XCom '{key}' value of type {type(value).__name__} is not JSON-serialisable "
                f"({exc}); return or push JSON types (str, int, float, bool, None, list, dict)"
            ) from None
        with self.db.write() as conn:
            conn.execute(delete(t.xcom).where(
                t.xcom.c.dag_id == ti.dag_id, t.xcom.c.run_id == ti.run_id, t.xcom.c.task_id == ti.task_id,
                t.xcom.c.key == key,
            ))
            conn.execute(insert(t.xcom).values(
                dag_run_id=ti.dag_run_id, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, key=key,
                value=text, created_at=now or utcnow(),
            ))

    def clear_xcoms(self, key: TIKey) -> None:
        """A new try starts with no XComs of its own (as in Airflow)."""
        with self.db.write() as conn:
            conn.execute(delete(t.xcom).where(
                t.xcom.c.dag_id == key.dag_id, t.xcom.c.run_id == key.run_id, t.xcom.c.task_id == key.task_id
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
        with self.db.write() as conn:
            conn.execute(delete(t.variable).where(t.variable.c.key == key))
            conn.execute(insert(t.variable).values(key=key, val=self.secrets.encrypt(value), description=description))

    # -- audit -----------------------------------------------------------------------------------------------
    @staticmethod
    def _event(
        conn: SAConnection, at: datetime, dag_id: str, run_id: str | None, task_id: str | None,
        try_number: int | None, event: str, old: str | None, new: str | None, actor: str, detail: str | None,
    ) -> None:
        conn.execute(insert(t.state_event).values(
            at=at, dag_id=dag_id, run_id=run_id, task_id=task_id, try_number=try_number, event=event,
            old_state=old, new_state=new, actor=actor, detail=detail,
        ))


def _ti_where(key: TIKey) -> tuple[Any, ...]:
    c = t.task_instance.c
    return (and_(c.dag_id == key.dag_id, c.run_id == key.run_id, c.task_id == key.task_id),)
