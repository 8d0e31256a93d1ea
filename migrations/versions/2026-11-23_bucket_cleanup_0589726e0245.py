"""bucket cleanup

Revision ID: 0589726e0245
Revises: 7a519d19564a
Create Date: 2026-11-23 05:55:42.498827
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0589726e0245"
down_revision = "7a519d19564a"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "cleanup_policies",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("bucket", sa.String(length=222), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column(
            "selection", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("schedule", sa.String(length=128), nullable=True),
        sa.Column("alert_after_seconds", sa.Float(), nullable=True),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_cleanup_policies")),
    )
    op.create_table(
        "cleanup_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.String(length=128), nullable=True),
        sa.Column("bucket", sa.String(length=222), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column(
            "selection", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=256), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("runner", sa.String(length=256), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("resume_page_token", sa.Text(), nullable=True),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("scanned", sa.BigInteger(), nullable=False),
        sa.Column("matched", sa.BigInteger(), nullable=False),
        sa.Column("matched_bytes", sa.BigInteger(), nullable=False),
        sa.Column("deleted", sa.BigInteger(), nullable=False),
        sa.Column("already_gone", sa.BigInteger(), nullable=False),
        sa.Column("failed", sa.BigInteger(), nullable=False),
        sa.Column("bytes_freed", sa.BigInteger(), nullable=False),
        sa.Column(
            "skipped", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column(
            "matched_by_reason",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "details", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cleanup_runs")),
        sa.UniqueConstraint("policy", "scheduled_for", name="uq_cleanup_runs_policy_slot"),
    )
    with op.batch_alter_table("cleanup_runs", schema=None) as batch_op:
        batch_op.create_index("ix_cleanup_runs_policy", ["policy", "id"], unique=False)
        batch_op.create_index("ix_cleanup_runs_status", ["status", "id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("cleanup_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_cleanup_runs_status")
        batch_op.drop_index("ix_cleanup_runs_policy")

    op.drop_table("cleanup_runs")
    op.drop_table("cleanup_policies")
