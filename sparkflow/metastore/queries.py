"""Read-only queries. Every function returns frozen records; nothing here writes."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select

from sparkflow.connections import (
    Connection,
    SecretBox,
    connection_from_env,
    guess_conn_type,
    missing_connection_hint,
)
from sparkflow.exceptions import NotFound
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import (
    AssetEventRecord,
    AssetRecord,
    DagFileStat,
    DagRecord,
    DagRunRecord,
    ImportErrorRecord,
    PoolRecord,
    RenderedFieldsRecord,
    SerializedDagRecord,
    StateEventRecord,
    TaskInstanceRecord,
    TaskSlot,
    TaskTryRecord,
    TIKey,
    UserRecord,
    VariableRecord,
    XComRecord,
)
from sparkflow.state import RUN_ACTIVE, TASK_ACTIVE, RunState, TaskState


def list_dags(db: Database, include_inactive: bool = False) -> list[DagRecord]:
    query = select(t.dag).order_by(t.dag.c.dag_id)
    if not include_inactive:
        query = query.where(t.dag.c.is_active.is_(True))
    with db.read() as conn:
        return [DagRecord.from_row(r) for r in conn.execute(query)]


def get_dag(db: Database, dag_id: str) -> DagRecord:
    with db.read() as conn:
        row = conn.execute(select(t.dag).where(t.dag.c.dag_id == dag_id)).one_or_none()
    if row is None:
        raise NotFound(f"DAG '{dag_id}' is not known; check `sparkflow dags list` and the DAG folder")
    return DagRecord.from_row(row)


def list_runs(
    db: Database, dag_id: str | None = None, states: Iterable[RunState] | None = None, limit: int | None = None
) -> list[DagRunRecord]:
    wanted = None if states is None else frozenset(states)
    where: dict[str, Any] = {} if dag_id is None else {"dag_id": dag_id}
    if wanted is not None:
        where["state"] = sorted(s.value for s in wanted)
    with db.read() as conn:
        if dag_id is None and wanted == RUN_ACTIVE and limit is None:
            rows: Iterable[Any] = _ACTIVE_RUNS.rows(conn)  # the scheduler loop's every iteration
        else:
            rows = conn.execute(_runs_query(dag_id is not None, states is not None, limit), where)
        return [DagRunRecord.from_row(r) for r in rows]


@functools.cache
def _runs_query(by_dag: bool, by_state: bool, limit: int | None) -> Select[Any]:
    """list_runs' statement, built once per shape."""
    c = t.dag_run.c
    query = select(t.dag_run).order_by(c.logical_date.desc(), c.id.desc()).limit(limit)
    if by_dag:
        query = query.where(c.dag_id == bindparam("dag_id"))
    return query.where(c.state.in_(bindparam("state", expanding=True))) if by_state else query


_RUN_BY_KEY = S.select_where("dag_run", ("dag_id", "run_id"))
_EV = t.state_event.c
_LAST_EVENT = S.Prepared(select(func.max(_EV.id)), [_EV.id])
_ACTIVE_RUNS = S.Prepared(_runs_query(False, False, None).where(
    S.in_constants(t.dag_run.c.state, sorted(s.value for s in RUN_ACTIVE))), list(t.dag_run.c))


def get_run(db: Database, dag_id: str, run_id: str) -> DagRunRecord:
    with db.read() as conn:
        row = _RUN_BY_KEY.first(conn, S.params({"dag_id": dag_id, "run_id": run_id}))
    if row is None:
        raise NotFound(f"DAG '{dag_id}' has no run '{run_id}'; see `sparkflow runs list {dag_id}`")
    return DagRunRecord.from_row(row)


def task_instances(db: Database, dag_id: str, run_id: str) -> list[TaskInstanceRecord]:
    with db.read() as conn:  # what `trigger --wait` and `logs --follow` read on every tick
        rows = _TIS_OF_RUN.rows(conn, S.params({"dag_id": dag_id, "run_id": run_id}))
        return [TaskInstanceRecord.from_row(r) for r in rows]


