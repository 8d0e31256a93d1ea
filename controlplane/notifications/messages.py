"""What on-call receives: alert events and the message bodies built from them, as pure functions.

    AlertEvent --pagerduty_event--> one PagerDuty Events API v2 body per event (routing_key added at send time):
                                    an alert event for alerts (trigger, resolve, rollback), a change event for
                                    rollout steps (sent to /v2/change/enqueue: recorded on the service, never paging)
    [AlertEvent] --slack_message--> one Slack incoming-webhook body listing every event
    [AlertEvent] --webhook_message--> one generic JSON body listing every event

Secrets (the PagerDuty routing key, webhook URLs and headers) are never part of a body built here: bodies are stored
in the notification log, which viewers can read, and the secret is added from the configuration when sending.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

__all__ = [
    "ALERT_KINDS",
    "ANNOUNCEMENT_KINDS",
    "INCIDENT_KINDS",
    "INCIDENT_RULE",
    "KINDS",
    "PAGERDUTY_SEVERITY",
    "ROLLOUT_KINDS",
    "ROLLOUT_RULE",
    "SEVERITIES",
    "SOURCE",
    "AlertEvent",
    "bounded_dedup_key",
    "group_status",
    "highest_severity",
    "is_change_event",
    "pagerduty_event",
    "slack_message",
    "webhook_alert",
    "webhook_message",
    "with_routing_key",
]

ALERT_KINDS: Final = ("trigger", "resolve", "rollback")
#: Rollout steps (``controlplane.rollouts.steps.StepKind``): announcements, each told once, never resolved.
ROLLOUT_KINDS: Final = (
    "rollout_started",
    "stage_advanced",
    "forced_advance",
    "rollout_paused",
    "rollout_resumed",
    "rollout_completed",
    "rolled_back",
    "progress_deadline_passed",
)
#: Incident actions (``controlplane flags set-variant`` and its undo), and an automatic rollback an incident override
#: in force held back: announcements like rollout steps.
INCIDENT_KINDS: Final = ("variant_set", "variant_restored", "rollback_held")
#: What is told once and never resolved, and sent to PagerDuty as a change event: rollout steps and incident actions.
ANNOUNCEMENT_KINDS: Final = ROLLOUT_KINDS + INCIDENT_KINDS
KINDS: Final = ALERT_KINDS + ANNOUNCEMENT_KINDS
#: The rule name rollout steps carry: silences and `notifications list --rule rollout` pick them by it.
ROLLOUT_RULE: Final = "rollout"
#: The rule name incident actions carry.
INCIDENT_RULE: Final = "incident"
SEVERITIES: Final = ("page", "ticket", "info")
#: Our severities onto PagerDuty's four; PagerDuty's own names pass through, anything else is `error`.
PAGERDUTY_SEVERITY: Final[Mapping[str, str]] = {
    "page": "critical",
    "ticket": "warning",
    "info": "info",
    "critical": "critical",
    "error": "error",
    "warning": "warning",
}
_URGENCY = {"page": 0, "critical": 0, "error": 1, "ticket": 2, "warning": 2, "info": 3}
SOURCE: Final = "controlplane"

# PagerDuty Events API v2 limits: summary <= 1024 characters, dedup_key <= 255.
_SUMMARY_LIMIT = 1024
_DEDUP_KEY_LIMIT = 255
# Slack: at most 50 blocks per message, 3000 characters per section text, 150 per header.
_SLACK_BLOCKS = 50
_SLACK_SECTION = 3000
_SLACK_HEADER = 150
_SLACK_TEXT = 3000

_STATUS = {"trigger": "firing", "resolve": "resolved", "rollback": "rolled_back"} | {
    kind: kind for kind in ANNOUNCEMENT_KINDS
}
_LABEL = {
    "trigger": "FIRING",
    "resolve": "RESOLVED",
    "rollback": "ROLLED BACK",
    "rollout_started": "ROLLOUT STARTED",
    "stage_advanced": "STAGE ADVANCED",
    "forced_advance": "FORCED ADVANCE",
    "rollout_paused": "ROLLOUT PAUSED",
    "rollout_resumed": "ROLLOUT RESUMED",
    "rollout_completed": "ROLLOUT COMPLETED",
    "rolled_back": "ROLLED BACK BY HAND",
    "progress_deadline_passed": "PROGRESS DEADLINE PASSED",
    "variant_set": "INCIDENT: VARIANT SET",
    "variant_restored": "INCIDENT UNDONE",
    "rollback_held": "ROLLBACK HELD BY INCIDENT",
}
_KIND_EMOJI = {
    "rollback": ":rewind:",
    "rolled_back": ":rewind:",
    "rollout_started": ":rocket:",
    "stage_advanced": ":arrow_forward:",
    "forced_advance": ":fast_forward:",
    "rollout_paused": ":double_vertical_bar:",
    "rollout_resumed": ":arrow_forward:",
    "rollout_completed": ":white_check_mark:",
    "progress_deadline_passed": ":hourglass:",
    "variant_set": ":rotating_light:",
    "variant_restored": ":leftwards_arrow_with_hook:",
    "rollback_held": ":no_entry:",
}
_EMOJI = {"page": ":rotating_light:", "ticket": ":warning:", "info": ":information_source:"}


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """Something on-call should hear about: an alert fired or resolved, a guard rolled a flag back, or a rollout
    step (one of ``ROLLOUT_KINDS``: ``rule`` is ``rollout``, ``key`` names the step uniquely, ``description`` says
    who and why), or an incident action (one of ``INCIDENT_KINDS``, ``rule`` ``incident``, told like a step).

    For ``kind="rollback"``, ``summary`` says why (the guard rule's summary); the messages add that the flag was
    rolled back.
    """

    kind: str
    rule: str
    pipeline: str
    environment: str
    severity: str
    summary: str
    description: str
    at: datetime
    flag: str | None = None
    value: float | None = None
    threshold: str = ""
    op: str = ""
    window_seconds: float = 0.0
    runbook_url: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        # Severity is not checked: one from Alertmanager's labels may be anything, and refusing it here would
        # fail the transaction that rolled a flag back. Unknown severities rank as urgent (see PAGERDUTY_SEVERITY).
        if self.kind not in KINDS:
            raise ValueError(f"alert event kind must be one of {KINDS}, got {self.kind!r}")
        if self.at.tzinfo is None or self.at.utcoffset() != timedelta(0):
            raise ValueError(f"alert event time must be aware UTC, got {self.at!r}")
        if self.is_announcement and not self.key:
            raise ValueError("a rollout step or an incident action needs the `key` that names it")

    @property
    def is_announcement(self) -> bool:
        """True for a rollout step or an incident action, false for an alert's trigger, resolve or rollback."""
        return self.kind in ANNOUNCEMENT_KINDS

    @property
    def dedup_key(self) -> str:
        """The alert's identity across events: PagerDuty's dedup_key, and the key notifications de-duplicate on; a
        rollout step's is its own."""
        if self.is_announcement:
            family = "incident" if self.kind in INCIDENT_KINDS else "rollout"
            return f"controlplane/{family}/{self.key}"
        return f"controlplane/{self.pipeline}/{self.rule}/{self.environment}"

    @property
    def headline(self) -> str:
        """The summary; for a rollback whose summary does not say so, prefixed with what was rolled back."""
        if self.kind == "rollback" and "rolled back" not in self.summary.lower():
            return f"{self.flag or self.pipeline} rolled back in {self.environment}: {self.summary}"
        return self.summary


def bounded_dedup_key(key: str) -> str:
    """``key`` if it fits PagerDuty's 255 characters, else a stable shortened form ending in a digest of it."""
    if len(key) <= _DEDUP_KEY_LIMIT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[: _DEDUP_KEY_LIMIT - 17]}#{digest}"


