"""Tables of bucket cleanup: the policies the definitions declare, and every run with what it did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db import Base, JSONDocument, UTCDateTime

__all__ = ["CleanupPolicyRow", "CleanupRun"]


class CleanupPolicyRow(Base):
    """One cleanup policy as the definitions last applied it; ``next_run_at`` is its next scheduled slot."""

    __tablename__ = "cleanup_policies"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(Text, default="")
    bucket: Mapped[str] = mapped_column(String(222))
    prefix: Mapped[str] = mapped_column(Text, default="")
    selection: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    schedule: Mapped[str | None] = mapped_column(String(128))
    alert_after_seconds: Mapped[float | None] = mapped_column(Float)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CleanupRun(Base):
    """One run of a policy or one purge: what it was asked, who holds it, how far it got and what it did.

    ``status`` goes queued -> running -> succeeded | failed. A running run's ``runner`` renews ``heartbeat_at``
    after every page, with ``resume_page_token``; a run whose heartbeat is stale is taken over and resumed there.
    """

    __tablename__ = "cleanup_runs"
    __table_args__ = (
        # One run per scheduled slot of a policy, however many replicas see the slot come due.
        UniqueConstraint("policy", "scheduled_for", name="uq_cleanup_runs_policy_slot"),
        Index("ix_cleanup_runs_status", "status", "id"),
        Index("ix_cleanup_runs_policy", "policy", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    policy: Mapped[str | None] = mapped_column(String(128))
    bucket: Mapped[str] = mapped_column(String(222))
    prefix: Mapped[str] = mapped_column(Text, default="")
    selection: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))
    requested_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    runner: Mapped[str | None] = mapped_column(String(256))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    resume_page_token: Mapped[str | None] = mapped_column(Text)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    scanned: Mapped[int] = mapped_column(BigInteger, default=0)
    matched: Mapped[int] = mapped_column(BigInteger, default=0)
    matched_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    deleted: Mapped[int] = mapped_column(BigInteger, default=0)
    already_gone: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_freed: Mapped[int] = mapped_column(BigInteger, default=0)
    skipped: Mapped[dict[str, int]] = mapped_column(JSONDocument)
    matched_by_reason: Mapped[dict[str, int]] = mapped_column(JSONDocument)
    details: Mapped[list[str]] = mapped_column(JSONDocument)
    duration_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str] = mapped_column(Text, default="")