_TIS_OF_RUN = S.select_where("task_instance", ("dag_id", "run_id"), order_by=("id",))


def mapped_instances(db: Database, dag_id: str, run_id: str, task_id: str) -> list[TaskInstanceRecord]:
    """The instances of one mapped task in a run, by map_index (none before it is expanded)."""
    c = t.task_instance.c
    with db.read() as conn:
        rows = conn.execute(select(t.task_instance).where(
            c.dag_id == dag_id, c.run_id == run_id, c.task_id == task_id, c.map_index >= 0).order_by(c.map_index))
        return [TaskInstanceRecord.from_row(r) for r in rows]


def count_mapped(db: Database, dag_id: str, run_id: str, task_id: str) -> int:
    """How many instances a mapped task has in a run (0 before expansion, or when it expanded to nothing)."""
    c = t.task_instance.c
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(t.task_instance).where(
            c.dag_id == dag_id, c.run_id == run_id, c.task_id == task_id, c.map_index >= 0)).scalar_one())


def task_instances_of_runs(db: Database, run_ids: Sequence[int]) -> list[TaskInstanceRecord]:
    if not run_ids:
        return []
    with db.read() as conn:
        rows = conn.execute(select(t.task_instance).where(t.task_instance.c.dag_run_id.in_(run_ids)))
        return [TaskInstanceRecord.from_row(r) for r in rows]


def queued_task_instances(db: Database) -> list[tuple[TIKey, int, datetime | None]]:
    """(key, try number, queued at) of every queued task instance (the scheduler adopting work after a restart).
    Only these columns: this is in the first iteration of every `trigger --wait`, where compiling a select of the
    whole row would be most of its cost."""
    query = S.select_where("task_instance", ("state",), (*S.TI_KEY, "try_number", "queued_at"), order_by=("id",))
    with db.read() as conn:
        rows = query.rows(conn, S.params({"state": TaskState.QUEUED.value}))
    return [(TIKey(*r[:4]), r[4], r[5]) for r in rows]


_SLOT_COLUMNS = ("id", "task_id", "state", "try_number", "next_try_at", "priority_weight", "pool", "pool_slots",
                 "queue", "map_index")
# The events after a given one, each with its task instance's scheduling columns as they are now (NULL for a
# run-level event, or a task instance deleted since): what changed and its current state, in one statement.
_CHANGED_SLOTS = S.Prepared(
    select(_EV.id, _EV.dag_id, _EV.run_id, *(t.task_instance.c[n] for n in _SLOT_COLUMNS))
    .select_from(t.state_event.outerjoin(t.task_instance, and_(*(t.task_instance.c[k] == _EV[k] for k in S.TI_KEY))))
    .where(_EV.id > bindparam("after", type_=_EV.id.type)).order_by(_EV.id),
    [_EV.id, _EV.dag_id, _EV.run_id, *(t.task_instance.c[n] for n in _SLOT_COLUMNS)])


def task_slots(db: Database, dag_id: str, run_id: str) -> dict[str | tuple[str, int], TaskSlot]:
    """The scheduling columns of one run's task instances (the scheduler loop's per-run read), by TaskSlot.ref:
    the task_id, or (task_id, map_index) for an instance of a mapped task."""
    with db.read() as conn:
        rows = S.select_where("task_instance", ("dag_id", "run_id"), _SLOT_COLUMNS).rows(
            conn, S.params({"dag_id": dag_id, "run_id": run_id}))
    slots = (TaskSlot(r[0], r[1], TaskState(r[2]), *r[3:]) for r in rows)
    return {slot.ref: slot for slot in slots}


