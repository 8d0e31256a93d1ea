"""rollout segments

A plan may run its rollout per segment (``per``: one rollout per declared value of a context attribute): the plan
keeps the attribute and its values, each rollout row the segment it runs (NULL: the whole environment).

Revision ID: 5e2c7a91d4b3
Revises: c4d0e8b2a6f1
Create Date: 2026-12-04 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "5e2c7a91d4b3"
down_revision = "c4d0e8b2a6f1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollout_plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segment_attribute", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column(
                "segment_values",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("segment", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("segment")
    with op.batch_alter_table("rollout_plans", schema=None) as batch_op:
        batch_op.drop_column("segment_values")
        batch_op.drop_column("segment_attribute")
