"""The compare-and-set of a task instance, the one path every task state change takes (see store.Store).

An ``UPDATE task_instance ... WHERE state = :expected [AND try_number = :try] RETURNING`` the row, with its
try-history row and its audit event in the same transaction; consecutive changes of one instance that need no
read of the row (none -> scheduled -> queued) are made by one UPDATE, and so are alike changes of a mapped task's
instances. Callers hold the transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection as SAConnection

from sparkflow.exceptions import NotFound
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.records import TaskInstanceRecord, TIKey
from sparkflow.state import TaskState

EXTERNAL_ID_COLUMNS = ("spark_app_id", "spark_driver_id", "spark_ui_url")
# Columns of task_instance copied to the current try's history row whenever they change.
_TRY_COLUMNS = ("hostname", "pid", "log_path", "error", *EXTERNAL_ID_COLUMNS)
_TI_COLUMNS = tuple(c.name for c in t.task_instance.c)


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


def move_alike_instances(
    conn: SAConnection, changes: Sequence[TaskStateChange], chains: list[list[int]],
    done: list[TaskInstanceRecord | None], events: list[tuple[int, dict[str, Any]]],
) -> list[list[int]]:
    """SQLite: the instances of one mapped task that make the same changes (none -> scheduled -> queued for a
    whole expansion) move with one compare-and-set UPDATE per range of map indexes instead of one per instance,
    each still audited. Returns the chains left for one-by-one compare-and-set."""
    alike: dict[tuple[Any, ...], list[list[int]]] = {}
    rest = []
    for indexes in chains:
        chain = [changes[i] for i in indexes]
        first = chain[0]
        signature = None
        if (first.key.map_index >= 0 and first.expected_try is not None and not any(map(_needs_row, chain))
                and len(mergeable(chain)) == len(chain)):
            try:
                signature = (first.key.dag_id, first.key.run_id, first.key.task_id, tuple(
                    (c.expected, c.new, c.actor, c.detail, c.now, c.expected_try,
                     tuple(sorted(c.fields.items()))) for c in chain))
                hash(signature)
            except TypeError:  # a field value that cannot be compared as a key: this one goes alone
                signature = None
        if signature is None:
            rest.append(indexes)
        else:
            alike.setdefault(signature, []).append(indexes)
    for members in alike.values():
        if len(members) < 2:
            rest += members
            continue
        chain = [changes[i] for i in members[0]]
        first, values = chain[0], _merged_values(chain)
        where = {"dag_id": first.key.dag_id, "run_id": first.key.run_id, "task_id": first.key.task_id,
                 "state": first.expected, "try_number": first.expected_try}
        by_index = {changes[m[0]].key.map_index: m for m in members}
        statement = S.update_where_between("task_instance", tuple(where), "map_index", tuple(values), _TI_COLUMNS)
        for lo, hi in _ranges(sorted(by_index)):
            for row in statement.rows(conn, {**S.params(where, values), "w_lo": lo, "w_hi": hi}):
                written = TaskInstanceRecord.from_row(row)
                try_number = first.expected_try
                for i in by_index[written.map_index]:
                    change = changes[i]
                    try_number = change.fields.get("try_number", try_number)
                    one: list[dict[str, Any]] = []
                    _task_event(conn, one, change.now or utcnow(), change.key, try_number, change.expected,
                                     change.new, change.actor, change.detail)
                    events.append((i, one[0]))
                    done[i] = written
    return rest


def _merged_values(chain: Sequence[TaskStateChange]) -> dict[str, Any]:
    """What a chain of changes of one row writes in one UPDATE: every change's fields, the last state and time."""
    values: dict[str, Any] = {}
    for change in chain:
        values.update(change.fields)
    values.update(state=chain[-1].new, updated_at=chain[-1].now or utcnow())
    return values