def task_slots_of(db: Database, keys: Iterable[TIKey]) -> list[TaskSlot]:
    """The scheduling columns of these task instances (those that exist), in one read."""
    query = S.select_where("task_instance", S.TI_KEY, _SLOT_COLUMNS)
    with db.read() as conn:
        rows = [row for key in keys if (row := query.first(conn, S.params(key._asdict()))) is not None]
    return [TaskSlot(r[0], r[1], TaskState(r[2]), *r[3:]) for r in rows]


def last_event_id(db: Database) -> int:
    """The newest audit event's id (0 when there is none): where task_changes_since() starts."""
    with db.read() as conn:
        return int(_LAST_EVENT.rows(conn)[0][0] or 0)


def task_changes_since(db: Database, event_id: int) -> tuple[int, dict[tuple[str, str], list[TaskSlot]]]:
    """The task instances with an audit event (every change of their state, try or retry time writes one) after
    ``event_id``, as they are now, by (dag_id, run_id); and the newest event's id. SQLite only: its writers take
    turns, so event ids grow in commit order and nothing committed later can carry a smaller id (on PostgreSQL it
    can)."""
    with db.read() as conn:
        rows = _CHANGED_SLOTS.rows(conn, {"after": event_id})
    newest = rows[-1][0] if rows else event_id
    by_run: dict[tuple[str, str], dict[int, TaskSlot]] = {}
    for r in rows:
        if r[3] is not None:  # a task instance's event, and the instance still exists
            by_run.setdefault((r[1], r[2]), {})[r[3]] = TaskSlot(r[3], r[4], TaskState(r[5]), *r[6:])
    return newest, {run: list(slots.values()) for run, slots in by_run.items()}


def latest_run(db: Database, dag_id: str, run_types: Iterable[str]) -> DagRunRecord | None:
    """The run of these types with the latest logical date (where scheduling continues from)."""
    c = t.dag_run.c
    query = (select(t.dag_run).where(c.dag_id == dag_id, c.run_type.in_(list(run_types)))
             .order_by(c.logical_date.desc(), c.id.desc()).limit(1))
    with db.read() as conn:
        row = conn.execute(query).one_or_none()
    return DagRunRecord.from_row(row) if row is not None else None


def runs_at(db: Database, dag_id: str, logical_date: datetime) -> list[DagRunRecord]:
    c = t.dag_run.c
    with db.read() as conn:
        rows = conn.execute(select(t.dag_run).where(c.dag_id == dag_id, c.logical_date == logical_date)
                            .order_by(c.id))
        return [DagRunRecord.from_row(r) for r in rows]


def previous_task_states(
    db: Database, dag_id: str, before: datetime, task_ids: Iterable[str]
) -> dict[str, TaskState] | None:
    """depends_on_past: the states of these tasks in the DAG's run just before ``before`` (by logical date);
    None when there is no earlier run."""
    c = t.dag_run.c
    with db.read() as conn:
        prev = conn.execute(select(t.dag_run.c.id).where(c.dag_id == dag_id, c.logical_date < before)
                            .order_by(c.logical_date.desc(), c.id.desc()).limit(1)).scalar_one_or_none()
        if prev is None:
            return None
        ti = t.task_instance.c
        rows = conn.execute(select(ti.task_id, ti.state).where(ti.dag_run_id == prev, ti.task_id.in_(list(task_ids))))
        return {r.task_id: TaskState(r.state) for r in rows}


def external_states(
    db: Database, dag_id: str, logical_date: datetime, task_ids: Sequence[str] | None
) -> list[str]:
    """ExternalTaskSensor: the states of these tasks in dag_id's runs at logical_date, or of the runs themselves
    when task_ids is None."""
    c = t.dag_run.c
    with db.read() as conn:
        if task_ids is None:
            return list(conn.execute(select(c.state).where(c.dag_id == dag_id, c.logical_date == logical_date))
                        .scalars())
        ti = t.task_instance.c
        query = (select(ti.state).join(t.dag_run, t.dag_run.c.id == ti.dag_run_id)
                 .where(c.dag_id == dag_id, c.logical_date == logical_date, ti.task_id.in_(list(task_ids))))
        return list(conn.execute(query).scalars())


