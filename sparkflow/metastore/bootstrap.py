"""Open the metastore described by the settings; `db init` creates the schema and the Fernet key."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from functools import cached_property

from sparkflow.connections import DEFAULT_CONNECTIONS, SecretBox
from sparkflow.exceptions import ConfigError
from sparkflow.files import restrict_home, write_private
from sparkflow.metastore import migrate, queries
from sparkflow.metastore.asset_store import AssetStore
from sparkflow.metastore.dag_store import DagStore
from sparkflow.metastore.engine import Database
from sparkflow.metastore.pool_store import PoolStore
from sparkflow.metastore.secret_store import ConnectionStore, VariableStore
from sparkflow.metastore.store import Store
from sparkflow.metastore.user_store import UserStore
from sparkflow.metastore.xcom_store import XComStore
from sparkflow.settings import Settings


@dataclass(frozen=True)
class Metastore:
    """One metastore: ``db`` to read (through metastore.queries), and its writers: ``store`` for runs and task
    instances (every state change), the others one kind of row each."""

    db: Database
    store: Store
    secrets: SecretBox | None

    @cached_property
    def dags(self) -> DagStore:
        return DagStore(self.db)

    @cached_property
    def assets(self) -> AssetStore:
        return AssetStore(self.db)

    @cached_property
    def pools(self) -> PoolStore:
        return PoolStore(self.db)

    @cached_property
    def xcoms(self) -> XComStore:
        return XComStore(self.db)

    @cached_property
    def connections(self) -> ConnectionStore:
        return ConnectionStore(self.db, self.secrets)

    @cached_property
    def variables(self) -> VariableStore:
        return VariableStore(self.db, self.secrets)

    @cached_property
    def users(self) -> UserStore:
        return UserStore(self.db)


def load_secret_box(settings: Settings) -> SecretBox | None:
    if settings.fernet_key:
        return SecretBox(settings.fernet_key)
    path = settings.fernet_key_file
    if path.is_file():
        return SecretBox(path.read_text().strip())
    return None


def open_metastore(settings: Settings, check_schema: bool = True) -> Metastore:
    db = Database(settings.resolved_db_url, settings.sqlite_busy_timeout, create=False)
    if check_schema:
        current = migrate.current_revision(db)
        if current is None:
            raise ConfigError(
                f"the metastore at {settings.display_db_url} is not initialised; run `sparkflow db init`"
            )
        if current != migrate.head_revision(db):
            raise ConfigError(
                f"the metastore schema is at revision {current}, this sparkflow needs "
                f"{migrate.head_revision(db)}; run `sparkflow db migrate`"
            )
    secrets = load_secret_box(settings)
    return Metastore(db, Store(db), secrets)


INIT_LOCK_NAME = ".db-init.lock"


def init_metastore(settings: Settings) -> Metastore:
    """Create the home, the Fernet key (once) and the schema; safe to run again, and at the same time: processes
    sharing the home take turns (a lock file there), and migrations of one database take turns anyway (see
    migrate.upgrade), so a second `db init` finds the work done instead of failing half-way."""
    restrict_home(settings.resolved_home)
    fd = os.open(settings.resolved_home / INIT_LOCK_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not settings.fernet_key and not settings.fernet_key_file.exists():
            write_private(settings.fernet_key_file, SecretBox.generate_key() + "\n")
        db = Database(settings.resolved_db_url, settings.sqlite_busy_timeout)
        try:
            migrate.upgrade(db)
        finally:
            db.dispose()
        metastore = open_metastore(settings)
        if settings.load_default_connections:
            known = {c.conn_id for c in queries.list_connections(metastore.db, None)}
            missing = [c for c in DEFAULT_CONNECTIONS if c.conn_id not in known]
            if missing:
                metastore.connections.add_connections(missing)
    finally:
        os.close(fd)  # releases the lock
    return metastore
