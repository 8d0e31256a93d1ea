"""What rolls back is what the service is to blame for, and one client cannot move a guard. At production 10%, with
healthy traffic from many users (1% of uploads failing with a Vision error, 5xx), one user sending 200 junk files
in 5 minutes (each refused 4xx, as the pipeline emits it: an `http_request` 4xx and a `reference_image_upload`
rejected) rolls nothing back, and, counted at most 4 times (per_subject_cap), does not page through
upload-error-rate either (it did while events carried no user); one user's 200 uploads the service fails (5xx: one
client hitting a server bug) do not fire upload-failure-rate, where the same 200 failures from 200 users roll the
flag back, as does a real regression of the service's own failures across many users. Events go through the HTTP
ingest API, the evaluator runs on the fake clock after each 10-second window closes, as the served evaluation does
every few seconds.

Events carry their user as the pipeline reports it: the hash of the user id (the emitter's subject digest)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.settings import Settings
from controlplane_client.emitter import subject_digest
from tests.conftest import FakeClock
from tests.integration.test_guarded_rollback import FLAG, Story

WINDOW = timedelta(seconds=10)
UPLOADS_PER_WINDOW = 20  # 600 uploads per 5 minutes from the canary's users
USERS = 300  # who upload in turn: each of them about twice per 5 minutes, below the guards' cap of 4
JUNK_PER_5_MINUTES = 200
#: Who sends the junk: one user (its events carry its subject), 200 users, or nobody known (events without subject).
Sender = Literal["one user", "many users", "no subject"]
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
def story(
    client: TestClient[Litestar], clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]
) -> Story:
    return Story(client, clock, engine, settings, make_token)


def event(
    kind: str, at: datetime, *, user: str | None, outcome: str | None = None, value: float, **labels: str
) -> dict[str, Any]:
    """One event of the canary cohort in production, as the pipeline's telemetry sends it: about ``user`` (its
    subject, hashed as the emitter hashes it), or about nobody known."""
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
    if user is not None:
        body["subject"] = subject_digest(user)
    return body


def upload(at: datetime, user: str | None, *, vision_error: bool = False) -> list[dict[str, Any]]:
    """An upload of a good image: Vision analyses it and it is stored (2xx), or Vision fails (5xx, nothing stored)."""
    stored = {"content_type": "image/png"}
    if vision_error:
        return [
            event("vision_analysis", at, user=user, outcome="error", value=0.4),
            event(
                "reference_image_upload",
                at,
                user=user,
                outcome="failed",
                value=250_000,
                rejection_reason="other",
                **stored,
            ),
            event("http_request", at, user=user, value=0.5, route="upload_reference_image", status_class="5xx"),
        ]
    return [
        event("vision_analysis", at, user=user, outcome="ok", value=0.3),
        event(
            "reference_image_upload", at, user=user, outcome="success", value=250_000, rejection_reason="none", **stored
        ),
        event("http_request", at, user=user, value=0.8, route="upload_reference_image", status_class="2xx"),
    ]


def junk(at: datetime, number: int, user: str | None) -> list[dict[str, Any]]:
    """A junk file refused before Vision sees it: its check's rejection and the 4xx the user gets."""
    reason, status = JUNK[number % len(JUNK)]
    assert 400 <= status < 500
    refused = {"content_type": "other", "rejection_reason": reason}
    return [
        event("reference_image_upload", at, user=user, outcome="rejected", value=3000, **refused),
        event("http_request", at, user=user, value=0.02, route="upload_reference_image", status_class="4xx"),
    ]