def list_pools(db: Database) -> list[PoolRecord]:
    """Pools with their running and queued slots."""
    with db.read() as conn:
        return _pools(conn)


def queue_limits(db: Database, dag_ids: Iterable[str]) -> tuple[list[PoolRecord], dict[str, int]]:
    """What the scheduler checks before queuing, in one read: the pools with their used slots (list_pools) and
    how many task instances of each of these DAGs are queued or running (max_active_tasks; 0 when none)."""
    wanted = set(dag_ids)
    with db.read() as conn:
        pools = _POOLS.rows(conn)
        used = _ACTIVE_USE.rows(conn)
    active = {dag_id: 0 for dag_id in wanted}
    for dag_id, _, _, _, count in used:
        if dag_id in active:
            active[dag_id] += count
    return _pool_records(pools, used), active


def active_task_counts(db: Database, dag_ids: Iterable[str]) -> dict[tuple[str, str, str], int]:
    """(dag_id, run_id, task_id) -> instances queued or running, for max_active_tis_per_dag(run)."""
    c = t.task_instance.c
    query = (select(c.dag_id, c.run_id, c.task_id, func.count())
             .where(c.dag_id.in_(sorted(set(dag_ids))), c.state.in_([s.value for s in TASK_ACTIVE]))
             .group_by(c.dag_id, c.run_id, c.task_id))
    with db.read() as conn:
        return {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(query)}


def _pools(conn: Any) -> list[PoolRecord]:
    return _pool_records(_POOLS.rows(conn), _ACTIVE_USE.rows(conn))


def _pool_records(pools: Sequence[Any], used: Sequence[Any]) -> list[PoolRecord]:
    running: dict[str, int] = {}
    queued: dict[str, int] = {}
    for _, pool, state, slots, _ in used:
        into = running if state == TaskState.RUNNING.value else queued
        into[pool] = into.get(pool, 0) + int(slots)
    return [PoolRecord(p.pool, p.slots, p.description, running.get(p.pool, 0), queued.get(p.pool, 0))
            for p in pools]


_POOLS = S.Prepared(select(t.pool).order_by(t.pool.c.pool), list(t.pool.c))
# Queued and running task instances per DAG, pool and state, with the pool slots they hold: the pools' use and
# each DAG's active count (max_active_tasks) from one grouped read.
_TI = t.task_instance.c
_ACTIVE_USE = S.Prepared(
    select(_TI.dag_id, _TI.pool, _TI.state, func.sum(_TI.pool_slots), func.count())
    .where(S.in_constants(_TI.state, [TaskState.RUNNING.value, TaskState.QUEUED.value]))
    .group_by(_TI.dag_id, _TI.pool, _TI.state),
    [_TI.dag_id, _TI.pool, _TI.state, _TI.pool_slots, _TI.id])



def get_task_instance(db: Database, key: TIKey) -> TaskInstanceRecord:
    with db.read() as conn:
        row = S.select_where("task_instance", S.TI_KEY).first(conn, S.params(key._asdict()))
    if row is None:
        count = count_mapped(db, key.dag_id, key.run_id, key.task_id) if key.map_index < 0 else 0
        if count:
            raise NotFound(f"task '{key.task_id}' is mapped into {count} instance(s) in run '{key.run_id}'; choose "
                           f"one with --map-index 0..{count - 1}")
        which = f" with map_index {key.map_index}" if key.map_index >= 0 else ""
        raise NotFound(
            f"task '{key.task_id}' has no instance{which} in run '{key.run_id}' of DAG '{key.dag_id}'; "
            f"see `sparkflow tasks states {key.dag_id} {key.run_id}`"
        )
    return TaskInstanceRecord.from_row(row)


