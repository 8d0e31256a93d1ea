"""The operator's page in Chromium: sign in, see the rollout, roll it back with a reason, read the audit record, and
watch a change made through the API arrive without a reload."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.settings import Settings
from tests.browser.conftest import Screenshot
from tests.conftest import REPO_ROOT, FakeClock, bearer
from tests.guard_traffic import DEFINITION, GuardedTraffic, notifying_settings

FLAG = "enable-reference-images"
#: On-call, as the notification log shows it (nothing listens there: deliveries stay pending).
#: How long the page may take to show a change pushed by the server (it is pushed on the commit: well under this).
LIVE_TIMEOUT_MS = 10_000


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return notifying_settings(database_url, tmp_path)


def _operate(api: httpx.Client, environment: str, operation: str, **body: object) -> None:
    path = f"/api/v1/flags/{FLAG}/environments/{environment}/rollout"
    revision = api.get(path).json()["revision"]
    response = api.post(f"{path}/{operation}", json={"expected_revision": revision, **body})
    assert response.status_code == 200, response.text


def test_an_operator_signs_in_rolls_back_with_a_reason_and_sees_api_changes_live(
    live_server: str, page: Page, screenshot: Screenshot, make_token: Callable[..., str]
) -> None:
    admin = make_token(Role.ADMIN, name="admin")
    operator = make_token(Role.OPERATOR, name="olivia-operator")
    with httpx.Client(base_url=live_server, headers=bearer(admin), timeout=10) as api:
        shipped = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
        applied = api.post("/api/v1/definitions/apply", json={"content": shipped, "source": "reference-images.yaml"})
        assert applied.status_code == 200, applied.text
        # No traffic here, so every guard lacks data: each step is forced, with its reason audited.
        for environment in ("qa", "staging"):
            _operate(api, environment, "start")
            _operate(api, environment, "advance", reason=f"{environment} checked by hand", force=True)
        _operate(api, "production", "start")
        _operate(api, "production", "advance", reason="10% checked by hand", force=True)

        page.goto(f"{live_server}/ui")
        expect(page).to_have_url(f"{live_server}/ui/sign-in?next=/ui")
        page.get_by_label("API token").fill(operator)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("principal")).to_have_text("olivia-operator")
        cell = page.get_by_test_id(f"cell-{FLAG}-production")
        expect(cell).to_contain_text("serving 50%")
        expect(cell).to_contain_text("gates holding")
        screenshot(page, "overview")

        cell.click()
        expect(page.get_by_test_id("state")).to_have_text("running")
        expect(page.get_by_test_id("stage")).to_have_text("2 of 3 (50%)")
        expect(page.get_by_test_id("gates-detail")).to_contain_text("upload-failure-rate")
        screenshot(page, "flag")

        page.get_by_role("button", name="Roll back").click()
        expect(page.get_by_test_id("problem-type")).to_have_text("reason-required")
        expect(page.get_by_test_id("state")).to_have_text("running")

        page.get_by_label("Reason").fill("upload errors at 4%")
        page.get_by_role("button", name="Roll back").click()
        expect(page.get_by_test_id("action-result")).to_contain_text("Rollback done")
        expect(page.get_by_test_id("state")).to_have_text("rolled back")
        expect(page.get_by_test_id("serving")).to_have_text("0%")
        first_record = page.get_by_test_id("audit").locator("tbody tr").first
        expect(first_record).to_contain_text("olivia-operator")
        expect(first_record).to_contain_text("rollout.rollback")
        expect(first_record).to_contain_text("upload errors at 4%")
        screenshot(page, "rolled-back")

        # A change from elsewhere (the API, as the CLI makes it) reaches the open page with no reload.
        page.evaluate("window.__sameDocument = true")
        _operate(api, "production", "start")
        expect(page.get_by_test_id("state")).to_have_text("running", timeout=LIVE_TIMEOUT_MS)
        expect(page.get_by_test_id("serving")).to_have_text("10%")
        expect(page.get_by_test_id("audit").locator("tbody tr").first).to_contain_text("rollout.start")
        assert page.evaluate("window.__sameDocument") is True
        screenshot(page, "restarted-live")

        # The form carries the revision the live part brought: acting right after the pushed change is not stale.
        page.get_by_label("Reason").fill("pausing to look")
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_test_id("state")).to_have_text("paused")


def test_a_guarded_stage_shows_each_guards_values_and_the_automatic_rollback(
    live_server: str,
    page: Page,
    screenshot: Screenshot,
    make_token: Callable[..., str],
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
) -> None:
    guarded = DEFINITION.replace(
        "guards: [error-rate, error-rate-strict]", "guards: [error-rate, error-rate-sequential, slow-requests]"
    )
    with httpx.Client(base_url=live_server, timeout=10) as client:
        traffic = GuardedTraffic(client, clock, engine, settings, make_token)
        traffic.apply(guarded)
        assert traffic.operate("start").status_code == 200
        page.goto(f"{live_server}/ui/sign-in?next=/ui/flags/checkout-v2/environments/production")
        page.get_by_label("API token").fill(make_token(Role.OPERATOR, name="olivia-operator"))
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("state")).to_have_text("running")

        # Two minutes at 2% errors, then 40%: the alert tick fires error-rate and rolls the flag back by itself.
        traffic.run([(49, 1)] * 12 + [(30, 20)] * 8)

        expect(page.get_by_test_id("state")).to_have_text("rolled back", timeout=LIVE_TIMEOUT_MS)
        guard = page.get_by_test_id("guard-error-rate")
        expect(guard).to_contain_text("firing")
        expect(guard.locator("svg polyline")).to_have_count(1)
        expect(page.get_by_test_id("guard-error-rate-sequential")).to_contain_text("decided at 0.99 confidence")
        expect(page.get_by_test_id("audit").locator("tbody tr").first).to_contain_text("automatic rollback")
        expect(page.get_by_test_id("notifications")).to_contain_text("error-rate")
        screenshot(page, "guarded")


def test_an_operator_rolls_back_one_queue_of_a_rollout_run_per_queue(
    live_server: str, page: Page, screenshot: Screenshot, make_token: Callable[..., str]
) -> None:
    flag = "ai.reply.streaming.enabled"
    admin = make_token(Role.ADMIN, name="admin")
    operator = make_token(Role.OPERATOR, name="olivia-operator")
    with httpx.Client(base_url=live_server, headers=bearer(admin), timeout=10) as api:
        shipped = (REPO_ROOT / "definitions" / "ai-assistant.yaml").read_text()
        applied = api.post("/api/v1/definitions/apply", json={"content": shipped, "source": "ai-assistant.yaml"})
        assert applied.status_code == 200, applied.text

        def operate(environment: str, operation: str, **body: object) -> None:
            path = f"/api/v1/flags/{flag}/environments/{environment}/rollout"
            revision = api.get(path).json()["revision"]
            response = api.post(f"{path}/{operation}", json={"expected_revision": revision, **body})
            assert response.status_code == 200, response.text

        for environment in ("qa", "staging"):
            operate(environment, "start")
            operate(environment, "advance", reason=f"{environment} checked by hand", force=True)
        for queue in ("support", "sales"):
            operate("production", "start", segment=f"queue={queue}")

        page.goto(f"{live_server}/ui/sign-in?next=/ui/flags/{flag}/environments/production")
        page.get_by_label("API token").fill(operator)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_test_id("segment-support")).to_contain_text("running")
        expect(page.get_by_test_id("segment-sales")).to_contain_text("running")
        expect(page.get_by_test_id("segment-billing")).to_contain_text("pending")
        # The environment as a whole serves no one percentage: the summary points at the segments.
        expect(page.get_by_test_id("serving")).to_have_text("per segment (below)")
        screenshot(page, "segments")

        page.get_by_label("Segment").select_option("queue=sales")
        page.get_by_label("Reason").fill("sales fallback rate doubled")
        page.get_by_role("button", name="Roll back").click()
        expect(page.get_by_test_id("segment-sales")).to_contain_text("rolled back")
        expect(page.get_by_test_id("segment-support")).to_contain_text("running")
        first_record = page.get_by_test_id("audit").locator("tbody tr").first
        expect(first_record).to_contain_text("rollout.rollback")
        expect(first_record).to_contain_text("sales fallback rate doubled")
        # Each record and each rollout of the history says which segment it is about.
        expect(first_record).to_contain_text("queue=sales")
        history = page.get_by_test_id("history")
        expect(history.locator("tbody tr", has_text="queue=sales")).to_contain_text("rolled back")
        expect(history.locator("tbody tr", has_text="queue=support")).to_contain_text("running")
        screenshot(page, "segment-rolled-back")
