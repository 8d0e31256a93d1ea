"""Notifications end to end: enqueue in the database, deliver over real HTTP to a scripted receiver on loopback.

Time is the injected clock and jitter is injected, so retries and backoff are checked without sleeping.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from controlplane.db import session_scope
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig, parse_notification_config
from controlplane.notifications.jobs import deliver_due_notifications
from controlplane.notifications.messages import AlertEvent
from controlplane.notifications.models import Notification, Silence
from controlplane.notifications.service import count_silenced, enqueue_notifications
from tests.conftest import FakeClock
from tests.receivers import Answer, ScriptedReceiver, scripted_receiver

ROUTING_KEY = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    """A ScriptedReceiver served on 127.0.0.1 for the test."""
    with scripted_receiver() as running:
        yield running


# --- helpers ------------------------------------------------------------------------------------------------------


def configure(receiver: ScriptedReceiver, routes: str | None = None) -> NotificationConfig:
    """PagerDuty, Slack and a webhook on the scripted receiver; every severity goes to all three by default."""
    text = f"""
receivers:
  oncall: {{type: pagerduty, routing_key: "${{PD_KEY}}", url: "{receiver.url}/pd",
           change_url: "{receiver.url}/pd-change"}}
  chat: {{type: slack, url: "{receiver.url}/slack"}}
  hooks: {{type: webhook, url: "{receiver.url}/hook", headers: {{Authorization: "Bearer ${{HOOK_TOKEN}}"}}}}
routes: {routes or "[{receivers: [oncall, chat, hooks]}]"}
"""
    return parse_notification_config(text, environ={"PD_KEY": ROUTING_KEY, "HOOK_TOKEN": "hook-secret"})


def alert(
    kind: str = "trigger", rule: str = "upload-error-rate", clock: FakeClock | None = None, **kw: Any
) -> AlertEvent:
    fields: dict[str, Any] = {
        "kind": kind,
        "rule": rule,
        "pipeline": "reference-images",
        "environment": "production",
        "severity": "page",
        "summary": f"{rule} {kind} in production: 4.2% > 3% over 5m",
        "description": "measured 0.042 against ratio > 3% over 5m (1000 samples)",
        "at": clock() if clock else FakeClock().now,
        "flag": "enable-reference-images",
        "value": 0.042,
        "threshold": "3%",
        "op": ">",
        "window_seconds": 300.0,
        "runbook_url": "https://runbooks.example/upload",
    }
    fields.update(kw)
    return AlertEvent(**fields)


def enqueue(
    factory: sessionmaker[Session], config: NotificationConfig, clock: FakeClock, *events: AlertEvent
) -> list[Notification]:
    with session_scope(factory) as session:
        return enqueue_notifications(session, config, events, now=clock())


def notifications(factory: sessionmaker[Session], receiver: str | None = None) -> list[Notification]:
    with session_scope(factory) as session:
        query = select(Notification).order_by(Notification.id)
        if receiver is not None:
            query = query.where(Notification.receiver == receiver)
        return list(session.scalars(query))


def silence(factory: sessionmaker[Session], clock: FakeClock, hours: float = 2, **matchers: str) -> None:
    with session_scope(factory) as session:
        session.add(
            Silence(
                matchers=matchers,
                starts_at=clock(),
                ends_at=clock() + timedelta(hours=hours),
                created_by="test",
                comment="maintenance",
                created_at=clock(),
            )
        )


@dataclass
class Deliverer:
    """deliver_due_notifications with this test's database, clock, client and metrics."""

    factory: sessionmaker[Session]
    config: NotificationConfig
    clock: FakeClock
    client: httpx.Client
    metrics: ControlPlaneMetrics

    def __call__(self, jitter: Callable[[], float] = lambda: 0.0, **kw: Any) -> dict[str, int]:
        return deliver_due_notifications(
            self.factory, self.config, clock=self.clock, client=self.client, metrics=self.metrics, jitter=jitter, **kw
        )

    def counted(self, receiver: str, result: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "controlplane_notifications_total", {"receiver": receiver, "result": result}
        )
        return value or 0.0


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def deliver(
    session_factory: sessionmaker[Session], receiver: ScriptedReceiver, clock: FakeClock, http: httpx.Client
) -> Deliverer:
    return Deliverer(session_factory, configure(receiver), clock, http, ControlPlaneMetrics())


def statuses(rows: Sequence[Notification]) -> list[str]:
    return [row.status for row in rows]


# --- sending ------------------------------------------------------------------------------------------------------


