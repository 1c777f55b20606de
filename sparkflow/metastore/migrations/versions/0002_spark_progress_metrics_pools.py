"""spark progress and metrics, pools

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:04:45.262794
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "pool",
        sa.Column("pool", sa.String(length=250), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pool", name=op.f("pk_pool")),
    )
    pool = sa.table(
        "pool", sa.column("pool", sa.String), sa.column("slots", sa.Integer), sa.column("description", sa.Text)
    )
    op.bulk_insert(pool, [{"pool": "default_pool", "slots": 128, "description": "Default pool"}])
    with op.batch_alter_table("task_instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spark_progress", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("spark_metrics", sa.Text(), nullable=True))

    with op.batch_alter_table("task_instance_try", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spark_metrics", sa.Text(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("task_instance_try", schema=None) as batch_op:
        batch_op.drop_column("spark_metrics")

    with op.batch_alter_table("task_instance", schema=None) as batch_op:
        batch_op.drop_column("spark_metrics")
        batch_op.drop_column("spark_progress")

    op.drop_table("pool")
