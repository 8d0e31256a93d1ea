"""Use cases of notifications and silences. Takes a session, never commits.

``enqueue_notifications`` writes the outbox (table ``notifications``) in the caller's transaction, so a
notification exists exactly when the alert change that caused it was committed; ``delivery`` drains it.
Every row's ``payload`` is ``{"type": receiver type, "body": what is POSTed (no secrets), "alerts": [...]}``;
``alerts`` lists the (dedup_key, kind, rule, environment) it carries, which is what de-duplication reads back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import delete, or_, select
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.notifications.config import NotificationConfig, Receiver
from controlplane.notifications.dedup import Action, Notified, decide, notified_state, silence_matches
from controlplane.notifications.messages import (
    ANNOUNCEMENT_KINDS,
    AlertEvent,
    bounded_dedup_key,
    highest_severity,
    pagerduty_event,
    slack_message,
    webhook_message,
)
from controlplane.notifications.models import Notification, Silence
from controlplane.notifications.schemas import SilenceCreate, SilenceState

if TYPE_CHECKING:
    from controlplane.metrics import ControlPlaneMetrics

__all__ = [
    "DeliveryStatus",
    "active_silences",
    "count_silenced",
    "count_silenced_on_commit",
    "create_silence",
    "delete_superseded_notifications",
    "enqueue_notifications",
    "expire_silence",
    "get_silence",
    "list_notifications",
    "list_silences",
    "silence_state",
]


class DeliveryStatus(enum.StrEnum):
    """Where a notification is: pending -> sending -> sent | pending (retry) | failed; silenced is never sent."""

    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SILENCED = "silenced"


# --- the outbox ---------------------------------------------------------------------------------------------------


def enqueue_notifications(
    session: Session, config: NotificationConfig, events: Sequence[AlertEvent], *, now: datetime
) -> list[Notification]:
    """Record what each routed receiver should hear about ``events``: pending rows to send, silenced rows to show.

    Slack and webhook receivers get one grouped row for all their events of this call; PagerDuty one row per
    event. Duplicates (a trigger already notified, a resolve of something never notified) get no row.
    """
    routed: dict[str, list[AlertEvent]] = {}
    for event in events:
        for receiver in config.receivers_for(event.severity, event.kind):
            routed.setdefault(receiver.name, []).append(event)
    if not routed:
        return []
    silences = active_silences(session, now=now)
    created: list[Notification] = []
    for name, receiver_events in routed.items():
        receiver = config.receivers[name]
        states = _notified_states(session, receiver, receiver_events)
        to_send: list[AlertEvent] = []
        to_silence: list[tuple[AlertEvent, str]] = []
        for event in receiver_events:
            silence = next((s for s in silences if silence_matches(s.matchers, event)), None)
            decision = decide(event.kind, states[event.dedup_key], silenced=silence is not None)
            states[event.dedup_key] = decision.state
            if decision.action is Action.SEND:
                to_send.append(event)
            elif decision.action is Action.SILENCE:
                why = decision.reason or (f"silenced by silence {silence.id}" if silence else "silenced")
                to_silence.append((event, why))
        created.extend(_notifications(receiver, to_send, status=DeliveryStatus.PENDING, now=now))
        for group, why in _by_reason(receiver, to_silence):
            created.extend(_notifications(receiver, group, status=DeliveryStatus.SILENCED, now=now, why=why))
    session.add_all(created)
    session.flush()
    return created


def count_silenced(metrics: ControlPlaneMetrics, notifications: Iterable[Notification]) -> None:
    """Count silenced notifications in ``controlplane_notifications``; call it after the enqueue committed."""
    for notification in notifications:
        if notification.status == DeliveryStatus.SILENCED:
            metrics.notifications.labels(notification.receiver, "silenced").inc()


def count_silenced_on_commit(
    session: Session, metrics: ControlPlaneMetrics | None, notifications: Sequence[Notification]
) -> None:
    """Count the silenced ones among ``notifications`` once ``session`` commits: a refused or failed transaction
    silenced nothing."""
    if metrics is None or not any(row.status == DeliveryStatus.SILENCED for row in notifications):
        return

    def count(_: Any) -> None:
        count_silenced(metrics, notifications)

    orm_event.listen(session, "after_commit", count, once=True)


def _by_reason(receiver: Receiver, silenced: list[tuple[AlertEvent, str]]) -> list[tuple[list[AlertEvent], str]]:
    if not silenced:
        return []
    if not receiver.grouped:
        return [([event], why) for event, why in silenced]
    reasons = list(dict.fromkeys(why for _, why in silenced))
    return [([event for event, _ in silenced], "; ".join(reasons))]


def _notifications(
    receiver: Receiver, events: list[AlertEvent], *, status: DeliveryStatus, now: datetime, why: str | None = None
) -> list[Notification]:
    if not events:
        return []
    if not receiver.grouped:
        return [_notification(receiver, [event], status=status, now=now, why=why) for event in events]
    return [_notification(receiver, events, status=status, now=now, why=why)]


def _notification(
    receiver: Receiver, events: list[AlertEvent], *, status: DeliveryStatus, now: datetime, why: str | None
) -> Notification:
    body: dict[str, Any]
    if receiver.type == "pagerduty":
        body = pagerduty_event(events[0])
    elif receiver.type == "slack":
        body = slack_message(events)
    else:
        body = webhook_message(receiver.name, events)
    alerts = [{"dedup_key": e.dedup_key, "kind": e.kind, "rule": e.rule, "environment": e.environment} for e in events]
    return Notification(
        receiver=receiver.name,
        kind=_common([e.kind for e in events]) or "mixed",
        # A grouped row's key is for reading only; de-duplication reads `alerts`.
        dedup_key=bounded_dedup_key(", ".join(alert["dedup_key"] for alert in alerts)),
        # Column widths: an alert from Alertmanager's labels may be longer; `alerts` keeps the full values.
        rule=_clip(_common([e.rule for e in events]), 128),
        environment=_clip(_common([e.environment for e in events]), 64),
        severity=highest_severity(events)[:16],
        payload={"type": receiver.type, "body": body, "alerts": alerts},
        status=status,
        attempts=0,
        next_attempt_at=now,
        last_error=why,
        created_at=now,
        sent_at=None,
    )


def _common(values: list[str]) -> str | None:
    return values[0] if len(set(values)) == 1 else None


def _clip(value: str | None, width: int) -> str | None:
    return None if value is None else value[:width]


_FINAL = (DeliveryStatus.SENT.value, DeliveryStatus.FAILED.value, DeliveryStatus.SILENCED.value)


def delete_superseded_notifications(session: Session, *, before: datetime) -> int:
    """Delete finished notifications older than ``before`` that de-duplication can no longer read.

    De-duplication walks a receiver's rows for an alert newest first and stops at the first resolve or notified
    trigger (``_notified_states``). A row is superseded once every alert it carries has such a row newer than it;
    only those go, so pruning never makes a trigger be sent twice or a resolve be lost. Pending rows never go.
    """
    settled: set[tuple[str, str]] = set()
    superseded: list[int] = []
    rows = session.execute(
        select(
            Notification.id, Notification.receiver, Notification.status, Notification.payload, Notification.created_at
        )
        .order_by(Notification.id.desc())
        .execution_options(yield_per=500)
    )
    try:
        for row_id, receiver, status, payload, created_at in rows:
            alerts = payload.get("alerts", []) if isinstance(payload, dict) else []
            keys = [(receiver, str(alert.get("dedup_key"))) for alert in alerts]
            # A rollout step's key names that step alone and is never resolved: once old, nothing reads it again.
            announced = all(alert.get("kind") in ANNOUNCEMENT_KINDS for alert in alerts)
            if keys and status in _FINAL and created_at < before and (announced or all(key in settled for key in keys)):
                superseded.append(row_id)
            silenced = status == DeliveryStatus.SILENCED
            for key, alert in zip(keys, alerts, strict=True):
                if alert.get("kind") == "resolve" or not silenced:
                    settled.add(key)
    finally:
        rows.close()
    for start in range(0, len(superseded), 500):
        session.execute(delete(Notification).where(Notification.id.in_(superseded[start : start + 500])))
    return len(superseded)


def _notified_states(session: Session, receiver: Receiver, events: list[AlertEvent]) -> dict[str, Notified]:
    """What ``receiver`` last heard about each event's alert, read from its notifications newest first."""
    keys = {event.dedup_key for event in events}
    histories: dict[str, list[tuple[str, bool]]] = {key: [] for key in keys}
    undecided = set(keys)
    query = (
        select(Notification.kind, Notification.status, Notification.payload)
        .where(Notification.receiver == receiver.name)
        .order_by(Notification.id.desc())
        .execution_options(yield_per=200)
    )
    if receiver.grouped:
        # A grouped row's `rule` is set when all its alerts share it; NULL rows may carry any rule.
        query = query.where(or_(Notification.rule.in_({e.rule[:128] for e in events}), Notification.rule.is_(None)))
    else:
        query = query.where(Notification.dedup_key.in_({bounded_dedup_key(key) for key in keys}))
    result = session.execute(query)
    try:
        for _kind, status, payload in result:
            silenced = status == DeliveryStatus.SILENCED
            for alert in payload.get("alerts", []) if isinstance(payload, dict) else []:
                key = alert.get("dedup_key")
                if key not in undecided:
                    continue
                kind = str(alert.get("kind"))
                histories[key].append((kind, silenced))
                if kind == "resolve" or not silenced:
                    # Only a resolve or a notified trigger settles the state; the walk stops when all are settled.
                    undecided.discard(key)
            if not undecided:
                break
    finally:
        result.close()
    return {key: notified_state(history) for key, history in histories.items()}


