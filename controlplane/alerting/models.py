"""Tables of alerting: each alert's current state and every state change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, Index, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db import Base, UTCDateTime

__all__ = ["AlertStateRow", "AlertTransition"]

#: JSON on SQLite, JSONB on PostgreSQL, with None stored as SQL NULL (not a JSON null): plain rules have none.
_NULLABLE_DOCUMENT = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class AlertStateRow(Base):
    """The current state of one rule in one environment (see ``alerting.rules.AlertStatus``)."""

    __tablename__ = "alert_states"

    rule: Mapped[str] = mapped_column(String(128), primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    active_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    keep_firing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_breach_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    value: Mapped[float | None] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(default=0)
    detail: Mapped[str] = mapped_column(Text, default="")
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # A sequential rule's statistic (``alerting.sequential.Evidence.to_json``), so a new leader continues it.
    evidence: Mapped[dict[str, Any] | None] = mapped_column(_NULLABLE_DOCUMENT)


class AlertTransition(Base):
    """One state change of an alert, with what was measured against what."""

    __tablename__ = "alert_transitions"
    __table_args__ = (Index("ix_alert_transitions_rule_environment", "rule", "environment", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule: Mapped[str] = mapped_column(String(128))
    pipeline: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    value: Mapped[float | None] = mapped_column(Float)
    op: Mapped[str] = mapped_column(String(4))
    threshold: Mapped[str] = mapped_column(String(64))
    window_seconds: Mapped[float] = mapped_column(Float)
    samples: Mapped[int]
    condition: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="")
