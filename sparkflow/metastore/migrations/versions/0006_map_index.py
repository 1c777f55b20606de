"""dynamic task mapping: map_index on task instances, tries, XComs and audit events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _map_index() -> sa.Column[int]:
    return sa.Column("map_index", sa.Integer(), server_default="-1", nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("task_instance", schema=None) as batch_op:
        batch_op.add_column(_map_index())
        batch_op.drop_constraint("uq_task_instance_dag_id_run_id_task_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_task_instance_dag_id_run_id_task_id_map_index", ["dag_id", "run_id", "task_id", "map_index"])
    with op.batch_alter_table("xcom", schema=None) as batch_op:
        batch_op.add_column(_map_index())
        batch_op.drop_constraint("uq_xcom_dag_id_run_id_task_id_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_xcom_dag_id_run_id_task_id_map_index_key", ["dag_id", "run_id", "task_id", "map_index", "key"])
    with op.batch_alter_table("task_instance_try", schema=None) as batch_op:
        batch_op.add_column(_map_index())
    with op.batch_alter_table("state_event", schema=None) as batch_op:
        batch_op.add_column(_map_index())


def downgrade() -> None:
    with op.batch_alter_table("state_event", schema=None) as batch_op:
        batch_op.drop_column("map_index")
    with op.batch_alter_table("task_instance_try", schema=None) as batch_op:
        batch_op.drop_column("map_index")
    with op.batch_alter_table("xcom", schema=None) as batch_op:
        batch_op.drop_constraint("uq_xcom_dag_id_run_id_task_id_map_index_key", type_="unique")
        batch_op.create_unique_constraint("uq_xcom_dag_id_run_id_task_id_key", ["dag_id", "run_id", "task_id", "key"])
        batch_op.drop_column("map_index")
    with op.batch_alter_table("task_instance", schema=None) as batch_op:
        batch_op.drop_constraint("uq_task_instance_dag_id_run_id_task_id_map_index", type_="unique")
        batch_op.create_unique_constraint("uq_task_instance_dag_id_run_id_task_id", ["dag_id", "run_id", "task_id"])
        batch_op.drop_column("map_index")
