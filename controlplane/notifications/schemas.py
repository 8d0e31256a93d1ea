"""Wire types of silences and the notification log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "NotificationRead",
    "NotificationStatus",
    "SilenceCreate",
    "SilenceMatchers",
    "SilenceRead",
    "SilenceState",
]

MatcherValue = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Comment = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
#: A silence longer than a year is a mistake, not a maintenance window.
DurationSeconds = Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)]

SilenceState = Literal["pending", "active", "expired"]
#: pending -> sending -> sent | pending (retry) | failed; silenced rows are never sent.
NotificationStatus = Literal["pending", "sending", "sent", "failed", "silenced"]


class SilenceMatchers(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Fields an alert must equal to be silenced; at least one."""

    rule: MatcherValue | None = None
    environment: MatcherValue | None = None
    pipeline: MatcherValue | None = None
    flag: MatcherValue | None = None
    severity: Literal["page", "ticket", "info"] | None = None


class SilenceCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A silence to create: what it matches, until when (``ends_at`` or ``duration_seconds``), and why."""

    matchers: SilenceMatchers
    comment: Comment
    ends_at: datetime | None = None
    duration_seconds: DurationSeconds | None = None
    starts_at: datetime | None = None


class SilenceRead(msgspec.Struct):
    """A silence, with its state at the time of the request."""

    id: int
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    state: SilenceState
    created_by: str
    comment: str
    created_at: datetime


class NotificationRead(msgspec.Struct):
    """One entry of the notification log: one message to one receiver, and how its delivery went.

    ``payload`` holds ``type`` (receiver type), ``body`` (what is POSTed, without the receiver's secrets) and
    ``alerts`` (the alerts it carries).
    """

    id: int
    receiver: str
    kind: str
    dedup_key: str
    rule: str | None
    environment: str | None
    severity: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    payload: dict[str, Any]
