"""What a rollback asks of whoever purges uploads: the seam between rollouts and bucket cleanup.

A rollback with ``purge_uploads_since`` also deletes what the flag's pipeline uploaded in the bad window. Rollouts
do not know buckets: the caller hands over a ``RollbackPurger`` (the control plane's is
``controlplane.rollback_purge.CleanupPurger``), checked before the rollback so a purge that cannot be asked for
changes nothing, and asked once the rollback has committed, so a purge is never queued for a rollback that did not
happen.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

__all__ = ["RollbackPurger", "new_incident_id"]


def new_incident_id() -> str:
    """A fresh incident id: what a rollback's audit record and the purges it asked for share."""
    return f"incident-{uuid.uuid4().hex[:16]}"


@runtime_checkable  # Litestar checks injected values against the handler's annotation
class RollbackPurger(Protocol):
    """Purges the uploads of a flag's pipeline since an instant, as part of a rollback."""

    def check(self, session: Session, *, flag: str, since: datetime, now: datetime) -> None:
        """Refuse (``InvalidInput``) a purge that could not be asked for: no bucket, an empty or too wide window."""
        ...

    def request(
        self,
        session: Session,
        *,
        flag: str,
        environment: str,
        since: datetime,
        now: datetime,
        actor: str,
        reason: str,
        incident: str,
    ) -> list[int]:
        """Queue the purge of ``[since, now)`` in each bucket of the flag's pipeline (audited with ``incident``);
        return the cleanup runs' ids."""
        ...

    def start(self, runs: Sequence[int]) -> None:
        """Start the queued runs in this process (the leader's tick would otherwise start them)."""
        ...
