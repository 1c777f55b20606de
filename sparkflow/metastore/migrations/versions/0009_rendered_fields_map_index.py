"""rendered task fields per mapped instance (map_index in the key)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _create(with_map_index: bool) -> None:
    key = ["dag_id", "run_id", "task_id"] + (["map_index"] if with_map_index else [])
    op.create_table(
        "rendered_task_fields",
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("run_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=False),
        *([sa.Column("map_index", sa.Integer(), server_default="-1", nullable=False)] if with_map_index else []),
        sa.Column("try_number", sa.Integer(), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*key, name=op.f("pk_rendered_task_fields")),
    )


def upgrade() -> None:
    # What the table holds is re-written by each try: starting it again empty loses nothing a user needs.
    op.drop_table("rendered_task_fields")
    _create(with_map_index=True)


def downgrade() -> None:
    op.drop_table("rendered_task_fields")
    _create(with_map_index=False)