def move_alike_rows(
    conn: SAConnection, changes: Sequence[TaskStateChange], chains: list[list[int]],
    done: list[TaskInstanceRecord | None], events: list[tuple[int, dict[str, Any]]],
) -> list[list[int]]:
    """PostgreSQL: task instances of one run that make the same changes (a fan-out's tasks none -> scheduled, the
    ones queued in one iteration, a mapped task's instances) move with one locking compare-and-set UPDATE per
    such group (statements.update_locked_any), each still audited and each row still skipped when another
    writer holds it, as _lock_and_set does one by one. Returns the chains left for one-by-one compare-and-set."""
    rest: list[list[int]] = []
    candidates: list[tuple[list[int], tuple[Any, ...]]] = []
    for indexes in chains:
        chain = [changes[i] for i in indexes]
        if any(map(_needs_row, chain)) or len(mergeable(chain)) != len(chain):
            rest.append(indexes)
            continue
        try:
            signature = tuple((c.expected, c.new, c.actor, c.detail, c.now, c.expected_try,
                               tuple(sorted(c.fields.items()))) for c in chain)
            hash(signature)
        except TypeError:  # a field value that cannot be compared as a key: this one goes alone
            rest.append(indexes)
            continue
        candidates.append((indexes, signature))
    # Alike across tasks (one map index, usually -1), then what is left alike across one task's map indexes.
    for fixed, any_of in _ALIKE_BY:
        groups: dict[tuple[Any, ...], list[list[int]]] = {}
        for indexes, signature in candidates:
            key = changes[indexes[0]].key
            groups.setdefault((*(getattr(key, f) for f in fixed), signature), []).append(indexes)
        candidates = []
        for group_key, members in groups.items():
            if len(members) < 2:
                candidates += [(m, group_key[-1]) for m in members]
                continue
            _move_group(conn, changes, members, fixed, any_of, done, events)
    return rest + [indexes for indexes, _ in candidates]


_ALIKE_BY = ((("dag_id", "run_id", "map_index"), "task_id"), (("dag_id", "run_id", "task_id"), "map_index"))


def _move_group(conn: SAConnection, changes: Sequence[TaskStateChange], members: list[list[int]],
                fixed: tuple[str, ...], any_of: str, done: list[TaskInstanceRecord | None],
                events: list[tuple[int, dict[str, Any]]]) -> None:
    chain = [changes[i] for i in members[0]]
    first, values = chain[0], _merged_values(chain)
    where: dict[str, Any] = {"state": first.expected}
    if first.expected_try is not None:
        where["try_number"] = first.expected_try
    by_member = {getattr(changes[m[0]].key, any_of): m for m in members}
    statement = S.update_locked_any("task_instance", fixed, any_of, tuple(where), tuple(values), _TI_COLUMNS)
    at = {f: getattr(first.key, f) for f in fixed}
    for row in statement.rows(conn, {**S.params({**at, **where}, values), f"w_{any_of}": list(by_member)}):
        written = TaskInstanceRecord.from_row(row)
        indexes = by_member.pop(getattr(written, any_of))
        try_number = first.expected_try if first.expected_try is not None else written.try_number
        group_events: list[dict[str, Any]] = []
        _audit_group(conn, group_events, [changes[i] for i in indexes], try_number, values["updated_at"])
        events += list(zip(indexes, group_events, strict=True))
        for i in indexes:
            done[i] = written
    for indexes in by_member.values():  # not moved: someone else holds or moved it (or it does not exist)
        _check_exists(conn, changes[indexes[0]].key)


def mergeable(chain: list[TaskStateChange]) -> list[TaskStateChange]:
    """The longest start of ``chain`` that one UPDATE can make (none -> scheduled -> queued, say): changes
    that need no read of the row (no try history, no duration), each starting where the previous ended,
    where every audit row's try number is known. Just the first change otherwise. On PostgreSQL the group's
    row is locked once, for the whole group (see Store.set_task_states)."""
    first = chain[0]
    if _needs_row(first):
        return chain[:1]
    group = [first]
    for c in chain[1:]:
        if _needs_row(c) or c.expected is not group[-1].new or c.expected_try is not None:
            break
        group.append(c)
    if first.expected_try is None and any("try_number" in c.fields for c in group):
        return chain[:1]  # the first audit rows' try number would not be known without a read
    return group


