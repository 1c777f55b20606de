"""asset aliases: asset_alias_asset (what each AssetAlias has resolved to); dag_run.run_type of Airflow's length
(50: asset_materialization)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 02:50:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _run_type_length(old: int, new: int) -> None:
    # SQLite does not enforce VARCHAR lengths, and rebuilding dag_run there would cascade to its task instances
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("dag_run", "run_type", existing_type=sa.String(length=old), type_=sa.String(length=new),
                        existing_nullable=False)


def upgrade() -> None:
    op.create_table(
        "asset_alias_asset",
        sa.Column("alias_name", sa.String(length=1500), nullable=False),
        sa.Column("uri", sa.String(length=1500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("alias_name", "uri", name=op.f("pk_asset_alias_asset")),
    )
    op.create_index("ix_asset_alias_asset_uri", "asset_alias_asset", ["uri"])
    _run_type_length(20, 50)


def downgrade() -> None:
    _run_type_length(50, 20)
    op.drop_index("ix_asset_alias_asset_uri", table_name="asset_alias_asset")
    op.drop_table("asset_alias_asset")
