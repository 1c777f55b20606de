"""Schema migrations with alembic, driven from code (no alembic.ini to find): one linear history.

Alembic is imported only by the functions that migrate. The schema check every process does when it opens the
metastore (the scheduler, every task process, every CLI command) needs two strings only: the revision recorded
in ``alembic_version`` and the head of ``migrations/versions``. Importing alembic for them would be about half of
a task process's imports, so both are read here
directly: the recorded revision with one SELECT, the head by reading the ``revision``/``down_revision``
assignments of the migration files (no module is executed). A unit test checks that this head is alembic's.
Reading the files rather than keeping a head constant in code means a new migration needs no second edit.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text

from sparkflow.metastore.engine import Database

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"


def _config(db: Database | None = None) -> Config:
    from alembic.config import Config  # migrating only: see the module docstring

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def current_revision(db: Database) -> str | None:
    """The revision recorded in the metastore (alembic's version table), None when it was never initialised."""
    with db.engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:  # several heads: not sparkflow's linear history; let alembic say what it is
        return ",".join(sorted(rows))
    return rows[0] if rows else None


def _assigned(path: Path) -> dict[str, object]:
    """Module-level ``revision``/``down_revision`` constants of one migration file, without running it."""
    found: dict[str, object] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    found[target.id] = value  # not a literal: the caller falls back to alembic
    return found


@functools.cache
def _head_from_files(versions: Path) -> str | None:
    """The one revision no other migration revises; None when the files do not say plainly (alembic decides)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in sorted(versions.glob("*.py")):
        found = _assigned(path)
        revision, down = found.get("revision"), found.get("down_revision")
        if not isinstance(revision, str) or not (down is None or isinstance(down, str)):
            return None  # a merge point (tuple), a computed value or a file that is not a migration
        revisions.add(revision)
        if down is not None:
            revised.add(down)
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def head_revision(db: Database | None = None) -> str | None:
    """The newest revision of migrations/versions (what this sparkflow needs)."""
    head = _head_from_files(MIGRATIONS_DIR / "versions")
    return head if head is not None else alembic_head_revision()


def alembic_head_revision() -> str | None:
    """The head as alembic computes it (slow to import; the unit test compares it with head_revision)."""
    from alembic.script import ScriptDirectory  # migrating only: see the module docstring

    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; a no-op when it is already there (so `db init` is idempotent)."""
    from alembic import command  # migrating only: see the module docstring

    config = _config(db)
    with db.migration() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