def task_tries(db: Database, key: TIKey) -> list[TaskTryRecord]:
    c = t.task_instance_try.c
    with db.read() as conn:
        rows = conn.execute(
            select(t.task_instance_try)
            .where(c.dag_id == key.dag_id, c.run_id == key.run_id, c.task_id == key.task_id,
                   c.map_index == key.map_index)
            .order_by(c.try_number)
        )
        return [TaskTryRecord.from_row(r) for r in rows]


def state_events(db: Database, dag_id: str, run_id: str | None = None) -> list[StateEventRecord]:
    c = t.state_event.c
    query = select(t.state_event).where(c.dag_id == dag_id).order_by(c.id)
    if run_id is not None:
        query = query.where(c.run_id == run_id)
    with db.read() as conn:
        return [StateEventRecord.from_row(r) for r in conn.execute(query)]


def get_xcom(db: Database, dag_id: str, run_id: str, task_id: str, key: str, map_index: int = -1
             ) -> XComRecord | None:
    with db.read() as conn:  # a prepared statement: every mapped instance reads its input
        row = _XCOM_BY_KEY.first(conn, S.params(
            {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index, "key": key}))
    return XComRecord.from_row(row) if row is not None else None


_XCOM_BY_KEY = S.select_where("xcom", (*S.TI_KEY, "key"))


def mapped_xcom_values(db: Database, dag_id: str, run_id: str, task_id: str, key: str) -> list[Any]:
    """The values a mapped task's instances pushed under ``key``, in map_index order (None where one pushed none,
    as Airflow's lazy sequence gives)."""
    ti, x = t.task_instance.c, t.xcom.c
    query = (select(ti.map_index, x.value)
             .select_from(t.task_instance.outerjoin(t.xcom, (x.dag_id == ti.dag_id) & (x.run_id == ti.run_id)
                                                    & (x.task_id == ti.task_id) & (x.map_index == ti.map_index)
                                                    & (x.key == key)))
             .where(ti.dag_id == dag_id, ti.run_id == run_id, ti.task_id == task_id, ti.map_index >= 0)
             .order_by(ti.map_index))
    with db.read() as conn:
        return [json.loads(r.value) if r.value is not None else None for r in conn.execute(query)]


def list_xcoms(db: Database, dag_id: str, run_id: str) -> list[XComRecord]:
    c = t.xcom.c
    with db.read() as conn:
        rows = conn.execute(select(t.xcom).where(c.dag_id == dag_id, c.run_id == run_id).order_by(c.id))
        return [XComRecord.from_row(r) for r in rows]


def list_import_errors(db: Database) -> list[ImportErrorRecord]:
    with db.read() as conn:
        rows = conn.execute(select(t.import_error).order_by(t.import_error.c.filename, t.import_error.c.id))
        return [ImportErrorRecord.from_row(r) for r in rows]


# -- serialized DAGs and parsed files ---------------------------------------------------------------------------
def serialized_dag_hashes(db: Database, active_only: bool = True) -> dict[str, str]:
    """dag_id -> hash of its serialized form (of active DAGs): a reader re-reads a DAG only when this changed."""
    c = t.serialized_dag.c
    query = select(c.dag_id, c.dag_hash)
    if active_only:
        query = query.join(t.dag, t.dag.c.dag_id == c.dag_id).where(t.dag.c.is_active.is_(True))
    with db.read() as conn:
        return {dag_id: digest for dag_id, digest in conn.execute(query)}


def serialized_dags(db: Database, dag_ids: Iterable[str]) -> list[SerializedDagRecord]:
    wanted = list(dag_ids)
    if not wanted:
        return []
    c = t.serialized_dag.c
    with db.read() as conn:
        return [SerializedDagRecord.from_row(r) for r in conn.execute(select(t.serialized_dag).where(
            c.dag_id.in_(bindparam("ids", expanding=True))), {"ids": wanted})]


