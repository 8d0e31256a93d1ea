"""The story the product exists for: a guarded rollout at production 10%, events through the HTTP API, the
upload error rate crosses 3% and pages, the service's own failures (5xx) show a breach at 99% confidence, the guard
fires, the flag is rolled back, on-call gets a PagerDuty trigger and later a resolve, and the audit log tells it all.
The same rollback through Alertmanager's webhook."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.guarding.jobs import evaluate_alert_rules
from controlplane.notifications.config import load_notification_config
from controlplane.notifications.jobs import deliver_due_notifications
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, FakeClock, tick_rollouts
from tests.receivers import ScriptedReceiver, scripted_receiver

FLAG = "enable-reference-images"
PIPELINE = "reference-images"


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    with scripted_receiver() as running:
        yield running


@pytest.fixture
def notifications_file(tmp_path: Path, receiver: ScriptedReceiver) -> Path:
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"""
receivers:
  oncall:
    type: pagerduty
    routing_key: "0123456789abcdef0123456789abcdef"
    url: {receiver.url}/v2/enqueue
routes:
  - severity: [page, ticket]
    receivers: [oncall]
"""
    )
    return path


@pytest.fixture
def settings(database_url: str, notifications_file: Path) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        replica_id="test-replica",
        notifications_file=notifications_file,
    )


def upload_requests(count: int, status_class: str, at: datetime, variant: str = "on") -> list[dict[str, Any]]:
    """``count`` upload requests answered with ``status_class``, served ``variant``, in production."""
    return [
        {
            "type": "http_request",
            "time": at.isoformat(),
            "environment": "production",
            "variant": variant,
            "labels": {"route": "upload_reference_image", "status_class": status_class},
            "value": 0.2,
        }
        for _ in range(count)
    ]


class Story:
    """The control plane under test, driven like production: HTTP for people and pipelines, jobs on the clock."""

    def __init__(
        self,
        client: TestClient[Litestar],
        clock: FakeClock,
        engine: Engine,
        settings: Settings,
        make_token: Callable[..., str],
    ) -> None:
        self.client = client
        self.clock = clock
        self.factory = sessionmaker(engine, expire_on_commit=False)
        self.settings = settings
        self.operator = {"Authorization": f"Bearer {make_token(Role.OPERATOR, name='sre-alice')}"}
        self.ingest = {"Authorization": f"Bearer {make_token(Role.INGEST, name='pipeline')}"}
        self.admin = {"Authorization": f"Bearer {make_token(Role.ADMIN, name='admin')}"}
        self.app_token = {"Authorization": f"Bearer {make_token(Role.EVALUATE, name='app', environment='production')}"}

    def apply(self) -> None:
        text = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
        response = self.client.post(
            "/api/v1/definitions/apply", headers=self.admin, json={"content": text, "source": "reference-images.yaml"}
        )
        assert response.status_code == 200, response.text

    def send(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        body = {"batch_id": f"b-{uuid.uuid4().hex}", "pipeline": PIPELINE, "events": events}
        response = self.client.post("/api/v1/events", headers=self.ingest, json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def evaluate(self) -> None:
        evaluate_alert_rules(
            self.factory,
            environments=self.settings.environments,
            clock=self.clock,
            notifications=lambda: load_notification_config(self.settings.notifications_file),
            window_size=self.settings.telemetry_window,
        )

    def deliver(self) -> dict[str, int]:
        with httpx.Client(timeout=5) as http:
            return deliver_due_notifications(
                self.factory,
                load_notification_config(self.settings.notifications_file),
                clock=self.clock,
                client=http,
            )

    def rollout(self) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/flags/{FLAG}/environments/production/rollout", headers=self.operator)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def start_production(self) -> dict[str, Any]:
        revision = self.rollout()["revision"]
        response = self.client.post(
            f"/api/v1/flags/{FLAG}/environments/production/rollout/start",
            headers=self.operator,
            json={"expected_revision": revision, "force": True, "reason": "hotfix canary straight to production"},
        )
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status


@pytest.fixture
def story(
    client: TestClient[Litestar], clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]
) -> Story:
    return Story(client, clock, engine, settings, make_token)


def test_guard_rolls_back_at_3_percent_errors_and_pages_then_resolves(story: Story, receiver: ScriptedReceiver) -> None:
    story.apply()
    started = story.start_production()
    assert (started["state"], started["percentage"]) == ("running", 10)

    # Healthy traffic: 6 errors in 297 requests (2.02%) is under the 3% line.
    story.send(upload_requests(291, "2xx", story.clock()) + upload_requests(6, "5xx", story.clock()))
    story.evaluate()
    assert story.rollout()["state"] == "running"
    alerts = {
        (a["rule"], a["environment"]): a for a in story.client.get("/api/v1/alerts", headers=story.operator).json()
    }
    assert alerts[("upload-error-rate", "production")]["state"] == "inactive"
    assert alerts[("upload-error-rate", "production")]["value"] == pytest.approx(6 / 297)

    # Exactly 3% (9 of 300 within the window) still does not fire a `> 3%` rule.
    story.clock.advance(timedelta(seconds=10))
    story.send(upload_requests(3, "4xx", story.clock()))
    story.evaluate()
    assert story.rollout()["state"] == "running"
    # Then cross it: 21 of 312. upload-error-rate fires and pages, but it guards no stage (users' refused files
    # move it too): the rollout runs on.
    story.send(upload_requests(12, "5xx", story.clock()))
    story.clock.advance(timedelta(seconds=1))
    story.evaluate()
    assert story.rollout()["state"] == "running"
    alerts = {
        (a["rule"], a["environment"]): a for a in story.client.get("/api/v1/alerts", headers=story.operator).json()
    }
    assert alerts[("upload-error-rate", "production")]["state"] == "firing"
    # The guard, upload-failure-rate (5xx only, at 99% confidence), decides on closed 10-second windows: once the
    # window of the 12 failures closes, 12 of its 15 requests are 5xx and the statistic shows a breach.
    story.clock.advance(timedelta(seconds=9))
    story.evaluate()

    status = story.rollout()
    assert status["state"] == "rolled_back"
    assert status["serving_percentage"] == 0
    # What clients evaluate: the replica's configuration feed (which the stream follows) serves off to everyone.
    story.client.app.state.feed.refresh()
    evaluation = story.client.post(
        f"/ofrep/v1/evaluate/flags/{FLAG}",
        headers=story.app_token,
        json={"context": {"targetingKey": "user-1"}},
    )
    assert evaluation.status_code == 200, evaluation.text
    assert (evaluation.json()["value"], evaluation.json()["variant"]) == (False, "off")

    audit = story.client.get(
        "/api/v1/audit", headers=story.admin, params={"flag": FLAG, "environment": "production"}
    ).json()
    actions = [(record["action"], record["actor"]) for record in audit]
    assert ("rollout.rollback", "controlplane") in actions
    assert ("rollout.start", "sre-alice") in actions
    rollback = next(record for record in audit if record["action"] == "rollout.rollback")
    assert "upload-failure-rate" in rollback["reason"]
    assert "> 0.03 over 5m at 99% confidence" in rollback["reason"]
    assert "18/312" in rollback["reason"]  # the measured value, in events: the 5xx among the uploads
    assert rollback["before"]["percentage"] == 10 and rollback["after"]["percentage"] == 0

    history = story.client.get(
        "/api/v1/alerts/history",
        headers=story.operator,
        params={"rule": "upload-error-rate", "environment": "production"},
    ).json()
    fired = next(item for item in history if item["to_state"] == "firing")
    assert fired["threshold"] == "0.03" and fired["op"] == ">" and fired["window_seconds"] == 300
    assert fired["value"] == pytest.approx(21 / 312)
    guard_history = story.client.get(
        "/api/v1/alerts/history",
        headers=story.operator,
        params={"rule": "upload-failure-rate", "environment": "production"},
    ).json()
    fired = next(item for item in guard_history if item["to_state"] == "firing")
    assert fired["threshold"] == "0.03" and fired["op"] == ">" and fired["window_seconds"] == 300
    assert fired["value"] == pytest.approx(18 / 312)

    delivered = story.deliver()
    assert delivered.get("sent", 0) >= 1
    pages = receiver.bodies("/v2/enqueue")
    triggers = [page for page in pages if page["event_action"] == "trigger"]
    error_rate = [page for page in triggers if page["dedup_key"].endswith("/upload-error-rate/production")]
    assert error_rate, pages
    assert error_rate[0]["routing_key"] == "0123456789abcdef0123456789abcdef"
    assert error_rate[0]["payload"]["severity"] == "critical"
    assert "upload-error-rate" in error_rate[0]["payload"]["summary"]
    assert [page for page in triggers if page["dedup_key"].endswith("/upload-failure-rate/production")]

    # Recovery: the bad minutes leave the 5-minute window, healthy traffic continues, keep_firing_for (2m) runs out.
    story.clock.advance(timedelta(minutes=6))
    story.send(upload_requests(100, "2xx", story.clock(), variant="off"))
    story.evaluate()  # first healthy measurement: still firing (keep_firing_for)
    story.clock.advance(timedelta(minutes=2))
    story.send(upload_requests(100, "2xx", story.clock(), variant="off"))
    story.evaluate()
    story.deliver()
    resolves = [
        page
        for page in receiver.bodies("/v2/enqueue")
        if page["event_action"] == "resolve" and page["dedup_key"] == error_rate[0]["dedup_key"]
    ]
    assert len(resolves) == 1
    assert set(resolves[0]) == {"routing_key", "dedup_key", "event_action"}
    transitions = [
        item["to_state"]
        for item in reversed(
            story.client.get(
                "/api/v1/alerts/history",
                headers=story.operator,
                params={"rule": "upload-error-rate", "environment": "production"},
            ).json()
        )
    ]
    assert transitions[-2:] == ["firing", "inactive"]


def alertmanager_payload(status: str, flag: str = FLAG, environment: str = "production") -> dict[str, Any]:
    """A webhook body in the shape Alertmanager 0.25 really sends (captured; see reference/observability.md)."""
    alert = {
        "status": status,
        "labels": {
            "alertname": "UploadErrorRateHigh",
            "environment": environment,
            "flag": flag,
            "pipeline": PIPELINE,
            "severity": "page",
        },
        "annotations": {
            "runbook_url": "https://runbooks.example.com/reference-images#upload-error-rate",
            "summary": "Upload error rate above 3%",
            "description": "Upload error ratio is 6.7% over 5m (threshold 3%)",
        },
        "startsAt": "2026-11-22T20:53:58.591Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-22T21:03:58.591Z",
        "generatorURL": "http://vm:19090/graph?g0.expr=vector%281%29&g0.tab=1",
        "fingerprint": "4fa24d0befaef601",
    }
    return {
        "receiver": "rollback-webhook",
        "status": status,
        "alerts": [alert],
        "groupLabels": {"alertname": "UploadErrorRateHigh", "flag": flag},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://vm:19093",
        "version": "4",
        "groupKey": '{}:{alertname="UploadErrorRateHigh", flag="enable-reference-images"}',
        "truncatedAlerts": 0,
    }


def test_alertmanager_webhook_rolls_the_flag_back_once(story: Story, receiver: ScriptedReceiver) -> None:
    story.apply()
    story.start_production()
    hook = {"Authorization": story.operator["Authorization"], "User-Agent": "Alertmanager/0.25.0"}

    first = story.client.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("firing"))
    assert first.status_code == 200, first.text
    assert [item["action"] for item in first.json()] == ["rolled_back"]
    assert story.rollout()["state"] == "rolled_back"

    # Alertmanager re-sends whole groups: the second delivery changes nothing.
    again = story.client.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("firing"))
    assert [item["action"] for item in again.json()] == ["already_rolled_back"]
    resolved = story.client.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("resolved"))
    assert [item["action"] for item in resolved.json()] == ["ignored_resolved"]

    audit = story.client.get(
        "/api/v1/audit", headers=story.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    assert len(audit) == 1
    assert audit[0]["actor"] == "sre-alice"  # the token Alertmanager was configured with
    assert "UploadErrorRateHigh" in audit[0]["reason"] and "4fa24d0befaef601" in audit[0]["reason"]

    story.deliver()
    assert any(page["event_action"] == "trigger" for page in receiver.bodies("/v2/enqueue"))


def test_alertmanager_webhook_refuses_what_it_cannot_act_on(story: Story) -> None:
    story.apply()
    unlabelled = alertmanager_payload("firing")
    del unlabelled["alerts"][0]["labels"]["flag"]
    response = story.client.post("/api/v1/alertmanager/webhook", headers=story.operator, json=unlabelled)
    assert [item["action"] for item in response.json()] == ["ignored_unlabelled"]

    not_running = story.client.post(
        "/api/v1/alertmanager/webhook", headers=story.operator, json=alertmanager_payload("firing")
    )
    assert [item["action"] for item in not_running.json()] == ["no_rollout"]

    unknown = story.client.post(
        "/api/v1/alertmanager/webhook", headers=story.operator, json=alertmanager_payload("firing", flag="nope")
    )
    assert [item["action"] for item in unknown.json()] == ["refused"]

    wrong_version = alertmanager_payload("firing")
    wrong_version["version"] = "3"
    refused = story.client.post("/api/v1/alertmanager/webhook", headers=story.operator, json=wrong_version)
    assert refused.status_code == 422
    viewer = story.client.post(
        "/api/v1/alertmanager/webhook", headers=story.ingest, json=alertmanager_payload("firing")
    )
    assert viewer.status_code == 403


def test_a_rendered_guard_alert_acts_only_while_its_rule_guards_the_current_stage_and_is_plain(story: Story) -> None:
    story.apply()
    story.start_production()

    def guard_alert(rule: str) -> dict[str, Any]:
        payload = alertmanager_payload("firing")
        payload["alerts"][0]["labels"] |= {"guard": "true", "rule": rule}
        return payload

    # review-failed-rate is a rule of the definition but guards no stage of production.
    elsewhere = story.client.post(
        "/api/v1/alertmanager/webhook", headers=story.operator, json=guard_alert("review-failed-rate")
    )
    assert elsewhere.status_code == 200, elsewhere.text
    (outcome,) = elsewhere.json()
    assert outcome["action"] == "not_a_stage_guard"
    assert "`review-failed-rate` does not guard stage 1" in outcome["detail"]
    assert story.rollout()["state"] == "running"

    # upload-error-rate pages, but guards no stage since users' refused files move it.
    paging = story.client.post(
        "/api/v1/alertmanager/webhook", headers=story.operator, json=guard_alert("upload-error-rate")
    )
    assert [item["action"] for item in paging.json()] == ["not_a_stage_guard"]
    assert story.rollout()["state"] == "running"

    # upload-failure-rate guards the stage, at 99% confidence: Prometheus's alert compares the plain value, so the
    # control plane's own test decides (a plain guard's alert rolls back: tests/integration/test_shadow_guards.py).
    guarding = story.client.post(
        "/api/v1/alertmanager/webhook", headers=story.operator, json=guard_alert("upload-failure-rate")
    )
    assert [item["action"] for item in guarding.json()] == ["sequential_guard"]
    assert story.rollout()["state"] == "running"


def test_advance_is_refused_while_a_guard_lacks_data_unless_forced(story: Story) -> None:
    story.apply()
    started = story.start_production()
    story.evaluate()  # no traffic yet: every guard lacks data

    refused = story.client.post(
        f"/api/v1/flags/{FLAG}/environments/production/rollout/advance",
        headers=story.operator,
        json={"expected_revision": started["revision"], "reason": "looks fine"},
    )
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["type"].endswith("/guard-holding")
    assert "upload-failure-rate` lacks data" in body["detail"]
    assert "needs 500" in body["detail"]  # the stage's sample minimum
    status = story.rollout()
    assert status["gates"] == "holding"
    assert {guard["rule"]: guard["state"] for guard in status["guards"]}["upload-failure-rate"] == "insufficient_data"

    forced = story.client.post(
        f"/api/v1/flags/{FLAG}/environments/production/rollout/advance",
        headers=story.operator,
        json={"expected_revision": started["revision"], "reason": "manual QA sign-off", "force": True},
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["percentage"] == 50
    audit = story.client.get(
        "/api/v1/audit", headers=story.admin, params={"flag": FLAG, "action": "rollout.advance"}
    ).json()
    assert "forced past: guard `upload-failure-rate` lacks data" in audit[0]["reason"]


def test_scheduled_tick_holds_a_baked_stage_while_guards_hold(story: Story) -> None:

    story.apply()
    story.start_production()
    story.evaluate()
    story.clock.advance(timedelta(hours=2))  # the 1h bake is long over
    counts = tick_rollouts(story.factory, story.settings.environments, story.clock)
    assert counts["advanced"] == 0
    assert story.rollout()["percentage"] == 10
