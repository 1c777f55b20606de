"""Schema migrations with alembic, driven from code (no alembic.ini to find): one linear history."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sparkflow.metastore.engine import Database

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _config(db: Database) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(db: Database) -> str | None:
    return ScriptDirectory.from_config(_config(db)).get_current_head()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; a no-op when it is already there (so `db init` is idempotent)."""
    config = _config(db)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def make_revision(db: Database, message: str) -> None:
    """Developer helper: autogenerate a new migration from schema.py against an up-to-date database."""
    config = _config(db)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.revision(config, message=message, autogenerate=True)
