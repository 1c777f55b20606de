"""The metastore's hot path: statements built and compiled once, executed on the DBAPI cursor itself.

Why: a task's way through the scheduler loop and its runner takes about twenty statements, and building, caching and
executing each through SQLAlchemy Core costs far more Python than running a compiled statement on the DBAPI cursor
(figures in bench/README.md). So the statements of that path are described here by shape (which columns they compare,
set and return), built with SQLAlchemy Core, compiled once per dialect, and run by :class:`Prepared` with the same bind
and result processing SQLAlchemy would apply (datetimes still pass through UTCDateTime). Everything else in the
metastore keeps using SQLAlchemy's execution: this is only for the hot path.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Column, Connection, bindparam, delete, insert, literal, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from sparkflow.metastore import schema as t

TI_KEY = ("dag_id", "run_id", "task_id", "map_index")


class Row(tuple):  # type: ignore[type-arg]
    """A result row: a tuple whose columns are also attributes (``row.state``) and a ``_mapping``, as SQLAlchemy's
    rows have, so records are built from either the same way."""

    _fields: tuple[str, ...] = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[self._fields.index(name)]
        except ValueError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...] | None  # positional paramstyle: the parameters in order; None: named
    defaults: Mapping[str, Any]  # values fixed when the statement was built (in_constants)
    required: frozenset[str]
    binds: Mapping[str, Callable[[Any], Any]]  # parameter -> its type's bind processor
    row: type[Row]
    # result column -> its type's result processor: set at the first fetch, from the driver's column type codes
    # (PostgreSQL's numeric processors depend on them), as SQLAlchemy does.
    results: list[tuple[tuple[int, Callable[[Any], Any]], ...]]


class Prepared:
    """One statement, compiled once per dialect, run on the connection's DBAPI cursor inside the connection's
    transaction. ``columns``: what it returns (a SELECT's columns, or an UPDATE's RETURNING), in order."""

    def __init__(self, statement: ClauseElement, columns: Sequence[Column[Any]] = ()) -> None:
        self.statement = statement
        self.columns = tuple(columns)
        self._by_dialect: dict[tuple[str, str], _Compiled] = {}

    def _compiled(self, dialect: Dialect) -> _Compiled:
        found = self._by_dialect.get((dialect.name, dialect.driver))
        if found is not None:
            return found
        compiled = cast(SQLCompiler, self.statement.compile(dialect=dialect))  # a DML/SELECT's compiler
        if any(b.expanding for b in compiled.binds.values()):
            raise ValueError("a prepared statement cannot take a list parameter; use in_constants()")
        # dialect_impl: the type as this dialect implements it (SQLite's DATETIME formats and parses text).
        binds = {name: b.type.dialect_impl(dialect).bind_processor(dialect) for name, b in compiled.binds.items()}
        defaults = {name: b.effective_value for name, b in compiled.binds.items() if not b.required}
        row = type("Row", (Row,), {"__slots__": (), "_fields": tuple(c.name for c in self.columns)})
        found = _Compiled(
            sql=compiled.string,
            names=tuple(compiled.positiontup or ()) if compiled.positional else None,
            defaults=defaults,
            required=frozenset(name for name, b in compiled.binds.items() if b.required),
            binds={name: p for name, p in binds.items() if p is not None},
            row=row,
            results=[],
        )
        self._by_dialect[(dialect.name, dialect.driver)] = found
        return found

    def _parameters(self, compiled: _Compiled, params: Mapping[str, Any]) -> Any:
        missing = compiled.required - params.keys()
        if missing:
            raise KeyError(f"statement parameters missing: {', '.join(sorted(missing))}")
        values = {**compiled.defaults, **params}
        for name, process in compiled.binds.items():
            if name in values:
                values[name] = process(values[name])
        return tuple(values[n] for n in compiled.names) if compiled.names is not None else values

    def _cursor(self, conn: Connection, params: Mapping[str, Any]) -> tuple[_Compiled, Any]:
        compiled = self._compiled(conn.dialect)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(compiled.sql, self._parameters(compiled, params))
        return compiled, cursor

    def rows(self, conn: Connection, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run it and return every row (a SELECT, or DML with RETURNING)."""
        compiled, cursor = self._cursor(conn, params or {})
        try:
            fetched = cursor.fetchall()
            if not compiled.results:
                processors = [c.type.dialect_impl(conn.dialect).result_processor(conn.dialect, d[1])
                              for c, d in zip(self.columns, cursor.description, strict=True)]
                compiled.results.append(tuple((i, p) for i, p in enumerate(processors) if p is not None))
        finally:
            cursor.close()
        processed = compiled.results[0]
        if not processed:
            return [compiled.row(r) for r in fetched]
        rows = []
        for row in fetched:
            values = list(row)
            for i, process in processed:
                if values[i] is not None:  # every processor keeps None as it is
                    values[i] = process(values[i])
            rows.append(compiled.row(values))
        return rows

    def first(self, conn: Connection, params: Mapping[str, Any] | None = None) -> Row | None:
        found = self.rows(conn, params)
        return found[0] if found else None

    def run(self, conn: Connection, params: Mapping[str, Any] | None = None) -> int:
        """Run DML without RETURNING; returns how many rows it changed."""
        _, cursor = self._cursor(conn, params or {})
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def run_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> None:
        compiled = self._compiled(conn.dialect)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(compiled.sql, [self._parameters(compiled, p) for p in params])
        finally:
            cursor.close()


