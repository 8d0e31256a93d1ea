"""Flags and their state in each environment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from controlplane.db import Base, JSONDocument, UTCDateTime, utcnow

__all__ = ["CONFIGURATION_CHANNEL", "Flag", "FlagEnvironment", "FlagIncident"]


class Flag(Base):
    """A flag's definition, shared by every environment. ``revision`` guards updates (If-Match)."""

    __tablename__ = "flags"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(128), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    variants: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    off_variant: Mapped[str] = mapped_column(String(128))
    rollout_variant: Mapped[str | None] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str] = mapped_column(String(128), default="")
    kind: Mapped[str] = mapped_column(String(32))
    tags: Mapped[list[str]] = mapped_column(JSONDocument, default=list)
    pipeline: Mapped[str | None] = mapped_column(String(128))
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    environments: Mapped[list[FlagEnvironment]] = relationship(
        back_populates="flag", order_by="FlagEnvironment.id", cascade="all, delete-orphan"
    )

    __mapper_args__ = {"version_id_col": revision}


class FlagEnvironment(Base):
    """A flag's state in one environment. ``revision`` rises on every change, rollout operations included."""

    __tablename__ = "flag_environments"
    __table_args__ = (UniqueConstraint("flag_id", "environment"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    default_variant: Mapped[str] = mapped_column(String(128))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument, default=list)
    rollout: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    revision: Mapped[int] = mapped_column(default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    flag: Mapped[Flag] = relationship(back_populates="environments")

    __mapper_args__ = {"version_id_col": revision}


class FlagIncident(Base):
    """An incident action: one flag set to serve ``variant`` to everyone in some environments, and its undo.

    ``environments`` lists, per environment, the serving state before and after (``flags.reads.environment_snapshot``),
    the environment revision the action left (what undo compares against) and whether a running rollout was paused
    for it. ``undo`` lists, per environment, what the undo did; it is set once, when the incident is undone.
    """

    __tablename__ = "flag_incidents"

    id: Mapped[int] = mapped_column(primary_key=True)
    flag_id: Mapped[int] = mapped_column(ForeignKey("flags.id", ondelete="CASCADE"), index=True)
    variant: Mapped[str] = mapped_column(String(128))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    environments: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_by: Mapped[str | None] = mapped_column(String(128))
    undo_reason: Mapped[str | None] = mapped_column(Text)
    undo: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument)

    flag: Mapped[Flag] = relationship()


#: PostgreSQL channel on which every committed flag change is announced to all replicas
#: (``flags.service.announce_configuration_change``).
CONFIGURATION_CHANNEL = "controlplane_config"