def compare_and_set(
    conn: SAConnection, dialect: str, group: Sequence[TaskStateChange], known: Any = None, lock: bool = False,
    events: list[dict[str, Any]] | None = None,
) -> TaskInstanceRecord | None:
    """The compare-and-set of a task instance, the one path every task state change takes: ``group`` is one
    change, or consecutive changes of one instance made as one UPDATE (see mergeable), compared on the first's
    expected state (and try), leaving it in the last's new state, each with its own audit row. Returns the
    row as written, or None when it was not in the expected state (or, ``lock``, another writer holds it).

    The row is read first only when the change needs what it held (entering or leaving RUNNING, an ending
    that records its duration) or must be locked (``lock`` on PostgreSQL); ``known``, the row as the caller
    read it in this transaction or a record of it the caller owns (the runner's own try), saves that read.
    ``events``: collect the audit rows here for the caller to insert with its batch (same transaction)."""
    first, last = group[0], group[-1]
    key = first.key
    values = _merged_values(group)
    now = values["updated_at"]
    row = known
    if row is None and not _needs_row(first) and lock and dialect != "sqlite":
        return _lock_and_set(conn, group, values, events)
    if row is None and _needs_row(first):
        row = S.select_where("task_instance", S.TI_KEY, for_update=lock).first(conn, S.params(key_params(key)))
        if row is None and lock and BY_KEY.first(conn, S.params(key_params(key))) is not None:
            return None  # locked by another writer (SQLite ignores FOR UPDATE)
        if row is None:
            raise NotFound(f"task instance {key} does not exist")
    continued = None
    if row is not None and last.new is TaskState.RUNNING:
        continued = _TRY_START.first(conn, S.params(
            {"ti_id": row.id, "try_number": values.get("try_number", row.try_number)}))
        if continued is not None and continued.start_date is not None:
            values.setdefault("start_date", continued.start_date)
        values.setdefault("start_date", now)
        values.setdefault("last_heartbeat_at", now)
        values.setdefault("end_date", None)
        values.setdefault("duration", None)
        values.setdefault("error", None)
        for column in (*EXTERNAL_ID_COLUMNS, "spark_progress", "spark_metrics"):
            values.setdefault(column, None)  # a new try starts without the last try's Spark state
    if row is not None and (first.expected is TaskState.RUNNING or last.new in _ENDINGS):
        values.setdefault("end_date", now)
        start = values.get("start_date", row.start_date)
        if start is not None and values["end_date"] is not None:
            values.setdefault("duration", (values["end_date"] - start).total_seconds())
    where: dict[str, Any] = {"id": row.id} if row is not None else key_params(key)
    where["state"] = first.expected
    if first.expected_try is not None:
        where["try_number"] = first.expected_try
    written = update_returning(conn, "task_instance", where, values, _TI_COLUMNS)
    if written is None:
        if row is None:
            _check_exists(conn, key)
        return None
    this_try = {"ti_id": written.id, "try_number": written.try_number}
    if last.new is TaskState.RUNNING and continued is not None:
        update_rows(conn, "task_instance_try", this_try, dict(
            state=last.new, end_date=None, duration=None, **{c: getattr(written, c) for c in _TRY_COLUMNS}))
    elif last.new is TaskState.RUNNING:
        S.insert_rows(conn, "task_instance_try", [dict(
            this_try, dag_id=key.dag_id, run_id=key.run_id, task_id=key.task_id, map_index=key.map_index,
            state=last.new,
            start_date=values["start_date"], **{c: getattr(written, c) for c in _TRY_COLUMNS})])
    elif first.expected is TaskState.RUNNING:
        update_rows(conn, "task_instance_try", this_try, dict(
            state=last.new, end_date=values.get("end_date"), duration=values.get("duration"),
            **{c: values[c] for c in _TRY_COLUMNS if c in values}))
    try_number = first.expected_try if first.expected_try is not None else (
        row.try_number if row is not None else written.try_number)
    _audit_group(conn, events, group, try_number, now)
    return TaskInstanceRecord.from_row(written)