def highest_severity(events: Sequence[AlertEvent]) -> str:
    """The most urgent severity among ``events`` (page > ticket > info; an unknown one counts as page)."""
    return min((event.severity for event in events), key=lambda severity: _URGENCY.get(severity, 0), default="info")


def group_status(events: Sequence[AlertEvent]) -> str:
    """``resolved`` when every event is a resolve, ``changed`` when every one is a rollout step, else ``firing``."""
    if events and all(event.kind == "resolve" for event in events):
        return "resolved"
    if events and all(event.is_announcement for event in events):
        return "changed"
    return "firing"


# --- PagerDuty Events API v2 ------------------------------------------------------------------------------------


def pagerduty_event(event: AlertEvent) -> dict[str, Any]:
    """The Events API v2 body for one event, without ``routing_key`` (see ``with_routing_key``).

    A rollback is sent as a ``trigger`` with the alert's dedup_key, so it lands on the alert's open incident.
    A resolve carries only what PagerDuty reads from one: the action and the dedup_key. A rollout step is a Change
    Event (no ``event_action``, no ``dedup_key``, no severity: it records a change on the service's timeline,
    where responders see it beside incidents, and pages nobody); ``is_change_event`` tells the two apart.
    """
    if event.is_announcement:
        change: dict[str, Any] = {
            "payload": {
                "summary": _truncate(event.headline, _SUMMARY_LIMIT),
                "source": SOURCE,
                "timestamp": event.at.isoformat(),
                "custom_details": _custom_details(event),
            }
        }
        if event.runbook_url:
            change["links"] = [{"href": event.runbook_url, "text": "Runbook"}]
        return change
    dedup_key = bounded_dedup_key(event.dedup_key)
    if event.kind == "resolve":
        return {"event_action": "resolve", "dedup_key": dedup_key}
    payload: dict[str, Any] = {
        "summary": _truncate(event.headline, _SUMMARY_LIMIT),
        "source": SOURCE,
        "severity": PAGERDUTY_SEVERITY.get(event.severity, "error"),
        "timestamp": event.at.isoformat(),
        "group": event.pipeline,
        "class": event.rule,
        "custom_details": _custom_details(event),
    }
    if event.flag:
        payload["component"] = event.flag
    body: dict[str, Any] = {"event_action": "trigger", "dedup_key": dedup_key, "payload": payload}
    if event.runbook_url:
        body["links"] = [{"href": event.runbook_url, "text": "Runbook"}]
    return body