# --- silences -----------------------------------------------------------------------------------------------------


def silence_state(silence: Silence, now: datetime) -> SilenceState:
    """``pending`` before it starts, ``active`` from starts_at until ends_at, then ``expired``."""
    if now < silence.starts_at:
        return "pending"
    return "active" if now < silence.ends_at else "expired"


def active_silences(session: Session, *, now: datetime) -> list[Silence]:
    """Silences in force at ``now`` (starts_at <= now < ends_at), oldest first."""
    query = select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now).order_by(Silence.id)
    return list(session.scalars(query))


def list_silences(session: Session, *, now: datetime, include_expired: bool = False) -> list[Silence]:
    """Silences not yet over (active or pending), newest first; with ``include_expired`` every silence."""
    query = select(Silence).order_by(Silence.id.desc())
    if not include_expired:
        query = query.where(Silence.ends_at > now)
    return list(session.scalars(query))


def get_silence(session: Session, silence_id: int) -> Silence:
    """The silence with this id, or 404 silence-not-found."""
    silence = session.get(Silence, silence_id)
    if silence is None:
        raise NotFound("silence-not-found", f"no silence with id {silence_id}", silence_id=silence_id)
    return silence


def create_silence(session: Session, *, request: SilenceCreate, actor: str, now: datetime) -> Silence:
    """Create a silence from ``starts_at`` (default now) to ``ends_at`` or for ``duration_seconds``; audited."""
    matchers = {name: value for name, value in msgspec.structs.asdict(request.matchers).items() if value is not None}
    if not matchers:
        raise _invalid("matchers", "name at least one matcher: rule, environment, pipeline, flag or severity")
    comment = request.comment.strip()
    if not comment:
        raise _invalid("comment", "say why the alerts are silenced")
    starts_at = _aware(request.starts_at, "starts_at") or now
    if (request.ends_at is None) == (request.duration_seconds is None):
        raise _invalid("ends_at", "give exactly one of `ends_at` or `duration_seconds`")
    try:
        ends_at = _aware(request.ends_at, "ends_at") or starts_at + timedelta(seconds=request.duration_seconds or 0)
    except OverflowError as error:
        raise _invalid("duration_seconds", "runs past the year 9999") from error
    if ends_at <= starts_at:
        raise _invalid("ends_at", f"must be after starts_at ({starts_at.isoformat()})")
    if ends_at <= now:
        raise _invalid("ends_at", f"already past ({ends_at.isoformat()}); a silence must end in the future")
    silence = Silence(
        matchers=matchers, starts_at=starts_at, ends_at=ends_at, created_by=actor, comment=comment, created_at=now
    )
    session.add(silence)
    session.flush()
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="silence.create",
        target_type="silence",
        target=str(silence.id),
        environment=matchers.get("environment"),
        reason=comment,
        after=_snapshot(silence),
    )
    return silence


