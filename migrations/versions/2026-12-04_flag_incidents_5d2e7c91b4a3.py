"""flag incidents

Incident actions: a flag set to serve one variant to everyone in some environments, with the states before and after
per environment, and its undo.

Revision ID: 5d2e7c91b4a3
Revises: 5e2c7a91d4b3
Create Date: 2026-12-04 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "5d2e7c91b4a3"
down_revision = "5e2c7a91d4b3"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "flag_incidents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("flag_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=128), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("environments", _JSON, nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undone_by", sa.String(length=128), nullable=True),
        sa.Column("undo_reason", sa.Text(), nullable=True),
        sa.Column("undo", _JSON, nullable=True),
        sa.ForeignKeyConstraint(
            ["flag_id"], ["flags.id"], name=op.f("fk_flag_incidents_flag_id_flags"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flag_incidents")),
    )
    with op.batch_alter_table("flag_incidents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flag_incidents_flag_id"), ["flag_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("flag_incidents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flag_incidents_flag_id"))
    op.drop_table("flag_incidents")
