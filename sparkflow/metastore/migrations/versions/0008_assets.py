"""assets: asset, asset_reference, asset_event, asset_queue, dag_run_asset_event

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 00:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "asset",
        sa.Column("uri", sa.String(length=1500), nullable=False),
        sa.Column("name", sa.String(length=1500), nullable=True),
        sa.Column("group_name", sa.String(length=250), nullable=True),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("uri", name=op.f("pk_asset")),
    )
    op.create_table(
        "asset_reference",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("dag_id", sa.String(length=250), nullable=False),
        sa.Column("task_id", sa.String(length=250), nullable=True),
        sa.Column("uri", sa.String(length=1500), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_reference")),
    )
    op.create_index("ix_asset_reference_uri", "asset_reference", ["uri"])
    op.create_table(
        "asset_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("uri", sa.String(length=1500), nullable=False),
        sa.Column("extra", sa.Text(), nullable=True),
        sa.Column("source_dag_id", sa.String(length=250), nullable=True),
        sa.Column("source_run_id", sa.String(length=250), nullable=True),
        sa.Column("source_task_id", sa.String(length=250), nullable=True),
        sa.Column("source_map_index", sa.Integer(), server_default="-1", nullable=False),
        sa.Column("source_try_number", sa.Integer(), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_event")),
    )
    op.create_index("ix_asset_event_uri", "asset_event", ["uri"])
    op.create_table(
        "asset_queue",
        sa.Column("target_dag_id", sa.String(length=250), nullable=False),
        sa.Column("uri", sa.String(length=1500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target_dag_id", "uri", name=op.f("pk_asset_queue")),
    )
    op.create_table(
        "dag_run_asset_event",
        sa.Column("dag_run_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["dag_run_id"], ["dag_run.id"], name=op.f("fk_dag_run_asset_event_dag_run_id_dag_run"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["event_id"], ["asset_event.id"],
                                name=op.f("fk_dag_run_asset_event_event_id_asset_event"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("dag_run_id", "event_id", name=op.f("pk_dag_run_asset_event")),
    )


def downgrade() -> None:
    op.drop_table("dag_run_asset_event")
    op.drop_table("asset_queue")
    op.drop_index("ix_asset_event_uri", table_name="asset_event")
    op.drop_table("asset_event")
    op.drop_index("ix_asset_reference_uri", table_name="asset_reference")
    op.drop_table("asset_reference")
    op.drop_table("asset")