def run_windows(
    story: Story,
    count: int,
    *,
    failing: Callable[[int, int], bool],
    junk_from: int | None,
    sender: Sender = "one user",
    kind: Literal["junk", "failing"] = "junk",
) -> int:
    """``count`` 10-second windows of canary traffic, each sent once it has passed and then evaluated; returns how
    many windows ran before the rollout was rolled back (``count`` if it never was). ``failing(window, upload)``
    says which uploads fail with a Vision error; from window ``junk_from`` on, 200 more uploads in 5 minutes come
    from ``sender``: junk files refused 4xx, or (``kind`` failing) good images the service fails with 5xx."""
    extra_sent = 0
    for window in range(count):
        story.clock.advance(WINDOW)
        start = story.clock() - WINDOW
        events: list[dict[str, Any]] = []
        for number in range(UPLOADS_PER_WINDOW):
            at = start + WINDOW * number / UPLOADS_PER_WINDOW
            user = f"user-{(window * UPLOADS_PER_WINDOW + number) % USERS}"
            events += upload(at, user, vision_error=failing(window, number))
        if junk_from is not None and window >= junk_from:
            # 200 over 30 windows (6 or 7 a window): one user's script pacing itself, or 200 users once each.
            due = min(JUNK_PER_5_MINUTES, (window - junk_from + 1) * JUNK_PER_5_MINUTES // 30)
            for at_number in range(due - extra_sent):
                at = start + timedelta(milliseconds=300 * at_number + 150)
                number = extra_sent + at_number
                who = {"one user": "junk-user", "many users": f"other-user-{number}", "no subject": None}[sender]
                events += junk(at, number, who) if kind == "junk" else upload(at, who, vision_error=True)
            extra_sent = due
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


@pytest.mark.parametrize("sender", ["one user", "no subject"])
def test_200_junk_uploads_from_one_user_in_5_minutes_do_not_roll_back_nor_page(story: Story, sender: Sender) -> None:
    story.apply()
    started = story.start_production()
    assert (started["state"], started["percentage"]) == ("running", 10)

    # A minute of healthy traffic, then the junk, 200 files in 5 minutes, with the healthy traffic going on.
    ran = run_windows(story, 6 + 30 + 3, failing=healthy, junk_from=6, sender=sender)

    assert ran == 39, f"rolled back after {ran} windows: {rollbacks(story)}"
    status = story.rollout()
    assert (status["state"], status["percentage"]) == ("running", 10)
    assert rollbacks(story) == []
    now = alerts(story)
    if sender == "one user":
        # The user's junk counts 4 times: about 1.6% of uploads answered 4xx or 5xx, no page.
        assert now["upload-error-rate"]["state"] == "inactive"
        assert now["upload-error-rate"]["value"] < 0.03
        assert (
            "each subject counted at most 4 times"
            in story.client.get(
                "/api/v1/alerts/history",
                headers=story.operator,
                params={"rule": "upload-error-rate", "environment": "production", "limit": 1},
            ).json()[0]["condition"]
        )
    else:
        # Without a subject nothing tells one user from many: the share of uploads answered 4xx or 5xx is far past
        # 3% (the junk is about a quarter of the uploads) and it pages, as it always did.
        assert now["upload-error-rate"]["state"] == "firing"
        assert now["upload-error-rate"]["value"] > 0.1
    # The service failed about 1% of the uploads: the guard shows no breach at 99% confidence.
    assert now["upload-failure-rate"]["state"] == "inactive"
    assert now["upload-failure-rate"]["value"] < 0.01
    assert "sequential: clear" in now["upload-failure-rate"]["detail"]
    guards = {guard["rule"]: guard["state"] for guard in status["guards"]}
    assert guards == {"upload-failure-rate": "inactive", "upload-latency": "inactive"}


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


def test_200_uploads_of_one_user_the_service_fails_do_not_fire_the_guard(story: Story) -> None:
    story.apply()
    story.start_production()

    # A minute of healthy traffic, then one client's 200 uploads in 5 minutes, every one answered 5xx.
    ran = run_windows(story, 6 + 30 + 3, failing=healthy, junk_from=6, kind="failing")

    assert ran == 39, f"rolled back after {ran} windows: {rollbacks(story)}"
    assert story.rollout()["state"] == "running"
    history = story.client.get(
        "/api/v1/alerts/history",
        headers=story.operator,
        params={"rule": "upload-failure-rate", "environment": "production", "limit": 1000},
    ).json()
    assert "firing" not in {change["to_state"] for change in history}
    now = alerts(story)["upload-failure-rate"]
    # Counted 4 times, the client's failures leave about 1.6% failed: the guard clears at 99% confidence.
    assert now["state"] == "inactive" and now["value"] < 0.03
    assert "sequential: clear" in now["detail"]
    assert alerts(story)["upload-error-rate"]["state"] == "inactive"


@pytest.mark.parametrize("sender", ["many users", "no subject"])
def test_the_same_200_failures_from_many_users_or_no_known_user_roll_back(story: Story, sender: Sender) -> None:
    story.apply()
    story.start_production()

    ran = run_windows(story, 6 + 30, failing=healthy, junk_from=6, kind="failing", sender=sender)

    assert 6 <= ran < 6 + 30, "not rolled back within the 5 minutes of failures"
    (rollback,) = rollbacks(story)
    assert "automatic rollback: guard upload-failure-rate in production" in rollback["reason"]
