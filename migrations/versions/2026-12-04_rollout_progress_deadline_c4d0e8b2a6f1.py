"""rollout progress deadline

Revision ID: c4d0e8b2a6f1
Revises: a9b3d13d306c
Create Date: 2026-12-04 17:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c4d0e8b2a6f1"
down_revision = "a9b3d13d306c"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deadline_notified_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("deadline_notified_at")
