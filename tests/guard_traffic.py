"""A small guarded pipeline for the shadow-guard and replay tests: its definition, and a driver that applies it,
sends traffic through the HTTP API at the fake clock's time and runs the alert tick as the leader does."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.guarding.jobs import evaluate_alert_rules
from controlplane.notifications.config import load_notification_config
from controlplane.settings import Settings
from tests.conftest import FakeClock

PIPELINE = "checkout"
FLAG = "checkout-v2"

#: A flag whose production stages are guarded by an enforced and a shadow error-rate rule (the shadow one stricter),
#: and rules of each kind a replay reads: plain ratio and mean, sequential ratio, and a streak (which it refuses).
DEFINITION = textwrap.dedent(
    """\
    pipeline: checkout
    flags:
      - key: checkout-v2
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        plan:
          rollback_policy: "off"
          auto_rollback: true
          environments:
            - environment: production
              stages:
                - {percentage: 10, guards: [error-rate, error-rate-strict]}
                - {percentage: 100, guards: [error-rate, error-rate-strict]}
    events:
      - name: http_request
        outcomes: [ok, failed]
        labels:
          status_class: {values: [2xx, 5xx]}
        value: {name: duration, unit: seconds}
    rules:
      - name: error-rate
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.2
        window: 1m
        min_samples: 10
        severity: page
      - name: error-rate-strict
        description: The stricter line, watched before it is trusted.
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.05
        window: 1m
        min_samples: 10
        severity: page
        mode: shadow
      - name: error-rate-sequential
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.05
        confidence: 0.99
        window: 1m
        min_samples: 10
        severity: ticket
      - name: slow-requests
        kind: mean
        event: http_request
        op: ">"
        threshold: 1
        window: 1m
        min_samples: 10
        severity: ticket
      - name: failure-streak
        kind: streak
        event: http_request
        outcome: failed
        op: ">="
        threshold: 5
        window: 0
        severity: ticket
    """
)


def requests(count: int, status_class: str, at: datetime, *, duration: float = 0.2) -> list[dict[str, Any]]:
    """``count`` production requests served the flag's `on` variant at ``at``."""
    return [
        {
            "type": "http_request",
            "time": at.isoformat(),
            "environment": "production",
            "variant": "on",
            "outcome": "failed" if status_class == "5xx" else "ok",
            "labels": {"status_class": status_class},
            "value": duration,
        }
        for _ in range(count)
    ]


#: Every notification to one on-call webhook nobody answers (the tests read the outbox, not a receiver).
ONCALL_WEBHOOK = """
receivers:
  oncall:
    type: webhook
    url: http://127.0.0.1:9/hook
routes:
  - severity: [page, ticket, info]
    receivers: [oncall]
"""


def notifying_settings(database_url: str, folder: Path, notifications: str = ONCALL_WEBHOOK) -> Settings:
    """Settings of an app under test without its scheduler, notifying as the ``notifications`` file says."""
    path = folder / "notifications.yaml"
    path.write_text(notifications)
    return Settings(
        database_url=database_url, scheduler_enabled=False, replica_id="test-replica", notifications_file=path
    )


class GuardedTraffic:
    """The control plane driven like production: HTTP for people and the pipeline, the alert tick on the clock."""

    def __init__(
        self,
        client: httpx.Client,
        clock: FakeClock,
        engine: Engine,
        settings: Settings,
        make_token: Callable[..., str],
    ) -> None:
        self.client = client
        self.clock = clock
        self.factory = sessionmaker(engine, expire_on_commit=False)
        self.settings = settings
        self.admin = {"Authorization": f"Bearer {make_token(Role.ADMIN, name='admin')}"}
        self.operator = {"Authorization": f"Bearer {make_token(Role.OPERATOR, name='sre-alice')}"}
        self.viewer = {"Authorization": f"Bearer {make_token(Role.VIEWER, name='reader')}"}
        self.ingest = {"Authorization": f"Bearer {make_token(Role.INGEST, name='checkout')}"}

    def apply(self, text: str = DEFINITION) -> None:
        response = self.client.post(
            "/api/v1/definitions/apply", headers=self.admin, json={"content": text, "source": "checkout.yaml"}
        )
        assert response.status_code == 200, response.text

    def send(self, events: list[dict[str, Any]]) -> None:
        body = {"batch_id": f"b-{uuid.uuid4().hex}", "pipeline": PIPELINE, "events": events}
        response = self.client.post("/api/v1/events", headers=self.ingest, json=body)
        assert response.status_code == 200, response.text

    def evaluate(self) -> None:
        evaluate_alert_rules(
            self.factory,
            environments=self.settings.environments,
            clock=self.clock,
            notifications=lambda: load_notification_config(self.settings.notifications_file),
            window_size=self.settings.telemetry_window,
        )

    def run(self, errors: Sequence[tuple[int, int]], *, slow: Sequence[int] = (), step: int = 10) -> list[datetime]:
        """Per tick, send (good, bad) requests at the clock's time (slow ticks take 3 s each), run the alert tick,
        then move the clock ``step`` seconds; the times evaluated."""
        times = []
        for tick, (good, bad) in enumerate(errors):
            duration = 3.0 if tick in slow else 0.2
            now = self.clock()
            # The failures first: the streak rule sees the tick end on a success.
            self.send(requests(bad, "5xx", now, duration=duration) + requests(good, "2xx", now, duration=duration))
            self.evaluate()
            times.append(now)
            self.clock.advance(timedelta(seconds=step))
        return times

    def alerts(self) -> dict[tuple[str, str], dict[str, Any]]:
        response = self.client.get("/api/v1/alerts", headers=self.viewer)
        assert response.status_code == 200, response.text
        return {(alert["rule"], alert["environment"]): alert for alert in response.json()}

    def history(self, rule: str) -> list[dict[str, Any]]:
        """The rule's transitions in production, oldest first."""
        response = self.client.get(
            "/api/v1/alerts/history",
            headers=self.viewer,
            params={"rule": rule, "environment": "production", "limit": 1000},
        )
        assert response.status_code == 200, response.text
        return list(reversed(response.json()))

    def rollout(self) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/flags/{FLAG}/environments/production/rollout", headers=self.operator)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def operate(self, operation: str, **body: Any) -> httpx.Response:
        revision = self.rollout()["revision"]
        return self.client.post(
            f"/api/v1/flags/{FLAG}/environments/production/rollout/{operation}",
            headers=self.operator,
            json={"expected_revision": revision, **body},
        )
