"""What rolls back is what the service is to blame for. At production 10%, with healthy traffic from many users
(1% of uploads failing with a Vision error, 5xx), one user sending 200 junk files in 5 minutes (each refused 4xx,
as the pipeline emits it: an `http_request` 4xx and a `reference_image_upload` rejected) pages through
upload-error-rate but rolls nothing back; a real regression of the service's own failures (5xx across many users)
rolls the flag back through the guard upload-failure-rate. Events go through the HTTP ingest API, the evaluator
runs on the fake clock after each 10-second window closes, as the served evaluation does every few seconds.

Events carry no user: "one user" is what the pipeline would report for that user's uploads, nothing more."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.app import create_app
from controlplane.settings import Settings
from tests.conftest import FakeClock
from tests.integration.test_guarded_rollback import FLAG, Story

WINDOW = timedelta(seconds=10)
UPLOADS_PER_WINDOW = 20  # 600 uploads per 5 minutes from the canary's users
JUNK_PER_5_MINUTES = 200
#: Why a file is refused, and the status the pipeline answers for it (pipeline/workflow.py: _REFUSAL_STATUS).
JUNK = (("corrupt", 422), ("unsupported_type", 415), ("too_large", 413))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        replica_id="test-replica",
        notifications_file=tmp_path / "notifications.yaml",  # none: an empty configuration
    )


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock) -> Litestar:
    return create_app(settings, engine=engine, clock=clock)


@pytest.fixture
def story(
    client: TestClient[Litestar], clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]
) -> Story:
    return Story(client, clock, engine, settings, make_token)


def event(kind: str, at: datetime, *, outcome: str | None = None, value: float, **labels: str) -> dict[str, Any]:
    """One event of the canary cohort in production, as the pipeline's telemetry sends it."""
    body: dict[str, Any] = {
        "type": kind,
        "time": at.isoformat(),
        "environment": "production",
        "variant": "on",
        "labels": labels,
        "value": value,
    }
    if outcome is not None:
        body["outcome"] = outcome
    return body


def upload(at: datetime, *, vision_error: bool = False) -> list[dict[str, Any]]:
    """An upload of a good image: Vision analyses it and it is stored (2xx), or Vision fails (5xx, nothing stored)."""
    stored = {"content_type": "image/png"}
    if vision_error:
        return [
            event("vision_analysis", at, outcome="error", value=0.4),
            event("reference_image_upload", at, outcome="failed", value=250_000, rejection_reason="other", **stored),
            event("http_request", at, value=0.5, route="upload_reference_image", status_class="5xx"),
        ]
    return [
        event("vision_analysis", at, outcome="ok", value=0.3),
        event("reference_image_upload", at, outcome="success", value=250_000, rejection_reason="none", **stored),
        event("http_request", at, value=0.8, route="upload_reference_image", status_class="2xx"),
    ]


def junk(at: datetime, number: int) -> list[dict[str, Any]]:
    """A junk file refused before Vision sees it: its check's rejection and the 4xx the user gets."""
    reason, status = JUNK[number % len(JUNK)]
    assert 400 <= status < 500
    refused = {"content_type": "other", "rejection_reason": reason}
    return [
        event("reference_image_upload", at, outcome="rejected", value=3000, **refused),
        event("http_request", at, value=0.02, route="upload_reference_image", status_class="4xx"),
    ]


def run_windows(story: Story, count: int, *, failing: Callable[[int, int], bool], junk_from: int | None) -> int:
    """``count`` 10-second windows of canary traffic, each sent once it has passed and then evaluated; returns how
    many windows ran before the rollout was rolled back (``count`` if it never was). ``failing(window, upload)``
    says which uploads fail with a Vision error; junk, 200 per 5 minutes, is sent from window ``junk_from`` on."""
    junk_sent = 0
    for window in range(count):
        story.clock.advance(WINDOW)
        start = story.clock() - WINDOW
        events: list[dict[str, Any]] = []
        for number in range(UPLOADS_PER_WINDOW):
            at = start + WINDOW * number / UPLOADS_PER_WINDOW
            events += upload(at, vision_error=failing(window, number))
        if junk_from is not None and window >= junk_from:
            # 200 over 30 windows (6 or 7 a window): one user's script pacing itself.
            due = min(JUNK_PER_5_MINUTES, (window - junk_from + 1) * JUNK_PER_5_MINUTES // 30)
            for at_number in range(due - junk_sent):
                events += junk(start + timedelta(milliseconds=300 * at_number + 150), junk_sent + at_number)
            junk_sent = due
        story.send(events)
        story.evaluate()
        if story.rollout()["state"] == "rolled_back":
            return window
    return count


def alerts(story: Story) -> dict[str, dict[str, Any]]:
    """Production's alerts by rule."""
    found = story.client.get("/api/v1/alerts", headers=story.operator).json()
    return {alert["rule"]: alert for alert in found if alert["environment"] == "production"}


def rollbacks(story: Story) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = story.client.get(
        "/api/v1/audit", headers=story.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    return found


def healthy(window: int, number: int) -> bool:
    """1% of uploads fail with a Vision error: one in every five windows of 20."""
    return window % 5 == 0 and number == 0


def test_200_junk_uploads_from_one_user_in_5_minutes_page_but_do_not_roll_back(story: Story) -> None:
    story.apply()
    started = story.start_production()
    assert (started["state"], started["percentage"]) == ("running", 10)

    # A minute of healthy traffic, then the junk, 200 files in 5 minutes, with the healthy traffic going on.
    ran = run_windows(story, 6 + 30 + 3, failing=healthy, junk_from=6)

    assert ran == 39, f"rolled back after {ran} windows: {rollbacks(story)}"
    status = story.rollout()
    assert (status["state"], status["percentage"]) == ("running", 10)
    assert rollbacks(story) == []
    now = alerts(story)
    # The share of uploads answered 4xx or 5xx is far past 3% (the junk is about a quarter of the uploads): it
    # pages, as the old guard would have fired and rolled the canary back.
    assert now["upload-error-rate"]["state"] == "firing"
    assert now["upload-error-rate"]["value"] > 0.1
    # The service failed about 1% of the uploads: the guard shows no breach at 99% confidence.
    assert now["upload-failure-rate"]["state"] == "inactive"
    assert now["upload-failure-rate"]["value"] < 0.01
    assert "sequential: clear" in now["upload-failure-rate"]["detail"]
    guards = {guard["rule"]: guard["state"] for guard in status["guards"]}
    assert guards == {
        "upload-failure-rate": "inactive",
        "vision-error-streak": "inactive",
        "upload-latency": "inactive",
    }


def test_a_5xx_regression_across_many_users_rolls_back_even_with_the_junk_going_on(story: Story) -> None:
    story.apply()
    story.start_production()

    # Two healthy minutes; the junk starts after the first; from minute 2 on, 10% of every user's uploads fail.
    onset = 12

    def regressed(window: int, number: int) -> bool:
        return number % 10 == 0 if window >= onset else healthy(window, number)

    ran = run_windows(story, onset + 18, failing=regressed, junk_from=6)

    assert onset <= ran < onset + 18, "not rolled back within 3 minutes of the regression"
    assert story.rollout()["state"] == "rolled_back"
    (rollback,) = rollbacks(story)
    assert rollback["actor"] == "controlplane"
    assert "automatic rollback: guard upload-failure-rate in production" in rollback["reason"]
    assert "> 0.03 over 5m at 99% confidence" in rollback["reason"]
    assert "upload-error-rate" not in rollback["reason"]