def test_trigger_and_resolve_reach_each_receiver_type_in_its_own_format(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    assert deliver() == {"sent": 3, "retried": 0, "failed": 0}

    pd = receiver.bodies("/pd")
    assert pd[0]["routing_key"] == ROUTING_KEY
    assert pd[0]["event_action"] == "trigger"
    assert pd[0]["dedup_key"] == "controlplane/reference-images/upload-error-rate/production"
    assert pd[0]["payload"]["severity"] == "critical"
    assert receiver.bodies("/slack")[0]["text"].startswith("[FIRING] upload-error-rate")
    hook = next(r for r in receiver.requests if r.path == "/hook")
    assert hook.headers["Authorization"] == "Bearer hook-secret"
    assert hook.body["status"] == "firing" and hook.body["receiver"] == "hooks"

    clock.advance(timedelta(minutes=10))
    enqueue(session_factory, deliver.config, clock, alert("resolve", clock=clock))
    assert deliver()["sent"] == 3
    assert receiver.bodies("/pd")[1] == {
        "routing_key": ROUTING_KEY,
        "event_action": "resolve",
        "dedup_key": "controlplane/reference-images/upload-error-rate/production",
    }
    assert receiver.bodies("/hook")[1]["status"] == "resolved"

    rows = notifications(session_factory)
    assert statuses(rows) == ["sent"] * 6
    assert all(row.sent_at is not None and row.attempts == 1 and row.last_error is None for row in rows)
    assert deliver.counted("oncall", "sent") == 2


def test_stored_payloads_hold_no_secret(
    deliver: Deliverer, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    stored = json.dumps([row.payload for row in notifications(session_factory)])
    assert ROUTING_KEY not in stored
    assert "hook-secret" not in stored


def test_slack_and_webhook_get_one_grouped_message_and_pagerduty_one_event_per_alert(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    events = [alert(clock=clock), alert(rule="vision-errors", clock=clock), alert(rule="latency", clock=clock)]
    created = enqueue(session_factory, deliver.config, clock, *events)

    assert sorted(row.receiver for row in created) == ["chat", "hooks", "oncall", "oncall", "oncall"]
    deliver()
    assert len(receiver.bodies("/pd")) == 3
    assert len(receiver.bodies("/slack")) == 1
    assert receiver.bodies("/slack")[0]["text"].startswith("3 alerts: 3 firing")
    assert [a["rule"] for a in receiver.bodies("/hook")[0]["alerts"]] == [
        "upload-error-rate",
        "vision-errors",
        "latency",
    ]
    grouped = notifications(session_factory, "hooks")[0]
    assert grouped.rule is None and grouped.kind == "trigger" and grouped.severity == "page"


def test_routes_pick_receivers_by_severity(
    receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    config = configure(receiver, "[{severity: [page], receivers: [oncall]}, {receivers: [chat]}]")
    created = enqueue(
        session_factory, config, clock, alert(clock=clock), alert(rule="slow", severity="info", clock=clock)
    )
    assert {(row.receiver, row.rule) for row in created} == {("oncall", "upload-error-rate"), ("chat", "slow")}


# --- de-duplication -----------------------------------------------------------------------------------------------


def test_a_trigger_already_notified_is_not_queued_again_and_a_resolve_of_nothing_is_never_queued(
    deliver: Deliverer, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    assert enqueue(session_factory, deliver.config, clock, alert("resolve", clock=clock)) == []
    assert len(enqueue(session_factory, deliver.config, clock, alert(clock=clock))) == 3
    deliver()
    clock.advance(timedelta(seconds=30))
    # The evaluator may say "firing" again (or be restarted): nobody is told twice.
    assert enqueue(session_factory, deliver.config, clock, alert(clock=clock)) == []
    assert len(enqueue(session_factory, deliver.config, clock, alert("resolve", clock=clock))) == 3
    assert enqueue(session_factory, deliver.config, clock, alert("resolve", clock=clock)) == []
    # Firing again after the resolve is a new incident.
    assert len(enqueue(session_factory, deliver.config, clock, alert(clock=clock))) == 3


def test_a_rollback_lands_on_the_open_incident_as_a_trigger(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    enqueue(session_factory, deliver.config, clock, alert("rollback", summary="guard fired", clock=clock))
    deliver()
    first, rollback = receiver.bodies("/pd")
    assert rollback["event_action"] == "trigger"
    assert rollback["dedup_key"] == first["dedup_key"]
    assert rollback["payload"]["summary"] == "enable-reference-images rolled back in production: guard fired"


# --- retries ------------------------------------------------------------------------------------------------------


def test_500_then_429_with_retry_after_then_202_is_retried_then_sent(
    receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock, http: httpx.Client
) -> None:
    config = configure(receiver, "[{receivers: [oncall]}]")
    deliver = Deliverer(session_factory, config, clock, http, ControlPlaneMetrics())
    receiver.script("/pd", Answer(500, body=b"upstream down"), Answer(429, {"Retry-After": "30"}, b"slow down"))
    enqueue(session_factory, config, clock, alert(clock=clock))

    assert deliver() == {"sent": 0, "retried": 1, "failed": 0}
    [row] = notifications(session_factory)
    assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 1, clock())
    assert row.last_error == "attempt 1: HTTP 500: upstream down; retrying in 0s"

    # The receiver that asked for a retry is left alone for the rest of a run, so the next try is the next run.
    assert deliver() == {"sent": 0, "retried": 1, "failed": 0}
    [row] = notifications(session_factory)
    assert row.next_attempt_at == clock() + timedelta(seconds=30)
    assert row.last_error is not None and "HTTP 429: slow down" in row.last_error

    clock.advance(timedelta(seconds=29))
    assert deliver() == {"sent": 0, "retried": 0, "failed": 0}
    clock.advance(timedelta(seconds=1))
    assert deliver() == {"sent": 1, "retried": 0, "failed": 0}
    [row] = notifications(session_factory)
    assert (row.status, row.attempts, row.sent_at, row.last_error) == ("sent", 3, clock(), None)
    assert len(receiver.bodies("/pd")) == 3
    assert deliver.counted("oncall", "retried") == 2
    assert deliver.counted("oncall", "sent") == 1


def test_backoff_doubles_and_the_notification_fails_after_max_attempts(
    receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock, http: httpx.Client
) -> None:
    config = configure(receiver, "[{receivers: [oncall]}]")
    deliver = Deliverer(session_factory, config, clock, http, ControlPlaneMetrics())
    receiver.script("/pd", *[Answer(503)] * 4)
    enqueue(session_factory, config, clock, alert(clock=clock))

    delays = []
    for _ in range(3):
        deliver(jitter=lambda: 1.0, max_attempts=4)
        [row] = notifications(session_factory)
        delays.append((row.next_attempt_at - clock()).total_seconds())
        clock.advance(row.next_attempt_at - clock())
    assert delays == [1, 2, 4]

    assert deliver(jitter=lambda: 1.0, max_attempts=4) == {"sent": 0, "retried": 0, "failed": 1}
    [row] = notifications(session_factory)
    assert row.status == "failed" and row.attempts == 4
    assert row.last_error == 'gave up after 4 attempts: HTTP 503: {"status":"success","message":"Event processed"}'
    assert deliver(max_attempts=4) == {"sent": 0, "retried": 0, "failed": 0}
    assert deliver.counted("oncall", "failed") == 1


def test_a_400_fails_at_once_without_retry(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    receiver.script("/pd", Answer(400, body=b'{"status":"invalid event","errors":["routing_key invalid"]}'))
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))

    assert deliver() == {"sent": 2, "retried": 0, "failed": 1}
    [row] = notifications(session_factory, "oncall")
    assert row.status == "failed" and row.attempts == 1
    assert row.last_error is not None and "HTTP 400" in row.last_error and "routing_key invalid" in row.last_error
    assert deliver() == {"sent": 0, "retried": 0, "failed": 0}
    assert len(receiver.bodies("/pd")) == 1


def test_slack_answering_anything_but_200_is_a_failure(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    receiver.script("/slack", Answer(404, body=b"channel_not_found"))
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    deliver()
    [row] = notifications(session_factory, "chat")
    assert row.status == "failed" and row.last_error == "HTTP 404: channel_not_found"


def test_a_network_error_is_retried_and_the_url_never_reaches_the_log(
    session_factory: sessionmaker[Session], clock: FakeClock, http: httpx.Client
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T000/B000/secret-token"
    config = parse_notification_config(
        f"receivers: {{chat: {{type: slack, url: '{url}'}}}}\nroutes: [{{receivers: [chat]}}]"
    )
    enqueue(session_factory, config, clock, alert(clock=clock))

    deliver = Deliverer(session_factory, config, clock, http, ControlPlaneMetrics())
    assert deliver() == {"sent": 0, "retried": 1, "failed": 0}
    [row] = notifications(session_factory)
    assert row.status == "pending" and row.last_error is not None and "network error: ConnectError" in row.last_error
    assert "secret-token" not in row.last_error


def test_one_failing_receiver_does_not_hold_up_the_others(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    receiver.script("/pd", *[Answer(500)] * 10)
    events = [alert(rule=f"rule-{i}", clock=clock) for i in range(3)]
    enqueue(session_factory, deliver.config, clock, *events)

    assert deliver() == {"sent": 2, "retried": 1, "failed": 0}
    assert len(receiver.bodies("/slack")) == 1 and len(receiver.bodies("/hook")) == 1
    # The failing receiver was tried once this run; its other notifications wait their turn.
    assert len(receiver.bodies("/pd")) == 1
    assert statuses(notifications(session_factory, "oncall")) == ["pending"] * 3


def test_a_resolve_never_overtakes_the_trigger_it_resolves(
    receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock, http: httpx.Client
) -> None:
    config = configure(receiver, "[{receivers: [oncall]}]")
    deliver = Deliverer(session_factory, config, clock, http, ControlPlaneMetrics())
    receiver.script("/pd", Answer(503))
    enqueue(session_factory, config, clock, alert(clock=clock))
    deliver(jitter=lambda: 1.0)  # the trigger now waits 1 s
    enqueue(session_factory, config, clock, alert("resolve", clock=clock))

    assert deliver() == {"sent": 0, "retried": 0, "failed": 0}
    clock.advance(timedelta(seconds=1))
    assert deliver() == {"sent": 2, "retried": 0, "failed": 0}
    assert [body["event_action"] for body in receiver.bodies("/pd")] == ["trigger", "trigger", "resolve"]


def test_a_claim_abandoned_mid_send_is_taken_again_after_its_lease(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    with session_scope(session_factory) as session:
        # What a replica that died between claim and outcome leaves behind.
        session.execute(
            update(Notification).values(status="sending", attempts=1, next_attempt_at=clock() + timedelta(minutes=5))
        )
    assert deliver()["sent"] == 0
    clock.advance(timedelta(minutes=5))
    assert deliver()["sent"] == 3
    assert {row.attempts for row in notifications(session_factory)} == {2}


def test_a_receiver_removed_from_the_configuration_fails_its_queued_notifications(
    deliver: Deliverer, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    deliver.config = parse_notification_config("receivers: {}")
    assert deliver() == {"sent": 0, "retried": 0, "failed": 3}
    assert all("not in the notifications configuration" in (r.last_error or "") for r in notifications(session_factory))


# --- silences -----------------------------------------------------------------------------------------------------


def test_a_silenced_alert_is_logged_as_silenced_and_never_sent(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    silence(session_factory, clock, rule="upload-error-rate", environment="production")
    created = enqueue(
        session_factory, deliver.config, clock, alert(clock=clock), alert(environment="staging", clock=clock)
    )
    count_silenced(deliver.metrics, created)

    assert deliver()["sent"] == 3
    assert [body["dedup_key"] for body in receiver.bodies("/pd")] == [
        "controlplane/reference-images/upload-error-rate/staging"
    ]
    rows = notifications(session_factory)
    muted = [row for row in rows if row.status == "silenced"]
    assert sorted(row.receiver for row in muted) == ["chat", "hooks", "oncall"]
    assert all(row.environment == "production" and row.last_error == "silenced by silence 1" for row in muted)
    assert deliver.counted("chat", "silenced") == 1
    # A silenced alert firing again while silenced is not logged twice.
    assert enqueue(session_factory, deliver.config, clock, alert(clock=clock)) == []


def test_a_resolve_of_a_trigger_that_was_sent_goes_out_even_when_silenced(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    enqueue(session_factory, deliver.config, clock, alert(clock=clock))
    deliver()
    silence(session_factory, clock, environment="production")
    clock.advance(timedelta(minutes=5))
    created = enqueue(session_factory, deliver.config, clock, alert("resolve", clock=clock))

    assert statuses(created) == ["pending"] * 3
    deliver()
    assert [body["event_action"] for body in receiver.bodies("/pd")] == ["trigger", "resolve"]


def test_an_alert_silenced_while_firing_is_sent_when_it_fires_after_the_silence_ends(
    deliver: Deliverer, receiver: ScriptedReceiver, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    silence(session_factory, clock, hours=1, flag="enable-reference-images")
    assert statuses(enqueue(session_factory, deliver.config, clock, alert(clock=clock))) == ["silenced"] * 3
    # Its resolve is logged as silenced too (nobody heard of the trigger), and not sent.
    assert statuses(enqueue(session_factory, deliver.config, clock, alert("resolve", clock=clock))) == ["silenced"] * 3
    clock.advance(timedelta(hours=1))
    assert statuses(enqueue(session_factory, deliver.config, clock, alert(clock=clock))) == ["pending"] * 3
    deliver()
    assert [body["event_action"] for body in receiver.bodies("/pd")] == ["trigger"]
