"""Wire types of the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

__all__ = ["AuditRecordRead", "AuditVerification"]


class AuditRecordRead(msgspec.Struct):
    """One audit record."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target: str
    environment: str | None
    reason: str | None
    before: Any
    after: Any
    digest: str
    previous_digest: str


class AuditVerification(msgspec.Struct):
    """The result of walking the chain."""

    ok: bool
    records: int
    first_broken_id: int | None = None
    reason: str | None = None
