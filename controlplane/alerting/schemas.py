"""Wire types of alerting: alert states and their transitions."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["AlertRead", "AlertTransitionRead"]


class AlertRead(msgspec.Struct):
    """One rule's current state in one environment."""

    rule: str
    pipeline: str
    environment: str
    state: str
    since: datetime
    value: float | None
    samples: int
    detail: str
    condition: str
    severity: str
    flag: str | None
    active_since: datetime | None = None
    last_breach_at: datetime | None = None


class AlertTransitionRead(msgspec.Struct):
    """One state change, with what was measured against what."""

    id: int
    rule: str
    pipeline: str
    environment: str
    from_state: str
    to_state: str
    at: datetime
    value: float | None
    op: str
    threshold: str
    window_seconds: float
    samples: int
    condition: str
    detail: str