def expire_silence(session: Session, *, silence_id: int, actor: str, now: datetime) -> Silence:
    """End a silence now (a pending one never starts); audited. An already expired silence is a conflict."""
    silence = get_silence(session, silence_id)
    if silence.ends_at <= now:
        raise Conflict(
            "silence-expired",
            f"silence {silence_id} already ended at {silence.ends_at.isoformat()}",
            silence_id=silence_id,
        )
    before = _snapshot(silence)
    silence.ends_at = now
    silence.starts_at = min(silence.starts_at, now)
    session.flush()
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="silence.expire",
        target_type="silence",
        target=str(silence.id),
        environment=silence.matchers.get("environment"),
        before=before,
        after=_snapshot(silence),
    )
    return silence


def _snapshot(silence: Silence) -> dict[str, Any]:
    return {
        "matchers": dict(silence.matchers),
        "starts_at": silence.starts_at.isoformat(),
        "ends_at": silence.ends_at.isoformat(),
        "comment": silence.comment,
    }


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise _invalid(name, "needs a time zone, e.g. 2026-11-01T12:00:00Z")
    return value


def _invalid(field: str, reason: str) -> InvalidInput:
    return InvalidInput("invalid-silence", f"`{field}`: {reason}", field=field)


# --- the notification log -----------------------------------------------------------------------------------------


def list_notifications(
    session: Session,
    *,
    status: str | None = None,
    receiver: str | None = None,
    rule: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[Notification]:
    """Notifications matching every given filter, newest first; ``before_id`` pages backwards."""
    query = select(Notification).order_by(Notification.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Notification.status == status)
    if receiver is not None:
        query = query.where(Notification.receiver == receiver)
    if rule is not None:
        query = query.where(Notification.rule == rule)
    if before_id is not None:
        query = query.where(Notification.id < before_id)
    return list(session.scalars(query))
