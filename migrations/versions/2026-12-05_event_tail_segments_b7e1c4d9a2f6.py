"""event tail segments

Streak guards scoped to one segment of a plan run per segment read a tail of that segment's events: the tails get a
``segment`` (``attribute=value``; empty for the tail of every event) in their key. Stored tails become the tails of
every event, and the streak rules already scoped to a segment get theirs from them.

Revision ID: b7e1c4d9a2f6
Revises: 5d2e7c91b4a3
Create Date: 2026-12-05 06:30:00.000000
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "b7e1c4d9a2f6"
down_revision = "5d2e7c91b4a3"
branch_labels = None
depends_on = None

_KEY = ["pipeline", "event", "environment"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot alter a primary key: copy the tails into a table with the new key.
        _copy_into_new_table([*_KEY, "segment"], "pipeline, event, environment, '', events, updated_at")
    else:
        op.add_column("event_tails", sa.Column("segment", sa.String(length=257), nullable=False, server_default=""))
        op.drop_constraint("pk_event_tails", "event_tails", type_="primary")
        op.create_primary_key("pk_event_tails", "event_tails", [*_KEY, "segment"])
    _split_segment_tails()


#: As ``controlplane.telemetry.service.TAIL_LENGTH`` when this revision was written.
_TAIL_LENGTH = 64


def _split_segment_tails() -> None:
    """Give the streak rules already scoped to one segment their tails from the stored tail of every event (its
    events keep their labels), so a streak in progress is not forgotten at the upgrade."""
    bind = op.get_bind()
    tails = sa.table(
        "event_tails",
        sa.column("pipeline", sa.String),
        sa.column("event", sa.String),
        sa.column("environment", sa.String),
        sa.column("segment", sa.String),
        sa.column("events", sa.JSON),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    catalogs = sa.table("pipeline_catalogs", sa.column("pipeline", sa.String), sa.column("rules", sa.JSON))
    scoped: dict[tuple[str, str], set[str]] = {}
    for pipeline, rules in bind.execute(sa.select(catalogs.c.pipeline, catalogs.c.rules)):
        for rule in _json(rules) or []:
            if rule.get("kind") == "streak" and rule.get("segment"):
                scoped.setdefault((pipeline, rule["event"]), set()).add(rule["segment"]["attribute"])
    if not scoped:
        return
    rows = []
    for pipeline, event, environment, events, updated_at in bind.execute(
        sa.select(tails.c.pipeline, tails.c.event, tails.c.environment, tails.c.events, tails.c.updated_at).where(
            tails.c.segment == ""
        )
    ):
        for attribute in sorted(scoped.get((pipeline, event), ())):
            split: dict[str, list[list[object]]] = {}
            for item in _json(events):
                value = (item[3] or {}).get(attribute)
                if value is not None:
                    split.setdefault(f"{attribute}={value}", []).append(item)
            rows.extend(
                {
                    "pipeline": pipeline,
                    "event": event,
                    "environment": environment,
                    "segment": segment,
                    "events": items[-_TAIL_LENGTH:],
                    "updated_at": updated_at,
                }
                for segment, items in split.items()
            )
    if rows:
        op.bulk_insert(tails, rows)


def _json(value: object) -> list[Any]:
    """A JSON column's value as read without the models' types (text on SQLite)."""
    return json.loads(value) if isinstance(value, str) else list(value or [])


def downgrade() -> None:
    # Only the tails of every event fit the old key.
    op.execute(sa.text("DELETE FROM event_tails WHERE segment <> ''"))
    if op.get_bind().dialect.name == "sqlite":
        _copy_into_new_table(_KEY, "pipeline, event, environment, events, updated_at")
        return
    op.drop_constraint("pk_event_tails", "event_tails", type_="primary")
    op.drop_column("event_tails", "segment")
    op.create_primary_key("pk_event_tails", "event_tails", _KEY)


def _copy_into_new_table(key: list[str], selected: str) -> None:
    columns = [
        sa.Column("pipeline", sa.String(length=128), nullable=False),
        sa.Column("event", sa.String(length=128), nullable=False),
        sa.Column("environment", sa.String(length=64), nullable=False),
    ]
    if "segment" in key:
        columns.append(sa.Column("segment", sa.String(length=257), nullable=False, server_default=""))
    op.create_table(
        "event_tails_new",
        *columns,
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*key, name="pk_event_tails"),
    )
    names = ", ".join([*(column.name for column in columns), "events", "updated_at"])
    op.execute(sa.text(f"INSERT INTO event_tails_new ({names}) SELECT {selected} FROM event_tails"))  # noqa: S608
    op.drop_table("event_tails")
    op.rename_table("event_tails_new", "event_tails")
