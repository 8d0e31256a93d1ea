"""Draining the outbox: send due notifications, retry what may succeed later, and log every outcome.

One notification at a time: claim it (status ``sending``, a lease in ``next_attempt_at``, ``attempts`` + 1) and
commit; POST it with no transaction open; then record the outcome in a second transaction, only if the claim is
still ours (same status and attempt count). Why claims and not only "the leader runs it": the scheduler does run
this on the leader alone, but a replica that loses leadership mid-run, or a manual run, must not send a message
twice. Claims are taken under the control plane's write lock (``session_scope``), so two runners never claim the
same row; a runner that dies mid-send leaves a claim that becomes due again when its lease runs out.

Per receiver, notifications leave in the order they were created (a resolve never overtakes the trigger it
resolves): a row waits while an older row of the same receiver is pending or being sent. A receiver that asks for a
retry (429, 5xx, network error) is left alone for the rest of the run, so it cannot hold up the others.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

import httpx
from sqlalchemy import CursorResult, Engine, select, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from controlplane.db import READ_ONLY_OPTION, session_scope
from controlplane.notifications.config import NotificationConfig, PagerDutyReceiver, Receiver, WebhookReceiver
from controlplane.notifications.messages import is_change_event, with_routing_key
from controlplane.notifications.models import Notification
from controlplane.notifications.service import DeliveryStatus
from controlplane_client.retry import backoff_delay, retry_after_seconds

if TYPE_CHECKING:
    from controlplane.metrics import ControlPlaneMetrics

__all__ = [
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_CAP_SECONDS",
    "CLAIM_LEASE",
    "Outcome",
    "attempt_delivery",
    "classify_response",
    "deliver_due_notifications",
    "parse_retry_after",
    "retry_delay",
]

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 300.0
#: A Retry-After longer than this is read as this: a receiver must not park a page for a day.
RETRY_AFTER_LIMIT_SECONDS = 3600.0
#: How long a claim holds before another run may take the row again; longer than any HTTP client timeout.
CLAIM_LEASE = timedelta(minutes=5)
_ERROR_TEXT = 300
_IN_FLIGHT = (DeliveryStatus.PENDING, DeliveryStatus.SENDING)
logger = logging.getLogger(__name__)

Result = Literal["sent", "retried", "failed"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to: sent, worth retrying (maybe not before ``retry_after`` seconds), or failed."""

    result: Literal["sent", "retry", "failed"]
    error: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class _Claim:
    id: int
    receiver: str
    payload: Mapping[str, Any]
    attempts: int


def deliver_due_notifications(
    factory: sessionmaker[Session],
    config: NotificationConfig,
    *,
    clock: Callable[[], datetime],
    client: httpx.Client,
    metrics: ControlPlaneMetrics | None = None,
    jitter: Callable[[], float] = random.random,
    max_attempts: int = 8,
    batch: int = 100,
) -> dict[str, int]:
    """Send up to ``batch`` due notifications; return how many were sent, retried and failed. Never raises for a
    receiver's failure (database errors do raise)."""
    counts: dict[str, int] = {"sent": 0, "retried": 0, "failed": 0}
    if not _anything_due(factory, now=clock()):
        return counts
    backing_off: set[str] = set()
    for _ in range(batch):
        claim = _claim_next(factory, now=clock(), skip=backing_off)
        if claim is None:
            break
        outcome = attempt_delivery(claim.receiver, claim.payload, config, client, now=clock())
        result = _record(factory, claim, outcome, now=clock(), jitter=jitter, max_attempts=max_attempts)
        if result is None:
            continue
        if result == "retried":
            backing_off.add(claim.receiver)
        counts[result] += 1
        if metrics is not None:
            metrics.notifications.labels(claim.receiver, result).inc()
    return counts


def _anything_due(factory: sessionmaker[Session], *, now: datetime) -> bool:
    # Most runs find nothing to send: look without the write lock a claim takes, so an idle outbox costs a read.
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        return True
    query = select(Notification.id).where(Notification.status.in_(_IN_FLIGHT), Notification.next_attempt_at <= now)
    with Session(bind.execution_options(**{READ_ONLY_OPTION: True})) as session:
        return session.scalar(query.limit(1)) is not None


def _claim_next(factory: sessionmaker[Session], *, now: datetime, skip: set[str]) -> _Claim | None:
    older = aliased(Notification)
    earlier_in_flight = (
        select(older.id)
        .where(older.receiver == Notification.receiver, older.id < Notification.id, older.status.in_(_IN_FLIGHT))
        .exists()
    )
    query = (
        select(Notification)
        .where(Notification.status.in_(_IN_FLIGHT), Notification.next_attempt_at <= now, ~earlier_in_flight)
        .order_by(Notification.next_attempt_at, Notification.id)
        .limit(1)
    )
    if skip:
        query = query.where(Notification.receiver.not_in(skip))
    with session_scope(factory) as session:
        row = session.scalar(query)
        if row is None:
            return None
        row.status = DeliveryStatus.SENDING
        row.attempts += 1
        row.next_attempt_at = now + CLAIM_LEASE
        return _Claim(row.id, row.receiver, dict(row.payload), row.attempts)