def is_change_event(body: Mapping[str, Any]) -> bool:
    """True for a stored PagerDuty body that goes to the Change Events endpoint (it has no ``event_action``)."""
    return "event_action" not in body


def with_routing_key(body: Mapping[str, Any], routing_key: str) -> dict[str, Any]:
    """A stored Events API body made sendable: the integration's routing key first, then the rest."""
    return {"routing_key": routing_key, **body}


def _custom_details(event: AlertEvent) -> dict[str, Any]:
    if event.is_announcement:
        # A step has no measurement: what it carries is who moved which flag where, and why (in ``details``).
        step = {"kind": event.kind, "pipeline": event.pipeline, "environment": event.environment, "flag": event.flag}
        return {**_jsonable(event.details), **step, "description": event.description}
    known = {
        "kind": event.kind,
        "pipeline": event.pipeline,
        "environment": event.environment,
        "rule": event.rule,
        "flag": event.flag,
        "value": _number(event.value),
        "threshold": event.threshold,
        "op": event.op,
        "window_seconds": event.window_seconds,
        "description": event.description,
        "runbook_url": event.runbook_url,
    }
    # The evaluator's extra details never overwrite the measured facts above.
    return {**_jsonable(event.details), **known}


# --- generic webhook ---------------------------------------------------------------------------------------------


