"""Writes of pools: how many task slots each named pool gives (Airflow's `pools set` / `pools delete`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, update

from sparkflow.definitions.baseoperator import DEFAULT_POOL
from sparkflow.exceptions import NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore.engine import Database


class PoolStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def set_pool(self, name: str, slots: int, description: str | None = None) -> None:
        """Create or resize a pool (Airflow: `pools set`)."""
        t.check_id("pool name", name)
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