def _record(
    factory: sessionmaker[Session],
    claim: _Claim,
    outcome: Outcome,
    *,
    now: datetime,
    jitter: Callable[[], float],
    max_attempts: int,
) -> Result | None:
    result: Result
    values: dict[str, Any]
    if outcome.result == "sent":
        result, values = "sent", {"status": DeliveryStatus.SENT, "sent_at": now, "last_error": None}
    elif outcome.result == "retry" and claim.attempts < max_attempts:
        delay = retry_delay(claim.attempts, jitter=jitter(), retry_after=outcome.retry_after)
        error = f"attempt {claim.attempts}: {outcome.error}; retrying in {delay.total_seconds():g}s"
        result = "retried"
        values = {"status": DeliveryStatus.PENDING, "next_attempt_at": now + delay, "last_error": error}
    else:
        failure = outcome.error or "failed"
        if outcome.result == "retry":
            failure = f"gave up after {claim.attempts} attempts: {failure}"
        result, values = "failed", {"status": DeliveryStatus.FAILED, "last_error": failure}
    with session_scope(factory) as session:
        statement = (
            update(Notification)
            .where(
                Notification.id == claim.id,
                Notification.status == DeliveryStatus.SENDING,
                Notification.attempts == claim.attempts,
            )
            .values(**values)
        )
        updated = cast(CursorResult[Any], session.execute(statement)).rowcount
    if updated == 0:
        # Our lease ran out and another run took the row: its outcome is the one that counts.
        logger.warning("notification %s to %s: claim lost before its outcome was recorded", claim.id, claim.receiver)
        return None
    if result != "sent":
        logger.warning("notification %s to %s %s: %s", claim.id, claim.receiver, result, values["last_error"])
    return result


def attempt_delivery(
    receiver_name: str, payload: Mapping[str, Any], config: NotificationConfig, client: httpx.Client, *, now: datetime
) -> Outcome:
    """POST one stored notification to its receiver as configured now; never raises."""
    receiver = config.receivers.get(receiver_name)
    if receiver is None:
        return Outcome("failed", f"receiver `{receiver_name}` is not in the notifications configuration")
    if payload.get("type") != receiver.type or not isinstance(payload.get("body"), dict):
        stored = payload.get("type")
        return Outcome("failed", f"receiver `{receiver_name}` is now of type {receiver.type}, not {stored}")
    url, headers, body = _request(receiver, payload["body"])
    try:
        response = client.post(url, json=body, headers=headers)
    except httpx.TransportError as error:
        return Outcome("retry", _redact(f"network error: {type(error).__name__}: {error}", url))
    except Exception as error:
        logger.exception("notification to %s could not be sent", receiver_name)
        return Outcome("failed", _redact(f"cannot send: {type(error).__name__}: {error}", url))
    return classify_response(
        receiver.type, response.status_code, response.headers.get("retry-after"), response.text, now=now
    )


def _request(receiver: Receiver, body: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    # The secrets live only in the configuration: they join the stored body at the last moment.
    if isinstance(receiver, PagerDutyReceiver):
        # Rollout steps are Change Events: their own endpoint, where they record a change and page nobody.
        url = receiver.change_url if is_change_event(body) else receiver.url
        return url, {}, with_routing_key(body, receiver.routing_key)
    if isinstance(receiver, WebhookReceiver):
        return receiver.url, dict(receiver.headers), body
    return receiver.url, {}, body


def classify_response(receiver_type: str, status: int, retry_after: str | None, text: str, *, now: datetime) -> Outcome:
    """Sent on 2xx (Slack: only 200); retry on 429 and 5xx, after Retry-After when given; fail on anything else."""
    if status == 200 or (receiver_type != "slack" and 200 <= status < 300):
        return Outcome("sent")
    error = f"HTTP {status}: {' '.join(text.split())[:_ERROR_TEXT]}".rstrip(": ")
    if status == 429 or status >= 500:
        return Outcome("retry", error, parse_retry_after(retry_after, now=now))
    if receiver_type == "slack" and 200 <= status < 300:
        error += " (Slack answers 200 to a message it accepted)"
    return Outcome("failed", error)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date); None when absent or unreadable."""
    return retry_after_seconds(value, now=now)


def retry_delay(attempts: int, *, jitter: float, retry_after: float | None = None) -> timedelta:
    """Exponential backoff with full jitter after ``attempts`` failed attempts, never sooner than Retry-After.

    ceiling = min(300 s, 1 s * 2 ** (attempts - 1)); delay = jitter * ceiling, with jitter in [0, 1].
    """
    seconds = backoff_delay(attempts, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS, random=lambda: jitter)
    if retry_after is not None:
        seconds = max(seconds, min(retry_after, RETRY_AFTER_LIMIT_SECONDS))
    return timedelta(seconds=seconds)


def _redact(text: str, url: str) -> str:
    # Slack and webhook URLs carry their secret in the path; an exception's text must not copy it into the log.
    return text.replace(url, "<receiver url>")
