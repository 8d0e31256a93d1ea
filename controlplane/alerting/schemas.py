"""Wire types of alerting: alert states, transitions, and the Alertmanager webhook payload (version 4)."""

from __future__ import annotations

from datetime import datetime

import msgspec

__all__ = ["AlertRead", "AlertTransitionRead", "AlertmanagerAlert", "AlertmanagerPayload", "WebhookOutcome"]


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


class AlertmanagerAlert(msgspec.Struct):
    """One alert of an Alertmanager webhook notification."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    startsAt: str = ""  # noqa: N815 - Alertmanager's field name
    endsAt: str = ""  # noqa: N815
    generatorURL: str = ""  # noqa: N815
    fingerprint: str = ""


class AlertmanagerPayload(msgspec.Struct):
    """Alertmanager's webhook body, version 4 (unknown fields are ignored: newer versions add some)."""

    version: str
    status: str
    alerts: list[AlertmanagerAlert]
    receiver: str = ""
    groupKey: str = ""  # noqa: N815
    groupLabels: dict[str, str] = msgspec.field(default_factory=dict)  # noqa: N815
    commonLabels: dict[str, str] = msgspec.field(default_factory=dict)  # noqa: N815
    externalURL: str = ""  # noqa: N815
    truncatedAlerts: int = 0  # noqa: N815


class WebhookOutcome(msgspec.Struct):
    """What the control plane did with each alert of a webhook notification."""

    fingerprint: str
    alertname: str
    # rolled_back | already_rolled_back | no_rollout | not_a_stage_guard | ignored_resolved | ignored_unlabelled
    # | refused
    action: str
    flag: str | None = None
    environment: str | None = None
    detail: str = ""
