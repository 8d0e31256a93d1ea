"""Wire types of the Alertmanager webhook: its payload (version 4) and what was done with each alert."""

from __future__ import annotations

import msgspec

__all__ = ["AlertmanagerAlert", "AlertmanagerPayload", "WebhookOutcome"]


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
