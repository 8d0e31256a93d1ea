"""Leader election by lease: one replica holds a named lease and renews it; others take it once it expires."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from controlplane.scheduling.models import LeaderLease

__all__ = ["release_lease", "try_acquire_lease"]


def try_acquire_lease(session: Session, *, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the lease; True when ``holder`` holds it until ``now + ttl``."""
    insert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # Racing first inserts are fine: one row wins, the other does nothing, and the UPDATE below decides.
    session.execute(
        insert(LeaderLease)
        .values(name=name, holder=holder, expires_at=now - timedelta(seconds=1), acquired_at=now)
        .on_conflict_do_nothing(index_elements=["name"])
    )
    taken = session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == name, or_(LeaderLease.holder == holder, LeaderLease.expires_at < now))
        .values(holder=holder, expires_at=now + ttl)
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


def release_lease(session: Session, *, name: str, holder: str, now: datetime) -> None:
    """Give the lease up at shutdown, so another replica takes over at once instead of after the TTL."""
    session.execute(
        update(LeaderLease)
        .where(LeaderLease.name == name, LeaderLease.holder == holder)
        .values(expires_at=now - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )
