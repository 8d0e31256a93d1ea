"""Rollout steps and progress deadlines told to on-call: operations over the HTTP API and the leader's tick on the
injected clock, the outbox in the database, delivery over real HTTP to a scripted receiver on loopback (PagerDuty,
Slack and a webhook), on both backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.announcements import NotificationAnnouncer
from controlplane.api.roles import Role
from controlplane.db import session_scope
from controlplane.notifications.config import load_notification_config
from controlplane.notifications.jobs import deliver_due_notifications
from controlplane.notifications.service import delete_superseded_notifications
from controlplane.rollouts.models import Rollout as RolloutRow
from controlplane.rollouts.service import _claim_deadline
from controlplane.rollouts.status import to_machine
from controlplane.settings import Settings
from controlplane.ui.session import csrf_token
from tests.conftest import REPO_ROOT, FakeClock, problem, tick_rollouts
from tests.receivers import ScriptedReceiver, scripted_receiver

FLAG = "enable-reference-images"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
Client = TestClient[Litestar]


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
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{receiver.url}/v2/enqueue"}}
  deploys: {{type: slack, url: "{receiver.url}/slack"}}
  hooks: {{type: webhook, url: "{receiver.url}/hook"}}
routes:
  - {{kind: rollout, receivers: [oncall, deploys, hooks]}}
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


class Desk:
    """An operator's desk: the rollout over HTTP, the notification log, the tick and the delivery job on the clock."""

    def __init__(self, client: Client, clock: FakeClock, engine: Engine, settings: Settings, operator: str) -> None:
        self.client = client
        self.clock = clock
        self.settings = settings
        self.factory: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self.operator = {"Authorization": f"Bearer {operator}"}

    def apply(self, content: str, admin: dict[str, str]) -> None:
        response = self.client.post(
            "/api/v1/definitions/apply", headers=admin, json={"content": content, "source": "reference-images.yaml"}
        )
        assert response.status_code == 200, response.text

    def status(self, environment: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/flags/{FLAG}/environments/{environment}/rollout", headers=self.operator)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def post(self, environment: str, operation: str, **body: Any) -> httpx.Response:
        body.setdefault("expected_revision", self.status(environment)["revision"])
        return self.client.post(
            f"/api/v1/flags/{FLAG}/environments/{environment}/rollout/{operation}", headers=self.operator, json=body
        )

    def operate(self, environment: str, operation: str, **body: Any) -> dict[str, Any]:
        response = self.post(environment, operation, **body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def log(self, **params: str) -> list[dict[str, Any]]:
        response = self.client.get("/api/v1/notifications", headers=self.operator, params=params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows[::-1]  # oldest first

    def tick(self) -> dict[str, int]:
        config = load_notification_config(self.settings.notifications_file)
        return tick_rollouts(
            self.factory, self.settings.environments, self.clock, NotificationAnnouncer(lambda: config)
        )

    def deliver(self) -> dict[str, int]:
        with httpx.Client(timeout=5) as http:
            return deliver_due_notifications(
                self.factory, load_notification_config(self.settings.notifications_file), clock=self.clock, client=http
            )


@pytest.fixture
def desk(client: Client, clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]) -> Desk:
    return Desk(client, clock, engine, settings, make_token(Role.OPERATOR, name="olivia-operator"))


def kinds(rows: list[dict[str, Any]], receiver: str = "oncall") -> list[tuple[str, str | None, str]]:
    return [(row["kind"], row["environment"], row["severity"]) for row in rows if row["receiver"] == receiver]


def test_every_operator_step_is_told_to_each_receiver_pagerduty_as_change_events(
    desk: Desk, receiver: ScriptedReceiver, admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    desk.apply(reference_images_yaml, admin_headers)
    desk.operate("qa", "start")
    desk.operate("qa", "advance", reason="qa canary is clean")
    desk.operate("staging", "start")
    desk.operate("staging", "advance", reason="staging is clean")
    desk.operate("production", "start")
    desk.operate("production", "pause", reason="waiting for the vision team")
    desk.operate("production", "resume")
    desk.operate("production", "advance", reason="10% is healthy")
    desk.operate("production", "rollback", reason="upload errors at 4%")

    assert kinds(desk.log()) == [
        ("rollout_started", "qa", "info"),
        ("rollout_completed", "qa", "info"),
        ("rollout_started", "staging", "info"),
        ("rollout_completed", "staging", "info"),
        ("rollout_started", "production", "info"),
        ("rollout_paused", "production", "info"),
        ("rollout_resumed", "production", "info"),
        ("stage_advanced", "production", "info"),
        ("rolled_back", "production", "ticket"),
    ]
    assert kinds(desk.log(rule="rollout"), "deploys") == kinds(desk.log())
    assert desk.deliver() == {"sent": 27, "retried": 0, "failed": 0}

    # PagerDuty: one Change Event per step at /v2/change/enqueue, never an incident at /v2/enqueue.
    assert receiver.bodies("/v2/enqueue") == []
    changes = receiver.bodies("/v2/change/enqueue")
    assert len(changes) == 9
    advanced = changes[7]
    assert advanced["routing_key"] == ROUTING_KEY
    assert "event_action" not in advanced and "dedup_key" not in advanced
    assert advanced["payload"]["summary"] == ("enable-reference-images in production: advanced to stage 2/3 (50%)")
    details = advanced["payload"]["custom_details"]
    assert (details["flag"], details["environment"], details["stage"], details["percentage"]) == (
        FLAG,
        "production",
        2,
        50.0,
    )
    assert (details["actor"], details["reason"], details["previous_percentage"]) == (
        "olivia-operator",
        "10% is healthy",
        10.0,
    )
    rolled_back = changes[8]["payload"]
    assert rolled_back["summary"] == "enable-reference-images in production: rolled back to off (was 50%)"
    assert rolled_back["custom_details"]["reason"] == "upload errors at 4%"
    # Slack and the webhook: one message per step, saying what changed, who did it and why.
    slack = receiver.bodies("/slack")
    assert slack[5]["text"] == "[ROLLOUT PAUSED] enable-reference-images in production: paused at 10%"
    assert "by olivia-operator: waiting for the vision team" in str(slack[5]["blocks"])
    hook = receiver.bodies("/hook")[8]
    assert (hook["status"], hook["alerts"][0]["kind"], hook["alerts"][0]["details"]["actor"]) == (
        "changed",
        "rolled_back",
        "olivia-operator",
    )


def test_a_refused_operation_tells_no_one_and_a_forced_advance_is_a_ticket(
    desk: Desk, receiver: ScriptedReceiver, admin_headers: dict[str, str]
) -> None:
    # The definition as shipped: production's first stage is guarded and needs 500 samples, none have come.
    desk.apply((REPO_ROOT / "definitions" / "reference-images.yaml").read_text(), admin_headers)
    desk.operate("production", "start", force=True, reason="hotfix canary straight to production")

    problem(desk.post("production", "advance", reason="looks fine"), 409, "guard-holding")
    desk.operate("production", "advance", reason="checked by hand", force=True)

    assert kinds(desk.log()) == [
        ("rollout_started", "production", "ticket"),
        ("forced_advance", "production", "ticket"),
    ]
    desk.deliver()
    forced = receiver.bodies("/v2/change/enqueue")[1]["payload"]
    assert forced["custom_details"]["forced"] is True
    assert forced["custom_details"]["reason"] == "checked by hand"
    assert forced["summary"] == "enable-reference-images in production: advanced to stage 2/3 (50%)"


def test_a_stage_held_past_its_progress_deadline_is_told_once_with_why_it_holds(
    desk: Desk, receiver: ScriptedReceiver, admin_headers: dict[str, str]
) -> None:
    desk.apply((REPO_ROOT / "definitions" / "reference-images.yaml").read_text(), admin_headers)
    started = desk.operate("production", "start", force=True, reason="hotfix canary straight to production")
    # Production's first stage bakes 1h and declares no deadline: bake + max(10m, 1h / 4) = 1h15m.
    assert started["stages"][0]["progress_deadline_seconds"] == 4500
    assert started["progress_deadline_passed"] is False
    assert started["progress_deadline_at"] == "2026-11-01T13:15:00Z"

    desk.clock.advance(timedelta(hours=1, minutes=15) - timedelta(seconds=1))
    assert desk.tick() == {"checked": 1, "advanced": 0, "held": 0, "deadlines": 0, "conflicts": 0, "errors": 0}
    desk.clock.advance(timedelta(seconds=1))
    assert desk.tick()["deadlines"] == 1
    desk.clock.advance(timedelta(minutes=30))
    assert desk.tick()["deadlines"] == 0, "told once per stage run"

    told = [row for row in desk.log() if row["kind"] == "progress_deadline_passed"]
    assert [(row["receiver"], row["severity"]) for row in told] == [
        ("oncall", "ticket"),
        ("deploys", "ticket"),
        ("hooks", "ticket"),
    ]
    status = desk.status("production")
    assert status["progress_deadline_passed"] is True
    assert status["progress_deadline_notified_at"] == "2026-11-01T13:15:00Z"
    assert (status["state"], status["percentage"]) == ("running", 10), "a deadline tells; it never moves a rollout"

    desk.deliver()
    summary = receiver.bodies("/v2/change/enqueue")[-1]["payload"]["summary"]
    assert summary.startswith(
        "enable-reference-images in production: stage 1/3 (10%) has not moved on for 1h15m, past its progress "
        "deadline of 1h15m: guard `upload-failure-rate` has not been evaluated yet"
    )
    assert "the stage has 0 events served the rollout variant since it began; it needs 500" in summary

    # The next stage has a deadline of its own, not yet told.
    advanced = desk.operate("production", "advance", reason="checked by hand", force=True)
    assert (advanced["progress_deadline_passed"], advanced["progress_deadline_notified_at"]) == (False, None)
    assert advanced["progress_deadline_at"] == "2026-11-01T16:15:00Z"  # advanced at 13:45; 2h bake + 30m


def test_a_paused_stage_never_passes_its_deadline_and_resume_restarts_it(
    desk: Desk, admin_headers: dict[str, str]
) -> None:
    desk.apply((REPO_ROOT / "definitions" / "reference-images.yaml").read_text(), admin_headers)
    desk.operate("production", "start", force=True, reason="hotfix canary straight to production")
    desk.operate("production", "pause", reason="holiday freeze")
    desk.clock.advance(timedelta(days=3))
    assert desk.tick()["checked"] == 0, "only running rollouts are ticked"
    resumed = desk.operate("production", "resume")
    assert resumed["progress_deadline_at"] == "2026-11-04T13:15:00Z"
    desk.clock.advance(timedelta(hours=1))
    assert desk.tick()["deadlines"] == 0


def test_a_silenced_step_is_logged_as_silenced_and_never_sent(
    desk: Desk, receiver: ScriptedReceiver, reference_images_yaml: str, admin_headers: dict[str, str]
) -> None:
    desk.apply(reference_images_yaml, admin_headers)
    silence = desk.client.post(
        "/api/v1/silences",
        headers=desk.operator,
        json={"matchers": {"rule": "rollout", "environment": "qa"}, "comment": "qa drill", "duration_seconds": 3600},
    )
    assert silence.status_code == 201, silence.text
    desk.operate("qa", "start")

    assert {row["status"] for row in desk.log()} == {"silenced"}
    assert desk.deliver() == {"sent": 0, "retried": 0, "failed": 0}
    assert receiver.requests == []
    registry = desk.client.app.state.metrics.registry
    for name in ("oncall", "deploys", "hooks"):
        counted = registry.get_sample_value(
            "controlplane_notifications_total", {"receiver": name, "result": "silenced"}
        )
        assert counted == 1, name


def test_a_declared_progress_deadline_is_used_and_a_bad_one_refused_on_its_line(
    desk: Desk, admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    declared = reference_images_yaml.replace(
        "percentage: 10\n              bake: 1h\n",
        "percentage: 10\n              bake: 1h\n              progress_deadline: 3h\n",
    )
    assert declared != reference_images_yaml
    desk.apply(declared, admin_headers)
    assert desk.status("production")["stages"][0]["progress_deadline_seconds"] == 3 * 3600

    refused = desk.client.post(
        "/api/v1/definitions/apply",
        headers=admin_headers,
        json={"content": declared.replace("progress_deadline: 3h", "progress_deadline: 30m"), "source": "ri.yaml"},
    )
    body = problem(refused, 422, "invalid-definition")
    assert body["field"] == "flags[0].plan.environments[2].stages[0].progress_deadline"
    assert "must be longer than the stage's bake (1h)" in body["detail"]


def test_retention_prunes_old_step_notifications_which_no_de_duplication_reads_again(
    desk: Desk, reference_images_yaml: str, admin_headers: dict[str, str]
) -> None:
    desk.apply(reference_images_yaml, admin_headers)
    desk.operate("qa", "start")
    desk.deliver()
    desk.clock.advance(timedelta(days=1))
    desk.operate("qa", "advance", reason="qa canary is clean")

    with session_scope(desk.factory) as session:
        deleted = delete_superseded_notifications(session, before=desk.clock() - timedelta(hours=1))
    assert deleted == 3, "the start's three delivered rows; the pending completion stays"
    assert [(row["kind"], row["status"]) for row in desk.log()] == [("rollout_completed", "pending")] * 3


def test_a_tick_that_read_a_stage_an_operator_has_since_moved_tells_nothing(
    desk: Desk, admin_headers: dict[str, str]
) -> None:
    desk.apply((REPO_ROOT / "definitions" / "reference-images.yaml").read_text(), admin_headers)
    desk.operate("production", "start", force=True, reason="hotfix canary straight to production")
    desk.clock.advance(timedelta(hours=2))
    with session_scope(desk.factory) as session:
        stale_row = session.scalars(select(RolloutRow)).one()
        stale = to_machine(stale_row)
    # Between the tick's read and its write, an operator advances: the stage the tick saw is gone.
    desk.operate("production", "advance", reason="checked by hand", force=True)
    with session_scope(desk.factory) as session:
        row = session.get(RolloutRow, stale_row.id)
        assert row is not None
        assert _claim_deadline(session, row, stale, now=desk.clock()) is False
    with session_scope(desk.factory) as session:
        row = session.get(RolloutRow, stale_row.id)
        assert row is not None
        assert row.deadline_notified_at is None
        assert _claim_deadline(session, row, to_machine(row), now=desk.clock()) is True


def test_a_step_taken_on_the_operators_page_is_told_as_through_the_api(
    desk: Desk, receiver: ScriptedReceiver, admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    desk.apply(reference_images_yaml, admin_headers)
    desk.operate("qa", "start")
    token = desk.operator["Authorization"].removeprefix("Bearer ")
    signed_in = desk.client.post("/ui/sign-in", data={"token": token, "next": "/ui"}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    form = {"operation": "rollback", "reason": "errors on the page", "csrf_token": csrf_token(token)}

    answer = desk.client.post(f"/ui/flags/{FLAG}/environments/qa/rollout", data=form, follow_redirects=False)

    assert answer.status_code == 303, answer.text
    assert kinds(desk.log()) == [("rollout_started", "qa", "info"), ("rolled_back", "qa", "ticket")]
