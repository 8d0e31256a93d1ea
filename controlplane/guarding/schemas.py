"""Wire types of guarding: the Alertmanager webhook's payload (version 4) and what was done with each alert; a
guard replay's request and report."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

__all__ = [
    "AlertmanagerAlert",
    "AlertmanagerPayload",
    "ReplayEvaluation",
    "ReplayReport",
    "ReplayRequest",
    "ReplayTransition",
    "WebhookOutcome",
]


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
    # rolled_back | already_rolled_back | no_rollout | not_a_stage_guard | shadow_guard | sequential_guard
    # | held_by_incident | ignored_resolved | ignored_unlabelled | refused
    action: str
    flag: str | None = None
    environment: str | None = None
    detail: str = ""
    segment: str | None = None  # attribute=value, for a rollout run per segment


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to replay: an applied rule by name, or the rule of that name in a definition file's text."""

    rule: Annotated[str, msgspec.Meta(min_length=1)]
    environment: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    # Seconds between evaluations; at most a year, so the times stay within what a datetime can hold.
    interval_seconds: Annotated[float, msgspec.Meta(ge=1, le=366 * 86_400)] = 10.0
    definition: str | None = None  # a definition file's text declaring `rule`; None: the applied rule
    source: str = "replay"  # the file's name, for messages about it


class ReplayEvaluation(msgspec.Struct):
    """One evaluation of a replay: the alert's state after it and what was measured."""

    at: datetime
    state: str
    value: float | None
    samples: int
    breached: bool
    detail: str


class ReplayTransition(msgspec.Struct):
    """A change of state during a replay: fired, pending, insufficient (data) or cleared."""

    at: datetime
    change: str
    from_state: str  # `new` at the first evaluation
    to_state: str
    value: float | None
    samples: int
    detail: str


class ReplayReport(msgspec.Struct):
    """What a rule would have done over stored traffic, evaluated every ``interval_seconds``; nothing was written."""

    rule: str
    pipeline: str
    environment: str
    condition: str
    source: str  # `applied` or the definition file's name
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    interval_seconds: float = 10.0
    transitions: list[ReplayTransition] = msgspec.field(default_factory=list)
    evaluations: list[ReplayEvaluation] = msgspec.field(default_factory=list)