def _lock_and_set(conn: SAConnection, group: Sequence[TaskStateChange], values: dict[str, Any],
                  events: list[dict[str, Any]] | None) -> TaskInstanceRecord | None:
    """compare_and_set of a change that needs no read of the row, locking it (skipped when another writer holds
    it) in the same statement: one round trip instead of a SELECT ... FOR UPDATE and then the UPDATE."""
    first = group[0]
    where: dict[str, Any] = {"state": first.expected}
    if first.expected_try is not None:
        where["try_number"] = first.expected_try
    statement = S.update_locked_where("task_instance", S.TI_KEY, tuple(where), tuple(values), _TI_COLUMNS)
    written = statement.first(conn, S.params({**key_params(first.key), **where}, values))
    if written is None:
        _check_exists(conn, first.key)
        return None
    try_number = first.expected_try if first.expected_try is not None else written.try_number
    _audit_group(conn, events, group, try_number, values["updated_at"])
    return TaskInstanceRecord.from_row(written)


def _audit_group(conn: SAConnection, events: list[dict[str, Any]] | None, group: Sequence[TaskStateChange],
                 try_number: int, now: datetime) -> None:
    """Each change's audit row, with the try number it left (``try_number``: the one before the first)."""
    for change in group:
        try_number = change.fields.get("try_number", try_number)
        _task_event(conn, events, change.now or now, change.key, try_number, change.expected, change.new,
                    change.actor, change.detail)


def _task_event(
    conn: SAConnection, events: list[dict[str, Any]] | None, at: datetime, key: TIKey, try_number: int,
    old: TaskState, new: TaskState, actor: str, detail: str | None,
) -> None:
    if events is None:
        audit_event(conn, at, key.dag_id, key.run_id, key.task_id, try_number, "state_change", old, new, actor,
                    detail, map_index=key.map_index)
    else:
        events.append(dict(at=at, dag_id=key.dag_id, run_id=key.run_id, task_id=key.task_id,
                           map_index=key.map_index, try_number=try_number, event="state_change",
                           old_state=old, new_state=new, actor=actor, detail=detail))


def audit_event(
    conn: SAConnection, at: datetime, dag_id: str, run_id: str | None, task_id: str | None,
    try_number: int | None, event: str, old: str | None, new: str | None, actor: str, detail: str | None,
    map_index: int = -1,
) -> None:
    """One audit row (``state_event``) in the writer's transaction."""
    S.insert_rows(conn, "state_event", [dict(
        at=at, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number,
        event=event,
        old_state=old, new_state=new, actor=actor, detail=detail,
    )])


_ENDINGS = (TaskState.FAILED, TaskState.SUCCESS)  # the outcomes whose end date and duration are recorded


def _ranges(indexes: Sequence[int]) -> Iterator[tuple[int, int]]:
    """Sorted map indexes as (first, last) runs of consecutive ones."""
    start = previous = indexes[0]
    for index in indexes[1:]:
        if index != previous + 1:
            yield start, previous
            start = index
        previous = index
    yield start, previous


def _needs_row(change: TaskStateChange) -> bool:
    """A change that touches the try history or the duration needs the row as it was: it is read first."""
    return change.expected is TaskState.RUNNING or change.new is TaskState.RUNNING or change.new in _ENDINGS


def key_params(key: TIKey) -> dict[str, Any]:
    return {"dag_id": key.dag_id, "run_id": key.run_id, "task_id": key.task_id, "map_index": key.map_index}


def update_rows(conn: SAConnection, table: str, where: Mapping[str, Any], values: Mapping[str, Any]) -> int:
    """One prepared UPDATE (statements.update_where) of ``table``; returns how many rows it changed."""
    return S.update_where(table, tuple(where), tuple(values)).run(conn, S.params(where, values))


def update_returning(conn: SAConnection, table: str, where: Mapping[str, Any], values: Mapping[str, Any],
                     returning: tuple[str, ...]) -> S.Row | None:
    """The same, returning these columns of the row it changed (None: no row matched)."""
    return S.update_where(table, tuple(where), tuple(values), returning).first(conn, S.params(where, values))


def _check_exists(conn: SAConnection, key: TIKey) -> None:
    if S.select_where("task_instance", S.TI_KEY, ("id",)).first(conn, S.params(key_params(key))) is None:
        raise NotFound(f"task instance {key} does not exist")


BY_KEY = S.select_where("task_instance", S.TI_KEY)
_TRY_START = S.select_where("task_instance_try", ("ti_id", "try_number"), ("start_date",))
