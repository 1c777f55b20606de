"""Writes of XComs: the JSON values tasks push (and TaskFlow return values), one per task instance and key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection as SAConnection

from sparkflow.exceptions import UserError
from sparkflow.metastore import statements as S
from sparkflow.metastore.engine import Database
from sparkflow.metastore.records import TaskInstanceRecord


class XComStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set_xcom(self, ti: TaskInstanceRecord, key: str, value: Any, now: datetime | None = None) -> None:
        """Push ``value`` under ``key`` for ``ti``, replacing what it pushed there before. A try's first
        transaction (Store.start_try) clears the XComs of the try before."""
        text = xcom_text(ti.task_id, key, value)
        with self.db.write() as conn:
            write_xcom(conn, ti, key, text, now or datetime.now(UTC))


def xcom_text(task_id: str, key: str, value: Any) -> str:
    """An XCom value as stored (JSON), or a UserError naming the task, the key and the type."""
    try:
        return json.dumps(value, default=_sequence_as_list)
    except (TypeError, ValueError) as exc:
        raise UserError(
            f"task '{task_id}': XCom '{key}' value of type {type(value).__name__} is not JSON-serialisable "
            f"({exc}); return or push JSON types (str, int, float, bool, None, list, dict)"
        ) from None


def write_xcom(conn: SAConnection, ti: TaskInstanceRecord, key: str, text: str, now: datetime) -> None:
    """XComStore.set_xcom in the caller's transaction (Store.set_task_state: a return value with its outcome)."""
    row = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index, "key": key}
    # prepared statements: every mapped instance pushes its output
    S.delete_where("xcom", tuple(row)).run(conn, S.params(row))
    S.insert_rows(conn, "xcom", [dict(row, dag_run_id=ti.dag_run_id, value=text, created_at=now)])


def _sequence_as_list(value: Any) -> Any:
    """A lazy sequence (a mapped task's outputs, ``XComArg.map``) is stored as the list it reads as."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
