"""Writes of connections and variables: what users keep in the metastore for their tasks, with passwords,
extras and values encrypted by the Fernet key (``SecretBox``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, select

from sparkflow.connections import Connection, SecretBox
from sparkflow.exceptions import ConfigError, NotFound, UserError
from sparkflow.metastore import schema as t
from sparkflow.metastore.engine import Database


class _Encrypting:
    def __init__(self, db: Database, secrets: SecretBox | None) -> None:
        self.db = db
        self._secrets = secrets

    @property
    def secrets(self) -> SecretBox:
        if self._secrets is None:
            raise ConfigError("no fernet key is configured; run `sparkflow db init` to create one")
        return self._secrets


class ConnectionStore(_Encrypting):
    def _values(self, conn: Connection) -> dict[str, Any]:
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
                conn.execute(insert(t.connection).values(**self._values(item)))

    def delete_connection(self, conn_id: str) -> None:
        with self.db.write() as conn:
            result = conn.execute(delete(t.connection).where(t.connection.c.conn_id == conn_id))
            if result.rowcount == 0:
                raise NotFound(f"connection '{conn_id}' does not exist; see `sparkflow connections list`")


class VariableStore(_Encrypting):
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
