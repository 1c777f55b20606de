"""sparkflow db init|migrate."""

from __future__ import annotations

import click

from sparkflow.cli.env import CliEnv
from sparkflow.metastore import migrate
from sparkflow.metastore.bootstrap import init_metastore
from sparkflow.metastore.engine import Database


@click.group("db")
def db() -> None:
    """Create and migrate the metastore."""


@db.command("init")
@click.pass_obj
def init(env: CliEnv) -> None:
    """Create the sparkflow home, the encryption key and the schema (safe to run again)."""
    settings = env.settings
    init_metastore(settings).db.dispose()
    click.echo(f"Metastore ready at {settings.display_db_url} (home {settings.resolved_home})")


@db.command("migrate")
@click.pass_obj
def migrate_cmd(env: CliEnv) -> None:
    """Upgrade the schema to this version of sparkflow."""
    database = Database(env.settings.resolved_db_url, env.settings.sqlite_busy_timeout)
    try:
        before = migrate.current_revision(database)
        migrate.upgrade(database)
        after = migrate.current_revision(database)
    finally:
        database.dispose()
    click.echo(f"Schema at revision {after}" + ("" if before == after else f" (was {before})"))
