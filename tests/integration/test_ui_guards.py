"""A guarded stage on the operator's page: each guard's values over the stage replayed from the stored windows (the
chart), the sequential guard's confidence, the streak that cannot be replayed said so, and the automatic rollback's
audit record and notifications, all as the alert tick left them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from controlplane.settings import Settings
from tests.guard_traffic import DEFINITION, GuardedTraffic, notifying_settings

PAGE = "/ui/flags/checkout-v2/environments/production"
GUARDED = DEFINITION.replace(
    "guards: [error-rate, error-rate-strict]", "guards: [error-rate, error-rate-sequential, failure-streak]"
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return notifying_settings(database_url, tmp_path)


def test_a_rolled_back_stage_shows_each_guards_values_against_its_threshold_and_why(
    traffic: GuardedTraffic, client: TestClient[Litestar]
) -> None:
    traffic.apply(GUARDED)
    assert traffic.operate("start").status_code == 200
    traffic.run([(49, 1)] * 12 + [(30, 20)] * 8)  # 2% errors for 2 minutes, then 40%: error-rate fires
    assert traffic.rollout()["state"] == "rolled_back"

    page = client.get(PAGE, headers={**traffic.viewer, "Accept": "text/html"})

    assert page.status_code == 200
    text = page.text
    error_rate = text[text.index('data-testid="guard-error-rate"') :].split("</article>")[0]
    assert "state-firing" in error_rate
    points = re.search(r'<polyline points="([^"]+)"', error_rate)
    assert points is not None and len(points.group(1).split()) >= 10  # one per evaluation with a value
    assert 'class="threshold"' in error_rate
    assert 'class="breach"' in error_rate  # the breached evaluations are marked
    sequential = text[text.index('data-testid="guard-error-rate-sequential"') :].split("</article>")[0]
    assert "decided at 0.99 confidence" in sequential
    assert "<polyline" in sequential
    streak = text[text.index('data-testid="guard-failure-streak"') :].split("</article>")[0]
    assert "cannot be replayed" in streak
    assert "<polyline" not in streak
    audit = text[text.index('data-testid="audit"') :].split("</table>")[0]
    assert "rollout.rollback" in audit and "automatic rollback" in audit
    notifications = text[text.index('data-testid="notifications"') :].split("</table>")[0]
    assert "error-rate" in notifications and "oncall" in notifications
