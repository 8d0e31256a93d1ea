"""telemetry subjects

Per-subject counts of the telemetry windows (what a rule's per_subject_cap reads), and the sum of the squared event
values per window (value_sumsq; 0 for windows written before it existed).

Revision ID: a9b3d13d306c
Revises: 3eed4f1bbf81
Create Date: 2026-12-04 08:07:02.813297
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a9b3d13d306c"
down_revision = "3eed4f1bbf81"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "telemetry_subjects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
        sa.Column("variant", sa.String(length=128), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("labels_key", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_subjects")),
        sa.UniqueConstraint(
            "window_start",
            "pipeline",
            "event",
            "environment",
            "variant",
            "outcome",
            "labels_key",
            "subject",
            name="uq_telemetry_subjects_series",
        ),
    )
    with op.batch_alter_table("telemetry_subjects", schema=None) as batch_op:
        batch_op.create_index(
            "ix_telemetry_subjects_pipeline_event_environment_start",
            ["pipeline", "event", "environment", "window_start"],
            unique=False,
        )

    with op.batch_alter_table("telemetry_windows", schema=None) as batch_op:
        batch_op.add_column(sa.Column("value_sumsq", sa.Float(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("telemetry_windows", schema=None) as batch_op:
        batch_op.drop_column("value_sumsq")

    with op.batch_alter_table("telemetry_subjects", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_subjects_pipeline_event_environment_start")

    op.drop_table("telemetry_subjects")
