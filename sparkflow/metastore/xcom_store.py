"""Writes of XComs: the JSON values tasks push (and TaskFlow return values), one per task instance and key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

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
        try:
            text = json.dumps(value, default=_sequence_as_list)
        except (TypeError, ValueError) as exc:
            raise UserError(
                f"task '{ti.task_id}': XCom '{key}' value of type {type(value).__name__} is not JSON-serialisable "
                f"({exc}); return or push JSON types (str, int, float, bool, None, list, dict)"
            ) from None
        row = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index,
               "key": key}
        with self.db.write() as conn:  # prepared statements: every mapped instance pushes its output
            S.delete_where("xcom", tuple(row)).run(conn, S.params(row))
            S.insert_rows(conn, "xcom", [dict(row, dag_run_id=ti.dag_run_id, value=text,
                                              created_at=now or datetime.now(UTC))])


def _sequence_as_list(value: Any) -> Any:
    """A lazy sequence (a mapped task's outputs, ``XComArg.map``) is stored as the list it reads as."""
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