def webhook_alert(event: AlertEvent) -> dict[str, Any]:
    """One alert as the generic webhook lists it."""
    return {
        "status": _STATUS[event.kind],
        "kind": event.kind,
        "dedup_key": event.dedup_key,
        "rule": event.rule,
        "pipeline": event.pipeline,
        "environment": event.environment,
        "severity": event.severity,
        "flag": event.flag,
        "summary": event.headline,
        "description": event.description,
        "value": _number(event.value),
        "threshold": event.threshold,
        "op": event.op,
        "window_seconds": event.window_seconds,
        "runbook_url": event.runbook_url,
        "at": event.at.isoformat(),
        "details": _jsonable(event.details),
    }


def webhook_message(receiver: str, events: Sequence[AlertEvent]) -> dict[str, Any]:
    """The generic webhook body: every event of one notification, and ``firing`` unless all are resolves."""
    return {
        "version": "1",
        "receiver": receiver,
        "status": group_status(events),
        "alerts": [webhook_alert(event) for event in events],
    }


# --- Slack incoming webhook -------------------------------------------------------------------------------------


def slack_message(events: Sequence[AlertEvent]) -> dict[str, Any]:
    """A Slack incoming-webhook body: ``text`` is the notification fallback, ``blocks`` one section per alert."""
    lines = [f"[{_LABEL[event.kind]}] {event.headline}" for event in events]
    if len(events) == 1:
        text = lines[0]
        blocks: list[dict[str, Any]] = []
    else:
        title = _count_title(events)
        text = "\n".join([title, *lines])
        blocks = [{"type": "header", "text": {"type": "plain_text", "text": _truncate(title, _SLACK_HEADER)}}]
    room = _SLACK_BLOCKS - len(blocks)
    shown = events if len(events) <= room else events[: room - 1]
    blocks.extend(_slack_section(event) for event in shown)
    if len(shown) < len(events):
        more = f"and {len(events) - len(shown)} more; see `controlplane notifications list`"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return {"text": _truncate(text, _SLACK_TEXT), "blocks": blocks}


def _count_title(events: Sequence[AlertEvent]) -> str:
    counts: dict[str, int] = {}
    for event in events:
        counts[_STATUS[event.kind]] = counts.get(_STATUS[event.kind], 0) + 1
    parts = ", ".join(f"{count} {status.replace('_', ' ')}" for status, count in counts.items())
    return f"{len(events)} alerts: {parts}"


def _slack_section(event: AlertEvent) -> dict[str, Any]:
    emoji = ":white_check_mark:" if event.kind == "resolve" else _EMOJI.get(event.severity, ":rotating_light:")
    emoji = _KIND_EMOJI.get(event.kind, emoji)
    subject = (event.flag or event.rule) if event.is_announcement else event.rule
    heading = (
        f"{emoji} *{_LABEL[event.kind]}* ({event.severity}) `{_escape(subject)}` in *{_escape(event.environment)}*"
    )
    lines = [heading, _escape(event.headline)]
    if event.description and event.kind != "resolve":
        lines.append(_escape(event.description))
    if event.runbook_url:
        lines.append(f"<{event.runbook_url}|Runbook>")
    return {"type": "section", "text": {"type": "mrkdwn", "text": _truncate("\n".join(lines), _SLACK_SECTION)}}


def _escape(text: str) -> str:
    # Slack's mrkdwn reads &, < and > as control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --- helpers -----------------------------------------------------------------------------------------------------


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: float | None) -> float | str | None:
    # JSON (and PostgreSQL's JSONB) has no NaN or infinity; say them as text rather than fail the notification.
    if value is None or math.isfinite(value):
        return value
    return str(value)


def _jsonable(value: Any) -> Any:
    # Details are free-form: anything JSON cannot hold (times, decimals, NaN) is sent as its text.
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, float):
        return _number(value)
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)