@contextlib.contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """PostgreSQL (psycopg's pipeline mode): the block's statements go to the server without waiting for each
    one's reply; reading a statement's rows waits for that reply, the end of the block for all of them. Only for
    blocks that run Prepared statements alone (SQLAlchemy's own execution reads a cursor's description at once)
    and that do not need a DML's rowcount (it is not known before the reply). Anything else: as it is."""
    pipeline = getattr(conn.connection.driver_connection, "pipeline", None)
    if conn.dialect.name != "postgresql" or pipeline is None:
        yield
        return
    with pipeline():
        yield


def params(where: Mapping[str, Any], values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parameters of a statement from these builders: ``w_<column>`` for comparisons, ``v_<column>`` for values."""
    out = {f"w_{k}": v for k, v in where.items()}
    if values:
        out.update({f"v_{k}": v for k, v in values.items()})
    return out


def in_constants(column: Column[Any], values: Sequence[Any]) -> Any:
    """``column IN (...)`` over values fixed when the statement is built (a plain IN list would be an expanding
    parameter, which is compiled anew at each execution)."""
    return column.in_([literal(v, column.type) for v in values])


def _where(table: str, where: tuple[str, ...]) -> list[Any]:
    tab = t.metadata.tables[table]
    return [tab.c[col] == bindparam(f"w_{col}", type_=tab.c[col].type) for col in where]


@functools.cache
def update_where(table: str, where: tuple[str, ...], values: tuple[str, ...],
                 returning: tuple[str, ...] = ()) -> Prepared:
    """UPDATE table SET <values> WHERE <each of where> = its parameter [RETURNING <returning>]."""
    tab = t.metadata.tables[table]
    stmt = (update(tab).where(*_where(table, where))
            .values({col: bindparam(f"v_{col}", type_=tab.c[col].type) for col in values}))
    returned = [tab.c[col] for col in returning]
    return Prepared(stmt.returning(*returned) if returned else stmt, returned)


@functools.cache
def update_where_between(table: str, where: tuple[str, ...], between: str, values: tuple[str, ...],
                         returning: tuple[str, ...] = ()) -> Prepared:
    """The same as update_where, also with ``<between> BETWEEN :w_lo AND :w_hi`` (a range of map indexes, say)."""
    tab = t.metadata.tables[table]
    column = tab.c[between]
    stmt = (update(tab).where(*_where(table, where), column.between(bindparam("w_lo", type_=column.type),
                                                                     bindparam("w_hi", type_=column.type)))
            .values({col: bindparam(f"v_{col}", type_=tab.c[col].type) for col in values}))
    returned = [tab.c[col] for col in returning]
    return Prepared(stmt.returning(*returned) if returned else stmt, returned)


@functools.cache
def update_locked_where(table: str, key: tuple[str, ...], where: tuple[str, ...], values: tuple[str, ...],
                        returning: tuple[str, ...] = ()) -> Prepared:
    """UPDATE the row found by ``key`` only if no other transaction holds it (PostgreSQL: FOR UPDATE SKIP LOCKED in
    a subquery), and only if it also matches ``where``: the lock and the compare-and-set in one round trip."""
    tab = t.metadata.tables[table]
    locked = select(tab.c.id).where(*_where(table, key)).with_for_update(skip_locked=True).scalar_subquery()
    stmt = (update(tab).where(tab.c.id == locked, *_where(table, where))
            .values({col: bindparam(f"v_{col}", type_=tab.c[col].type) for col in values}))
    returned = [tab.c[col] for col in returning]
    return Prepared(stmt.returning(*returned) if returned else stmt, returned)


@functools.cache
def update_locked_any(table: str, fixed: tuple[str, ...], any_of: str, where: tuple[str, ...],
                      values: tuple[str, ...], returning: tuple[str, ...] = ()) -> Prepared:
    """PostgreSQL: update_locked_where for many rows in one statement: the rows matching ``fixed`` whose ``any_of``
    column is one of the array parameter ``w_<any_of>``, each locked unless another transaction holds it (FOR
    UPDATE SKIP LOCKED), and each updated only if it also matches ``where``."""
    from sqlalchemy import ARRAY, any_, func

    tab = t.metadata.tables[table]
    column = tab.c[any_of]
    locked = (select(tab.c.id)
              .where(*_where(table, fixed), column == any_(bindparam(f"w_{any_of}", type_=ARRAY(column.type))))
              .with_for_update(skip_locked=True))
    # id = ANY(ARRAY(subquery)), not id IN (subquery): PostgreSQL's generic plan of the IN form (psycopg prepares a
    # statement after a few runs) scans the whole table; this one runs the subquery once and then the primary key.
    stmt = (update(tab).where(tab.c.id == any_(func.array(locked.scalar_subquery())), *_where(table, where))
            .values({col: bindparam(f"v_{col}", type_=tab.c[col].type) for col in values}))
    returned = [tab.c[col] for col in returning]
    return Prepared(stmt.returning(*returned) if returned else stmt, returned)


@functools.cache
def select_any(table: str, any_of: str, columns: tuple[str, ...], for_update: bool = False) -> Prepared:
    """PostgreSQL: SELECT <columns> FROM table WHERE <any_of> = ANY(the array parameter ``w_<any_of>``) [FOR UPDATE
    SKIP LOCKED]: one compiled statement for any number of values (an IN list is compiled anew for each)."""
    from sqlalchemy import ARRAY, any_

    tab = t.metadata.tables[table]
    column = tab.c[any_of]
    selected = [tab.c[col] for col in columns]
    stmt = select(*selected).where(column == any_(bindparam(f"w_{any_of}", type_=ARRAY(column.type))))
    return Prepared(stmt.with_for_update(skip_locked=True) if for_update else stmt, selected)


@functools.cache
def select_where(table: str, where: tuple[str, ...], columns: tuple[str, ...] = (),
                 for_update: bool = False, order_by: tuple[str, ...] = ()) -> Prepared:
    """SELECT <columns, or the whole row> FROM table WHERE <each of where> = its parameter [ORDER BY order_by]."""
    tab = t.metadata.tables[table]
    selected = [tab.c[col] for col in columns] if columns else list(tab.c)
    stmt = select(*selected).where(*_where(table, where)).order_by(*(tab.c[col] for col in order_by))
    return Prepared(stmt.with_for_update(skip_locked=True) if for_update else stmt, selected)


@functools.cache
def delete_where(table: str, where: tuple[str, ...]) -> Prepared:
    return Prepared(delete(t.metadata.tables[table]).where(*_where(table, where)))


@functools.cache
def insert_into(table: str, columns: tuple[str, ...]) -> Prepared:
    """INSERT of rows given as plain column-name dicts with these keys. Only for tables whose columns have no
    Python-side defaults (SQLAlchemy would fill those in; this does not)."""
    tab = t.metadata.tables[table]
    assert not any(c.default is not None for c in tab.c if c.name not in columns), table
    return Prepared(insert(tab).values({col: bindparam(f"v_{col}", type_=tab.c[col].type) for col in columns}))


def dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT, which can say ON CONFLICT (PostgreSQL's or SQLite's); imported on use, so that a
    command on SQLite never imports PostgreSQL's dialect module."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


class ByDialect:
    """A statement whose construct itself differs by dialect (INSERT ... ON CONFLICT), built on first use in each."""

    def __init__(self, build: Callable[[str], Prepared]) -> None:
        self._build = build
        self._by_dialect: dict[str, Prepared] = {}

    def run(self, conn: Connection, params: Mapping[str, Any]) -> int:
        name = conn.dialect.name
        found = self._by_dialect.get(name)
        if found is None:
            found = self._by_dialect[name] = self._build(name)
        return found.run(conn, params)


@functools.cache
def upsert(table: str, key: tuple[str, ...], values: tuple[str, ...]) -> ByDialect:
    """INSERT a row, or UPDATE <values> of the row already there with the same ``key`` (its primary key): one
    statement where an UPDATE and then, when it found nothing, an INSERT were two round trips. Parameters as
    insert_into's (``v_<column>``); SQLite and PostgreSQL (both have ON CONFLICT DO UPDATE)."""

    def build(dialect: str) -> Prepared:
        tab = t.metadata.tables[table]
        stmt = dialect_insert(dialect)(tab).values(
            {col: bindparam(f"v_{col}", type_=tab.c[col].type) for col in key + values})
        return Prepared(stmt.on_conflict_do_update(index_elements=[tab.c[col] for col in key],
                                                   set_={col: stmt.excluded[col] for col in values}))

    return ByDialect(build)


def insert_rows(conn: Connection, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert rows (all with the same keys) in one executemany; one row in a plain execute (psycopg runs each
    executemany in pipeline mode, which costs more than the one INSERT it would send)."""
    if len(rows) == 1:
        insert_into(table, tuple(rows[0])).run(conn, params({}, rows[0]))
    elif rows:
        insert_into(table, tuple(rows[0])).run_many(conn, [params({}, row) for row in rows])
