"""Leases that elect one replica to run scheduled jobs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db import Base, UTCDateTime

__all__ = ["LeaderLease"]


class LeaderLease(Base):
    """Who holds the named lease, and until when; a holder that stops renewing loses it at ``expires_at``."""

    __tablename__ = "leader_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
