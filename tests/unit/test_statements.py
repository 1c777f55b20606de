"""The hot path's prepared statements (sparkflow.metastore.statements) read and write exactly what SQLAlchemy's
own execution does, on every backend: the rest of the metastore reads what they write and the other way round."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from sparkflow.definitions.loader import collect_dags
from sparkflow.metastore import schema as t
from sparkflow.metastore import statements as S
from sparkflow.metastore.records import TaskInstanceRecord, TIKey
from sparkflow.scheduler.runs import trigger_dag
from sparkflow.state import TaskState


@pytest.fixture()
def key(metastore, write_dag) -> TIKey:  # type: ignore[no-untyped-def]
    path = write_dag("prep", """
        from datetime import datetime
        from sparkflow import DAG, EmptyOperator
        with DAG("prep", start_date=datetime(2024, 1, 1)) as dag:
            EmptyOperator(task_id="a")
    """)
    dag = collect_dags(path.parent, only_file=path).dags["prep"]
    metastore.dags.sync_dags([dag], [], [str(path)])
    run = trigger_dag(metastore, dag, datetime(2024, 3, 1, tzinfo=UTC))
    return TIKey("prep", run.run_id, "a")


def test_a_prepared_update_writes_what_sqlalchemy_reads_back(metastore, key) -> None:  # type: ignore[no-untyped-def]
    when = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)  # no microseconds: SQLite's text form must still match
    where = {"dag_id": key.dag_id, "run_id": key.run_id, "task_id": key.task_id, "state": TaskState.NONE}
    values = {"state": TaskState.QUEUED, "queued_at": when, "try_number": 1}
    with metastore.db.write() as conn:
        row = S.update_where("task_instance", tuple(where), tuple(values), ("id", "try_number")).first(
            conn, S.params(where, values))
        assert row is not None and row.try_number == 1
        assert S.update_where("task_instance", tuple(where), tuple(values)).run(conn, S.params(where, values)) == 0
    c = t.task_instance.c
    with metastore.db.read() as conn:
        stored = conn.execute(select(t.task_instance).where(c.id == row.id)).one()
        # Comparisons in SQL against a SQLAlchemy-bound datetime agree with the prepared one's stored value.
        later = conn.execute(select(c.id).where(c.queued_at < when + timedelta(microseconds=1))).scalars().all()
    assert stored.queued_at == when and stored.state == "queued" and later == [row.id]


def test_a_prepared_select_reads_what_sqlalchemy_wrote(metastore, key) -> None:  # type: ignore[no-untyped-def]
    when = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    c = t.task_instance.c
    with metastore.db.write() as conn:
        conn.execute(update(t.task_instance).where(c.task_id == key.task_id)
                     .values(next_try_at=when, duration=1.5, spark_progress='{"jobs": 1}'))
    with metastore.db.read() as conn:
        rows = S.select_where("task_instance", S.TI_KEY).rows(conn, S.params(key._asdict()))
        missing = S.select_where("task_instance", S.TI_KEY).first(conn, S.params({**key._asdict(), "task_id": "x"}))
    assert missing is None and len(rows) == 1
    record = TaskInstanceRecord.from_row(rows[0])  # records build from prepared rows as from SQLAlchemy's
    assert record.next_try_at == when and record.next_try_at.tzinfo is UTC
    assert record.duration == 1.5 and record.spark_progress == {"jobs": 1} and record.key == key


def test_a_prepared_statement_refuses_missing_and_list_parameters(metastore, key) -> None:  # type: ignore[no-untyped-def]
    with metastore.db.read() as conn:
        with pytest.raises(KeyError, match="w_run_id"):
            S.select_where("task_instance", ("dag_id", "run_id")).rows(conn, S.params({"dag_id": "x"}))
        listed = S.Prepared(select(t.dag_run.c.id).where(t.dag_run.c.state.in_(["queued"])), [t.dag_run.c.id])
        with pytest.raises(ValueError, match="in_constants"):
            listed.rows(conn)
        constant = S.Prepared(select(t.dag_run.c.id).where(S.in_constants(t.dag_run.c.state, ["queued", "running"])),
                              [t.dag_run.c.id])
        assert len(constant.rows(conn)) == 1  # the run the fixture triggered


def test_an_upsert_inserts_once_then_updates_the_same_row(metastore, key) -> None:  # type: ignore[no-untyped-def]
    """The rendered fields of a try: the first write inserts, a later one (the next try, a heartbeat) replaces."""
    where = {"dag_id": key.dag_id, "run_id": key.run_id, "task_id": key.task_id, "map_index": key.map_index}
    first = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    for try_number, fields, at in ((1, '{"a": "1"}', first), (2, '{"a": "2"}', first + timedelta(seconds=1))):
        values = {"try_number": try_number, "fields": fields, "error": None, "updated_at": at}
        with metastore.db.write() as conn:
            S.upsert("rendered_task_fields", tuple(where), tuple(values)).run(conn, S.params({}, {**where, **values}))
    with metastore.db.read() as conn:
        rows = conn.execute(select(t.rendered_task_fields)).all()
    assert [(r.try_number, r.fields, r.updated_at) for r in rows] == [(2, '{"a": "2"}', first + timedelta(seconds=1))]