def dag_file_stats(db: Database) -> list[DagFileStat]:
    with db.read() as conn:
        return [DagFileStat.from_row(r) for r in conn.execute(select(t.dag_file).order_by(t.dag_file.c.fileloc))]


def rendered_fields(db: Database, key: TIKey) -> RenderedFieldsRecord | None:
    c = t.rendered_task_fields.c
    with db.read() as conn:
        row = conn.execute(select(t.rendered_task_fields).where(
            c.dag_id == key.dag_id, c.run_id == key.run_id, c.task_id == key.task_id,
            c.map_index == key.map_index)).one_or_none()
    return RenderedFieldsRecord.from_row(row) if row is not None else None


def _connection(row: Any, secrets: SecretBox | None) -> Connection:
    def reveal(token: str | None) -> str | None:
        if token is None:
            return None
        if secrets is None:
            return None  # listings without the key show secrets as unset, never as ciphertext
        return secrets.decrypt(token)

    return Connection(
        conn_id=row.conn_id, conn_type=row.conn_type, host=row.host, port=row.port, login=row.login,
        password=reveal(row.password), schema=row.schema, extra=reveal(row.extra), description=row.description,
    )


def list_connections(db: Database, secrets: SecretBox | None) -> list[Connection]:
    with db.read() as conn:
        rows = conn.execute(select(t.connection).order_by(t.connection.c.conn_id)).all()
    return [_connection(r, secrets) for r in rows]


def find_connection(db: Database, conn_id: str, secrets: SecretBox | None) -> Connection | None:
    with db.read() as conn:
        row = conn.execute(select(t.connection).where(t.connection.c.conn_id == conn_id)).one_or_none()
    return _connection(row, secrets) if row is not None else None


def get_variable(db: Database, key: str, secrets: SecretBox | None) -> str | None:
    with db.read() as conn:
        row = conn.execute(select(t.variable).where(t.variable.c.key == key)).one_or_none()
    if row is None or secrets is None:
        return None
    return secrets.decrypt(row.val)


def list_variables(db: Database, secrets: SecretBox | None) -> list[VariableRecord]:
    """Every variable by key; values are decrypted only when the key is given."""
    with db.read() as conn:
        rows = conn.execute(select(t.variable).order_by(t.variable.c.key)).all()
    return [
        VariableRecord(r.key, secrets.decrypt(r.val) if secrets is not None else None, r.description) for r in rows
    ]


def resolve_connection(db: Database, conn_id: str, secrets: SecretBox | None) -> Connection:
    """A connection as tasks see it: SPARKFLOW_CONN_<ID> first, then the store; unknown ids are an error."""
    from_env = connection_from_env(conn_id)
    if from_env is not None:
        return from_env
    found = find_connection(db, conn_id, secrets)
    if found is None:
        with db.read() as conn:
            rows = conn.execute(select(t.connection.c.conn_id, t.connection.c.conn_type)).all()
        kind = guess_conn_type(conn_id)
        same = sorted(r.conn_id for r in rows if kind is None or r.conn_type == kind)
        what = f"{'Spark' if kind == 'spark' else kind} connections" if kind else "connections"
        known = f"known {what}: {', '.join(same)}" if same else f"no {what} are defined"
        raise NotFound(f"connection '{conn_id}' does not exist ({known}); {missing_connection_hint(conn_id, kind)}")
    return found


def find_user(db: Database, username: str) -> UserRecord | None:
    with db.read() as conn:
        row = conn.execute(select(t.ab_user).where(t.ab_user.c.username == username)).one_or_none()
    return UserRecord.from_row(row) if row is not None else None


def find_user_by_token(db: Database, token_hash: str) -> UserRecord | None:
    """The active user owning the API token with this SHA-256, if any."""
    query = (select(t.ab_user).join(t.api_token, t.api_token.c.user_id == t.ab_user.c.id)
             .where(t.api_token.c.token_hash == token_hash, t.ab_user.c.active.is_(True)))
    with db.read() as conn:
        row = conn.execute(query).one_or_none()
    return UserRecord.from_row(row) if row is not None else None


