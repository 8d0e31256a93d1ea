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
    """The result of walking the chain.

    The chain proves nothing was altered, removed or inserted before the head. Records cut off the end leave a
    shorter valid chain: compare ``head_id``/``head_digest`` with a value kept elsewhere to detect that.
    """

    ok: bool
    records: int
    head_id: int | None = None
    head_digest: str | None = None
    first_broken_id: int | None = None
    reason: str | None = None
