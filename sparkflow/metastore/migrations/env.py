"""Alembic environment: run with the connection sparkflow hands over (see metastore/migrate.py)."""

from __future__ import annotations

from alembic import context

from sparkflow.metastore.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copy
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