def list_users(db: Database) -> list[UserRecord]:
    with db.read() as conn:
        return [UserRecord.from_row(r) for r in conn.execute(select(t.ab_user).order_by(t.ab_user.c.username))]


def task_history(db: Database, dag_id: str, task_id: str, limit: int = 20) -> list[TaskInstanceRecord]:
    """This task's instances in the DAG's latest runs (by logical date), oldest first: trends across runs."""
    c = t.task_instance.c
    query = (select(t.task_instance).join(t.dag_run, t.dag_run.c.id == c.dag_run_id)
             .where(c.dag_id == dag_id, c.task_id == task_id)
             .order_by(t.dag_run.c.logical_date.desc(), t.dag_run.c.id.desc()).limit(limit))
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [TaskInstanceRecord.from_row(r) for r in reversed(rows)]


def get_task_instance_by_id(db: Database, ti_id: int) -> TaskInstanceRecord:
    with db.read() as conn:
        row = conn.execute(select(t.task_instance).where(t.task_instance.c.id == ti_id)).one_or_none()
    if row is None:
        raise NotFound(f"task instance {ti_id} does not exist")
    return TaskInstanceRecord.from_row(row)


# -- assets -----------------------------------------------------------------------------------------------------
def list_assets(db: Database) -> list[AssetRecord]:
    """Every asset a DAG file names, with the DAGs scheduled on it, the tasks that update it and its last event."""
    r, e, link = t.asset_reference.c, t.asset_event.c, t.asset_alias_asset.c
    with db.read() as conn:
        assets = conn.execute(select(t.asset).order_by(t.asset.c.uri)).all()
        refs = conn.execute(select(r.uri, r.dag_id, r.task_id, r.kind).order_by(r.dag_id, r.task_id)).all()
        stats = conn.execute(select(e.uri, func.max(e.timestamp), func.count()).group_by(e.uri)).all()
        aliases: dict[str, set[str]] = {}  # asset URI -> the aliases resolved to it
        for alias_name, uri in conn.execute(select(link.alias_name, link.uri)):
            aliases.setdefault(uri, set()).add(alias_name)
    last: dict[str, Any] = {row[0]: row[1] for row in stats}
    counts: dict[str, int] = {row[0]: row[2] for row in stats}

    def refers(x: Any, uri: str, kind: str) -> bool:  # directly, or through an alias resolved to the asset
        return (x.uri == uri and x.kind == kind) or (x.kind == f"alias_{kind}" and x.uri in aliases.get(uri, ()))

    return [AssetRecord(
        uri=a.uri, name=a.name, group=a.group_name, extra=json.loads(a.extra or "{}"),
        consumers=tuple(sorted({x.dag_id for x in refs if refers(x, a.uri, "schedule")})),
        producers=tuple(f"{x.dag_id}.{x.task_id}" for x in refs if refers(x, a.uri, "outlet")),
        producing_dags=tuple(sorted({x.dag_id for x in refs if refers(x, a.uri, "outlet")})),
        last_event_at=last.get(a.uri), events=int(counts.get(a.uri, 0)),
    ) for a in assets]


def list_asset_events(db: Database, uri: str | None = None, limit: int = 100,
                      dag_run_id: int | None = None) -> list[AssetEventRecord]:
    """Asset events, newest first: of one asset, or those a run consumed (``dag_run_id``)."""
    e = t.asset_event.c
    query = select(t.asset_event).order_by(e.id.desc()).limit(limit)
    if uri is not None:
        query = query.where(e.uri == uri)
    if dag_run_id is not None:
        link = t.dag_run_asset_event.c
        query = query.where(e.id.in_(select(link.event_id).where(link.dag_run_id == dag_run_id)))
    with db.read() as conn:
        return [AssetEventRecord.from_row(row) for row in conn.execute(query)]
