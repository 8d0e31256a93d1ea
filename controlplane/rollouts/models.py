"""Rollout plans and the history of rollouts run from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db import Base, JSONDocument, UTCDateTime, utcnow

__all__ = ["Rollout", "RolloutPlan"]


class RolloutPlan(Base):
    """The stages a flag goes through in one environment; ``position`` is the promotion order.

    With ``segment_attribute`` (a plan's ``per``), the stages are run once per value of ``segment_values``, each
    segment with its own rollout rows.
    """

    __tablename__ = "rollout_plans"
    __table_args__ = (UniqueConstraint("flag_id", "environment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    position: Mapped[int]
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    rollback_policy: Mapped[str] = mapped_column(String(32), default="off")
    auto_rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    segment_attribute: Mapped[str | None] = mapped_column(String(128))
    segment_values: Mapped[list[str] | None] = mapped_column(JSONDocument)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Rollout(Base):
    """One run of a plan in one environment (or one segment of it); the newest row per flag, environment and segment
    is the current one. ``segment`` is the segment's value (``support`` of ``queue``), NULL for a plan without one.

    ``stages`` is a copy of the plan taken at start, so re-applying a definition never moves a running rollout.
    """

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_flag_environment", "flag_id", "environment", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"))
    environment: Mapped[str] = mapped_column(String(64))
    segment: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(32))
    stage_index: Mapped[int] = mapped_column(default=0)
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    rollback_policy: Mapped[str] = mapped_column(String(32), default="off")
    auto_rollback: Mapped[bool] = mapped_column(Boolean, default=False)
    stage_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_by: Mapped[str | None] = mapped_column(String(128))
    forced_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When the current stage run's progress deadline was told (cleared by every transition): it is told once.
    deadline_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
