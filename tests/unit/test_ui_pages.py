"""The operator's page's pure parts: the CSRF token, where a sign-in may lead, and the guard chart's scale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controlplane.ui.charts import HEIGHT, WIDTH, GuardPoint, draw_guard_chart
from controlplane.ui.session import csrf_token, is_valid_csrf, safe_next
from controlplane.ui.views import describe_change

START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_the_csrf_token_belongs_to_one_api_token_and_reveals_nothing_of_it() -> None:
    token = "cpt_" + "x" * 43

    assert is_valid_csrf(token, csrf_token(token))
    assert not is_valid_csrf(token, csrf_token("cpt_" + "y" * 43))
    assert not is_valid_csrf(token, None)
    assert not is_valid_csrf(token, "")
    assert token not in csrf_token(token)
    assert csrf_token(token) == csrf_token(token)  # stateless: every replica derives the same


@pytest.mark.parametrize(
    ("asked", "goes"),
    [
        ("/ui", "/ui"),
        ("/ui/flags/f/environments/qa", "/ui/flags/f/environments/qa"),
        ("/ui?x=1", "/ui?x=1"),
        (None, "/ui"),
        ("", "/ui"),
        ("https://evil.example/ui", "/ui"),
        ("//evil.example/ui", "/ui"),
        ("/ui@evil.example", "/ui"),
        ("/uix", "/ui"),
        ("/api/v1/tokens", "/ui"),
        ("/ui/\\evil.example", "/ui"),
    ],
)
def test_a_sign_in_only_ever_leads_to_this_page(asked: str | None, goes: str) -> None:
    assert safe_next(asked) == goes


def test_the_chart_spans_the_stage_and_keeps_the_threshold_in_view() -> None:
    points = [
        GuardPoint(START, 0.01),
        GuardPoint(START + timedelta(minutes=30), None),  # no data then: no point, no line through zero
        GuardPoint(START + timedelta(minutes=60), 0.02, breached=True),
    ]

    chart = draw_guard_chart(points, start=START, end=START + timedelta(minutes=60), threshold=0.03)

    coordinates = [tuple(float(n) for n in pair.split(",")) for pair in chart.points.split()]
    assert [x for x, _ in coordinates] == [4.0, WIDTH - 4.0]
    assert chart.count == 2
    assert chart.threshold_y is not None
    assert 4 <= chart.threshold_y < min(y for _, y in coordinates) < HEIGHT  # above both values: higher is worse
    assert chart.breaches == (coordinates[1],)
    assert chart.top == pytest.approx(0.03 * 1.15)


def test_a_chart_without_values_is_empty() -> None:
    chart = draw_guard_chart([GuardPoint(START, None)], start=START, end=START + timedelta(minutes=5), threshold=None)

    assert chart.empty
    assert chart.threshold_y is None


def test_an_audit_change_reads_in_words_not_python_values() -> None:
    before = {"enabled": True, "percentage": 10.0, "state": "running", "revision": 2, "gates": None}
    after = {"enabled": False, "percentage": 0.0, "state": "rolled_back", "revision": 3, "gates": ["a", "b"]}

    assert describe_change(before, after) == (
        "enabled: yes -> no; gates: none -> a, b; percentage: 10 -> 0; revision: 2 -> 3; state: running -> rolled back"
    )
