"""Unit tests for sequential mean rules (``kind: mean`` with ``confidence:``): the CUSUM of ``alerting.sequential`` on
each window's e-value (from its values' count, sum and sum of squares), on log-normal values (as request latencies
are), through ``alerting.rules.assess``. Only the breach side is sequential; a mean clears on its plain comparison.

Fixed seeds, so deterministic. Streams are 10-second windows of Poisson-many log-normal values (shape 1 in log
space: heavy-tailed, the 99th percentile ten times the median), assessed once each window has closed, as the
evaluator folds them.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.alerting.cohorts import stored_evidence
from controlplane.alerting.rules import AlertStatus, Series, assess, hypotheses
from controlplane.alerting.sequential import Evidence, Hypotheses
from controlplane.catalog.rules import WINDOW_SIZE, AlertState, Comparison, Rule, RuleKind

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOUR = 360  # ten-second windows


def mean_rule(**changes: Any) -> Rule:
    rule = Rule(
        name="upload-latency",
        pipeline="demo",
        kind=RuleKind.MEAN,
        event="http_request",
        op=Comparison.GT,
        threshold="6.0",
        window=timedelta(minutes=5),
        min_samples=20,
        confidence="0.99",
    )
    return replace(rule, **changes)


def poisson(rng: random.Random, mean: float) -> int:
    floor, count, product = math.exp(-mean), 0, rng.random()
    while product > floor:
        product *= rng.random()
        count += 1
    return count


def window(rng: random.Random, start: datetime, per_5m: float, mean: float, sigma: float = 1.0) -> Series | None:
    """One window's values: Poisson-many log-normal durations with this mean, summed as ingest stores them."""
    values = [rng.lognormvariate(math.log(mean) - sigma * sigma / 2, sigma) for _ in range(poisson(rng, per_5m / 30))]
    if not values:
        return None
    return Series(
        start,
        "ok",
        "on",
        {},
        len(values),
        value_count=len(values),
        value_sum=sum(values),
        value_sumsq=sum(value * value for value in values),
    )


def first_breach(
    seed: int, per_5m: float, mean: float, *, after: float | None = None, change: int = 0, windows: int = HOUR
) -> int | None:
    """The window (1-based) after which the rule first fired, or None; the mean moves to ``after`` at ``change``."""
    rng = random.Random(seed)
    rule = mean_rule()
    series: list[Series] = []
    status: AlertStatus | None = None
    for index in range(windows):
        level = after if after is not None and index >= change else mean
        drawn = window(rng, T0 + index * WINDOW_SIZE, per_5m, level)
        if drawn is not None:
            series.append(drawn)
        now = T0 + (index + 1) * WINDOW_SIZE + timedelta(seconds=1)
        recent = [item for item in series if item.start >= now - rule.window - WINDOW_SIZE]
        _, status = assess(rule, status, recent, (), now)
        if status.state is AlertState.FIRING:
            return index + 1
    return None


@pytest.mark.parametrize("per_5m", [100, 1000])
def test_a_healthy_mean_at_two_thirds_of_the_threshold_fires_in_at_most_1_percent_of_hours(per_5m: int) -> None:
    """Mean 4 s against a 6 s threshold (alternative 12 s), heavy-tailed values: measured 0 of 500 hours at 100 and
    0 of 300 at 1,000 values per 5 minutes. Allowing 2 of 150 leaves room for the promised 1%."""
    fired = sum(first_breach(seed, per_5m, 4.0) is not None for seed in range(150))
    assert fired <= 2


def test_at_the_threshold_itself_a_false_alarm_stays_under_1_minus_the_confidence() -> None:
    """Mean exactly 6 s at 300 values per 5 minutes: measured 0 of 300 hours (the e-value is conservative for
    skewed values: a slow outlier lowers it). Allowing 1 of 100 is the promised 1%."""
    fired = sum(first_breach(seed, 300, 6.0) is not None for seed in range(100))
    assert fired <= 1


def test_a_doubled_mean_is_detected_from_the_start_and_after_a_change() -> None:
    """Mean 12 s from the start at 100 values per 5 minutes: every one of 300 hours fired, median 230 s, at most
    930 s (1,000 values per 5 minutes: median 30 s); from 3 s to 12 s at minute 10: every hour, median 240 s after
    the change, at most 1,070 s."""
    starts = sorted(at for seed in range(40) if (at := first_breach(seed, 100, 12.0)) is not None)
    assert len(starts) == 40 and starts[20] * 10 <= 400
    changed = sorted(at - 60 for seed in range(40) if (at := first_breach(seed, 100, 3.0, after=12.0, change=60)))
    assert len(changed) == 40 and changed[0] > 0 and changed[20] * 10 <= 400


def test_the_evidence_of_a_mean_is_a_cusums_and_survives_its_stored_form() -> None:
    rng = random.Random(5)
    series = [item for i in range(30) if (item := window(rng, T0 + i * WINDOW_SIZE, 300, 3.0)) is not None]
    measurement, status = assess(mean_rule(), None, series, (), T0 + 30 * WINDOW_SIZE + timedelta(seconds=1))
    assert isinstance(status.evidence, Evidence) and status.evidence.basis == "mean 6.0 12.0"
    assert stored_evidence(json.loads(json.dumps(status.evidence.to_json()))) == status.evidence
    assert status.state is AlertState.INACTIVE and "sequential: clear" in measurement.detail


def test_a_windows_log_e_value_is_written_as_the_method_says() -> None:
    tested = Hypotheses.mean_of(6.0, 12.0)
    bet = 1 / 5  # d = 1: 1 / ((1 + 1)^2 + 1)
    assert tested.per_match == pytest.approx(bet)
    assert tested.per_other == pytest.approx(math.log(1 - bet) + bet)
    values = [3.0, 9.0, 15.0]
    ys = [value / 6.0 - 1 for value in values]
    expected = bet * sum(ys) + (math.log(1 - bet) + bet) * sum(y * y for y in ys)
    squares = sum(value * value for value in values)
    assert tested.log_ratio(3, sum(values), 10.0, squares) == pytest.approx(expected)
    assert hypotheses(mean_rule()) == tested
    # A window stored before sums of squares were kept (0) weighs nothing rather than everything.
    assert tested.log_ratio(3, sum(values), 10.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="0 < threshold < alternative"):
        Hypotheses.mean_of(0.0, 12.0)


def test_one_very_slow_request_among_healthy_ones_does_not_fire() -> None:
    # 10 values of 3 s and one of 600 s in one window: the mean of the window is 57 s, far above 6 s, but one
    # outlier is no evidence of a shifted mean: y^2 weighs it down.
    values = [3.0] * 10 + [600.0]
    series = [
        Series(T0, "ok", "on", {}, len(values), len(values), sum(values), sum(v * v for v in values)),
    ]
    measurement, status = assess(mean_rule(min_samples=0), None, series, (), T0 + WINDOW_SIZE + timedelta(seconds=1))
    assert status.state is AlertState.INSUFFICIENT_DATA
    assert "does not show it yet" in measurement.detail
    assert isinstance(status.evidence, Evidence) and status.evidence.upper == 0.0 and status.evidence.lower == 0.0
