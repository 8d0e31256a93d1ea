"""alert evidence

Revision ID: 3eed4f1bbf81
Revises: 0589726e0245
Create Date: 2026-12-04 03:59:51.507602
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "3eed4f1bbf81"
down_revision = "0589726e0245"
branch_labels = None
depends_on = None


def upgrade() -> None:

    with op.batch_alter_table("alert_states", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "evidence",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )


def downgrade() -> None:

    with op.batch_alter_table("alert_states", schema=None) as batch_op:
        batch_op.drop_column("evidence")
