"""Unit tests for alert rules: what each rule kind measures at its boundaries, and the alert state machine.

Every threshold is compared exactly (``>`` vs ``>=`` stated by the rule); too few samples is its own result,
never a pass and never a breach; a firing alert holds on missing data and resolves only on a measured recovery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.alerting.rules import AlertStatus, Measurement, Series, TailEvent, measure, step, window_cutoff
from controlplane.catalog.rules import (
    WINDOW_SIZE,
    AlertState,
    Comparison,
    Rule,
    RuleKind,
    Selector,
    Severity,
    rule_from_json,
    rule_to_json,
)

# Five seconds into a 10 s window: the 5 minute cutoff is the window holding 11:55:05, i.e. 11:55:00.
NOW = datetime(2025, 3, 14, 12, 0, 5, tzinfo=UTC)
CUTOFF_5M = datetime(2025, 3, 14, 11, 55, 0, tzinfo=UTC)
# On a window edge: the windows a rule reads then span exactly its window (rates compare exactly here).
ALIGNED = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)
INSIDE = datetime(2025, 3, 14, 11, 58, 0, tzinfo=UTC)  # a window well inside the last 5 minutes
RECENT = datetime(2025, 3, 14, 11, 59, 30, tzinfo=UTC)  # a window inside the last minute too

BAD = Selector({"status_class": frozenset({"4xx", "5xx"})})
UPLOADS = Selector({"route": frozenset({"upload_reference_image"})})


def selector(**matches: Sequence[str]) -> Selector:
    return Selector({key: frozenset(values) for key, values in matches.items()})


def ratio_rule(threshold: str = "0.03", op: Comparison = Comparison.GT, **changes: Any) -> Rule:
    rule = Rule(
        name="upload-error-rate",
        pipeline="reference-images",
        kind=RuleKind.RATIO,
        event="http_request",
        op=op,
        threshold=threshold,
        window=timedelta(minutes=5),
        numerator=BAD,
    )
    return replace(rule, **changes)


def rate_rule(threshold: str = "2", op: Comparison = Comparison.GT, **changes: Any) -> Rule:
    rule = Rule(
        name="upload-5xx-rate",
        pipeline="reference-images",
        kind=RuleKind.RATE,
        event="http_request",
        op=op,
        threshold=threshold,
        window=timedelta(minutes=5),
        per=timedelta(minutes=1),
        where=selector(status_class=["5xx"]),
    )
    return replace(rule, **changes)


def mean_rule(threshold: str = "6", op: Comparison = Comparison.GT, **changes: Any) -> Rule:
    rule = Rule(
        name="upload-latency",
        pipeline="reference-images",
        kind=RuleKind.MEAN,
        event="http_request",
        op=op,
        threshold=threshold,
        window=timedelta(minutes=1),
        hold=timedelta(minutes=5),
    )
    return replace(rule, **changes)


def streak_rule(threshold: str = "3", op: Comparison = Comparison.GE, **changes: Any) -> Rule:
    rule = Rule(
        name="vision-error-streak",
        pipeline="reference-images",
        kind=RuleKind.STREAK,
        event="vision_analysis",
        op=op,
        threshold=threshold,
        window=timedelta(0),
        outcome="error",
    )
    return replace(rule, **changes)


def cohort_rule(threshold: str = "0.03", op: Comparison = Comparison.GT, **changes: Any) -> Rule:
    rule = Rule(
        name="upload-error-rate-canary",
        pipeline="reference-images",
        kind=RuleKind.COHORT,
        event="http_request",
        op=op,
        threshold=threshold,
        window=timedelta(minutes=15),
        numerator=BAD,
        flag="enable-reference-images",
        canary_variant="on",
        baseline_variant="off",
    )
    return replace(rule, **changes)


def requests(
    count: int,
    status_class: str = "2xx",
    *,
    start: datetime = INSIDE,
    route: str = "upload_reference_image",
    variant: str = "on",
) -> Series:
    return Series(
        start=start,
        outcome="",
        variant=variant,
        labels={"route": route, "status_class": status_class},
        count=count,
    )


def traffic(
    bad: int, total: int, *, start: datetime = INSIDE, route: str = "upload_reference_image", variant: str = "on"
) -> list[Series]:
    """``total`` requests in one window, ``bad`` of them 5xx."""
    return [
        requests(total - bad, "2xx", start=start, route=route, variant=variant),
        requests(bad, "5xx", start=start, route=route, variant=variant),
    ]


def timed(count: int, value_sum: float, *, start: datetime = RECENT, route: str = "upload_reference_image") -> Series:
    return Series(
        start=start,
        outcome="",
        variant="on",
        labels={"route": route},
        count=count,
        value_count=count,
        value_sum=value_sum,
    )


def tail(*outcomes: str, end: datetime = NOW, labels: Mapping[str, str] | None = None) -> list[TailEvent]:
    """Events one second apart, in order, the last one at ``end``."""
    last = len(outcomes) - 1
    return [
        TailEvent(at=end - timedelta(seconds=last - index), outcome=outcome, variant="on", labels=dict(labels or {}))
        for index, outcome in enumerate(outcomes)
    ]


def measured(*, breached: bool, sufficient: bool = True, value: float | None = 1.0, samples: int = 100) -> Measurement:
    return Measurement(
        value=value if sufficient else None,
        samples=samples,
        sufficient=sufficient,
        breached=breached,
        detail="measured",
    )


BREACH = measured(breached=True)
CLEAR = measured(breached=False)
NO_DATA = measured(breached=False, sufficient=False, samples=3)


# --- Comparison and Selector -------------------------------------------------------------------------------


def test_greater_than_does_not_hold_at_the_threshold_and_greater_or_equal_does() -> None:
    three_percent = Fraction(3, 100)

    assert not Comparison.GT.holds(three_percent, Fraction("0.03"))
    assert Comparison.GE.holds(three_percent, Fraction("0.03"))
    assert Comparison.GT.holds(Fraction(301, 10000), Fraction("0.03"))
    assert not Comparison.GE.holds(Fraction(299, 10000), Fraction("0.03"))


def test_rule_limit_is_the_written_decimal_exactly_not_the_nearest_float() -> None:
    assert ratio_rule("0.07").limit == Fraction(7, 100)
    assert ratio_rule("0.1").limit != Fraction(0.1)
    assert ratio_rule("1e-07").limit == Fraction(1, 10_000_000)


def test_empty_selector_admits_every_event() -> None:
    assert Selector().admits("", "", {})
    assert Selector().admits("error", "on", {"route": "x"})
    assert Selector().describe() == "all"


def test_selector_matches_outcome_variant_and_labels_and_needs_every_key_to_match() -> None:
    chosen = selector(outcome=["error"], variant=["on"], route=["upload_reference_image"])

    assert chosen.admits("error", "on", {"route": "upload_reference_image", "other": "x"})
    assert not chosen.admits("ok", "on", {"route": "upload_reference_image"})
    assert not chosen.admits("error", "off", {"route": "upload_reference_image"})
    assert not chosen.admits("error", "on", {"route": "run_preflight"})


def test_selector_on_a_label_the_event_lacks_admits_nothing() -> None:
    assert not selector(route=["upload_reference_image"]).admits("ok", "on", {})


def test_selector_describes_itself_sorted_for_messages() -> None:
    chosen = selector(status_class=["5xx", "4xx"], route=["a"])

    assert chosen.describe() == "route in {a}, status_class in {4xx, 5xx}"


# --- window_cutoff -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC), datetime(2025, 3, 14, 11, 55, 0, tzinfo=UTC)),
        (datetime(2025, 3, 14, 12, 0, 5, tzinfo=UTC), datetime(2025, 3, 14, 11, 55, 0, tzinfo=UTC)),
        (datetime(2025, 3, 14, 12, 0, 9, 999_999, tzinfo=UTC), datetime(2025, 3, 14, 11, 55, 0, tzinfo=UTC)),
        (datetime(2025, 3, 14, 12, 0, 10, tzinfo=UTC), datetime(2025, 3, 14, 11, 55, 10, tzinfo=UTC)),
    ],
)
def test_window_cutoff_is_the_start_of_the_10s_window_holding_now_minus_the_rule_window(
    now: datetime, expected: datetime
) -> None:
    assert timedelta(seconds=10) == WINDOW_SIZE
    assert window_cutoff(now, timedelta(minutes=5)) == expected


def test_window_cutoff_aligns_to_the_given_window_size() -> None:
    now = datetime(2025, 3, 14, 12, 0, 45, tzinfo=UTC)

    assert window_cutoff(now, timedelta(minutes=5), timedelta(minutes=1)) == datetime(2025, 3, 14, 11, 55, tzinfo=UTC)


def test_window_cutoff_is_the_same_instant_whatever_the_timezone_of_now() -> None:
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))

    assert window_cutoff(plus_two, timedelta(minutes=5)) == CUTOFF_5M


# --- ratio -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "total"), [(3, 100), (30, 1000), (9, 300)])
def test_ratio_of_exactly_3_percent_does_not_fire_a_greater_than_rule(bad: int, total: int) -> None:
    result = measure(ratio_rule("0.03", Comparison.GT), traffic(bad, total), [], NOW)

    assert result.sufficient
    assert not result.breached
    assert result.value == pytest.approx(0.03)
    assert result.samples == total


@pytest.mark.parametrize(("bad", "total"), [(3, 100), (30, 1000), (9, 300)])
def test_ratio_of_exactly_3_percent_fires_a_greater_or_equal_rule(bad: int, total: int) -> None:
    result = measure(ratio_rule("0.03", Comparison.GE), traffic(bad, total), [], NOW)

    assert result.sufficient
    assert result.breached


def test_ratio_of_exactly_7_percent_is_compared_exactly_despite_float_rounding() -> None:
    # 7 / 100 * 100 == 7.000000000000001 in floats: an inexact comparison would fire `> 0.07`.
    assert 7 / 100 * 100 != 7

    assert not measure(ratio_rule("0.07", Comparison.GT), traffic(7, 100), [], NOW).breached
    assert measure(ratio_rule("0.07", Comparison.GE), traffic(7, 100), [], NOW).breached


@pytest.mark.parametrize(("bad", "total"), [(4, 100), (31, 1000), (301, 10000), (10, 300)])
def test_ratio_just_above_3_percent_fires_a_greater_than_rule(bad: int, total: int) -> None:
    assert measure(ratio_rule("0.03", Comparison.GT), traffic(bad, total), [], NOW).breached


def test_ratio_just_below_the_threshold_does_not_fire_a_greater_or_equal_rule() -> None:
    assert not measure(ratio_rule("0.03", Comparison.GE), traffic(299, 10000), [], NOW).breached


def test_ratio_with_fewer_events_than_min_samples_is_insufficient_even_when_all_are_errors() -> None:
    result = measure(ratio_rule(min_samples=50), traffic(49, 49), [], NOW)

    assert not result.sufficient
    assert result.value is None
    assert not result.breached
    assert result.samples == 49
    assert "fewer than 50" in result.detail


def test_ratio_with_exactly_min_samples_events_is_measured() -> None:
    result = measure(ratio_rule(min_samples=50), traffic(2, 50), [], NOW)

    assert result.sufficient
    assert result.value == pytest.approx(0.04)
    assert result.breached


def test_ratio_without_any_event_is_insufficient_even_with_min_samples_zero() -> None:
    result = measure(ratio_rule(min_samples=0), [], [], NOW)

    assert not result.sufficient
    assert result.value is None
    assert not result.breached


def test_ratio_detail_states_numerator_and_denominator() -> None:
    assert measure(ratio_rule(), traffic(3, 100), [], NOW).detail.startswith("3/100 = 3%")


def test_ratio_where_scopes_numerator_and_denominator() -> None:
    rule = ratio_rule(where=UPLOADS, min_samples=100)
    series = [
        *traffic(3, 100, route="upload_reference_image"),
        # Plenty of errors on other routes: counted neither as bad nor as traffic.
        *traffic(500, 500, route="run_preflight"),
        # Plenty of good traffic elsewhere: it would dilute the error rate below 3% if counted.
        requests(10_000, "2xx", route="generate_assets"),
    ]

    result = measure(rule, series, [], NOW)

    assert result.samples == 100
    assert result.value == pytest.approx(0.03)
    assert not result.breached


def test_ratio_where_scope_counts_toward_min_samples_only_inside_the_scope() -> None:
    rule = ratio_rule(where=UPLOADS, min_samples=50)
    series = [*traffic(10, 40), requests(1000, route="other")]

    result = measure(rule, series, [], NOW)

    assert not result.sufficient
    assert result.samples == 40


def test_ratio_ignores_windows_older_than_the_cutoff() -> None:
    old = CUTOFF_5M - WINDOW_SIZE
    series = [*traffic(0, 100), *traffic(100, 100, start=old)]

    result = measure(ratio_rule(), series, [], NOW)

    assert result.samples == 100
    assert result.value == 0
    assert result.window_start == CUTOFF_5M


def test_ratio_reads_the_window_starting_exactly_at_the_cutoff() -> None:
    result = measure(ratio_rule(), traffic(4, 100, start=CUTOFF_5M), [], NOW)

    assert result.samples == 100
    assert result.breached


def test_ratio_reads_the_current_window_but_ignores_windows_starting_after_now() -> None:
    current = datetime(2025, 3, 14, 12, 0, 0, tzinfo=UTC)  # started before NOW (12:00:05)
    future = datetime(2025, 3, 14, 12, 0, 10, tzinfo=UTC)
    series = [*traffic(0, 100, start=current), *traffic(100, 100, start=future)]

    result = measure(ratio_rule(), series, [], NOW)

    assert result.samples == 100
    assert not result.breached


def test_ratio_sums_every_window_and_series_in_the_rule_window() -> None:
    starts = [CUTOFF_5M + WINDOW_SIZE * index for index in range(30)]
    series = [requests(10, "2xx", start=start) for start in starts] + [requests(1, "4xx", start=starts[0])]
    series += [requests(9, "5xx", start=starts[-1])]

    result = measure(ratio_rule(), series, [], NOW)

    assert result.samples == 310
    assert result.value == pytest.approx(10 / 310)
    assert result.breached


@given(
    denominator=st.integers(min_value=1, max_value=100_000),
    data=st.data(),
)
def test_ratio_greater_than_breach_is_exactly_num_times_100_above_3_times_den(
    denominator: int, data: st.DataObject
) -> None:
    numerator = data.draw(st.integers(min_value=0, max_value=denominator))
    min_samples = data.draw(st.integers(min_value=0, max_value=denominator))
    rule = ratio_rule("0.03", Comparison.GT, min_samples=min_samples)

    result = measure(rule, traffic(numerator, denominator), [], NOW)

    assert result.sufficient
    assert result.breached == (numerator * 100 > 3 * denominator)
    assert measure(replace(rule, op=Comparison.GE), traffic(numerator, denominator), [], NOW).breached == (
        numerator * 100 >= 3 * denominator
    )


# --- rate --------------------------------------------------------------------------------------------------


def test_rate_is_count_per_per_over_the_window() -> None:
    result = measure(rate_rule(), [requests(10, "5xx")], [], ALIGNED)

    assert result.value == 2.0
    assert result.samples == 10
    assert result.window_start == CUTOFF_5M


def test_rate_exactly_at_the_threshold_does_not_fire_greater_than_but_fires_greater_or_equal() -> None:
    ten_in_5m = [requests(4, "5xx"), requests(6, "5xx", start=CUTOFF_5M)]

    assert not measure(rate_rule("2", Comparison.GT), ten_in_5m, [], ALIGNED).breached
    assert measure(rate_rule("2", Comparison.GE), ten_in_5m, [], ALIGNED).breached


def test_rate_just_above_the_threshold_fires() -> None:
    assert measure(rate_rule("2", Comparison.GT), [requests(11, "5xx")], [], NOW).breached


def test_rate_with_a_per_longer_than_the_window_scales_up() -> None:
    result = measure(rate_rule("11", per=timedelta(hours=1)), [requests(1, "5xx")], [], ALIGNED)

    assert result.value == 12.0
    assert result.breached


def test_rate_counts_only_events_selected_by_where() -> None:
    series = [requests(10, "5xx"), requests(1000, "2xx"), requests(50, "4xx")]

    result = measure(rate_rule(), series, [], ALIGNED)

    assert result.samples == 10
    assert result.value == 2.0


def test_rate_divides_by_the_time_the_counted_windows_span() -> None:
    # Five seconds into a window, a 5m rule reads from 11:55:00: 5m05s of events, not 5m.
    result = measure(rate_rule(), [requests(10, "5xx")], [], NOW)

    assert result.value == pytest.approx(10 * 60 / 305)
    assert not result.breached


def test_rate_ignores_windows_outside_the_rule_window() -> None:
    series = [requests(10, "5xx"), requests(100, "5xx", start=CUTOFF_5M - WINDOW_SIZE), requests(100, "5xx", start=NOW)]
    series.append(requests(100, "5xx", start=NOW + WINDOW_SIZE))

    assert measure(rate_rule(), series, [], NOW).samples == 110


def test_rate_with_fewer_events_than_min_samples_is_insufficient() -> None:
    result = measure(rate_rule("0", min_samples=5), [requests(4, "5xx")], [], NOW)

    assert not result.sufficient
    assert result.value is None
    assert not result.breached


def test_rate_without_min_samples_measures_no_events_as_zero() -> None:
    result = measure(rate_rule(), [], [], NOW)

    assert result.sufficient
    assert result.value == 0
    assert not result.breached


# --- mean --------------------------------------------------------------------------------------------------


def test_mean_is_the_value_sum_over_the_value_count_of_every_selected_series() -> None:
    result = measure(mean_rule(min_samples=20), [timed(10, 60.0), timed(10, 61.0)], [], NOW)

    assert result.value == pytest.approx(6.05)
    assert result.samples == 20
    assert result.breached


def test_mean_exactly_at_the_threshold_does_not_fire_greater_than_but_fires_greater_or_equal() -> None:
    series = [timed(10, 55.0), timed(10, 65.0)]

    assert measure(mean_rule("6", Comparison.GT), series, [], NOW).value == 6.0
    assert not measure(mean_rule("6", Comparison.GT), series, [], NOW).breached
    assert measure(mean_rule("6", Comparison.GE), series, [], NOW).breached


def test_mean_counts_values_not_events_toward_min_samples() -> None:
    # 30 events, but only 10 of them carried a value.
    series = [Series(start=RECENT, outcome="", variant="on", labels={}, count=30, value_count=10, value_sum=90.0)]

    result = measure(mean_rule(min_samples=20), series, [], NOW)

    assert not result.sufficient
    assert result.value is None
    assert not result.breached
    assert result.samples == 10


def test_mean_without_any_value_is_insufficient_even_with_min_samples_zero() -> None:
    series = [Series(start=RECENT, outcome="", variant="on", labels={}, count=30)]

    assert not measure(mean_rule(min_samples=0), series, [], NOW).sufficient


def test_mean_reads_only_selected_series_inside_its_own_window() -> None:
    rule = mean_rule(where=UPLOADS)  # window 1m: cutoff 11:59:00
    series = [
        timed(10, 50.0, start=datetime(2025, 3, 14, 11, 59, 0, tzinfo=UTC)),
        timed(10, 500.0, start=datetime(2025, 3, 14, 11, 58, 50, tzinfo=UTC)),
        timed(10, 500.0, route="generate_assets"),
    ]

    result = measure(rule, series, [], NOW)

    assert result.samples == 10
    assert result.value == 5.0
    assert not result.breached


def test_mean_of_a_non_finite_sum_is_insufficient_rather_than_an_error() -> None:
    for bad in (float("nan"), float("inf")):
        result = measure(mean_rule(), [timed(10, bad)], [], NOW)

        assert not result.sufficient
        assert result.value is None
        assert not result.breached


def test_mean_held_for_5m_is_pending_until_the_hold_elapses_and_fires_at_exactly_the_hold() -> None:
    rule = mean_rule(min_samples=20)  # > 6 over 1m, for 5m
    statuses: list[AlertStatus] = []
    for minute in range(6):
        now = NOW + timedelta(minutes=minute)
        slow = [timed(20, 20 * 7.0, start=window_cutoff(now, rule.window))]  # a mean of 7 s, every minute
        measurement = measure(rule, slow, [], now)
        assert measurement.breached
        statuses.append(step(rule, statuses[-1] if statuses else None, measurement, now))

    assert [status.state for status in statuses] == [AlertState.PENDING] * 5 + [AlertState.FIRING]
    assert statuses[4].since == NOW
    assert statuses[-1].active_since == NOW
    assert statuses[-1].since == NOW + timedelta(minutes=5)


# --- streak ------------------------------------------------------------------------------------------------


def test_three_consecutive_errors_fire_a_streak_of_at_least_three() -> None:
    result = measure(streak_rule(), [], tail("ok", "error", "error", "error"), NOW)

    assert result.value == 3
    assert result.sufficient
    assert result.breached
    assert result.samples == 4


def test_two_consecutive_errors_do_not_fire_a_streak_of_at_least_three() -> None:
    result = measure(streak_rule(), [], tail("error", "ok", "error", "error"), NOW)

    assert result.value == 2
    assert not result.breached


def test_three_errors_with_a_success_between_them_are_not_a_streak() -> None:
    result = measure(streak_rule(), [], tail("error", "error", "ok", "error"), NOW)

    assert result.value == 1
    assert not result.breached


def test_a_success_after_the_errors_ends_the_streak() -> None:
    result = measure(streak_rule(), [], tail("error", "error", "error", "ok"), NOW)

    assert result.value == 0
    assert not result.breached
    assert "the last event was `ok`" in result.detail


def test_streak_greater_than_three_needs_four() -> None:
    rule = streak_rule("3", Comparison.GT)

    assert not measure(rule, [], tail("error", "error", "error"), NOW).breached
    assert measure(rule, [], tail("error", "error", "error", "error"), NOW).breached


def test_streak_follows_the_tail_order_for_events_at_the_same_instant() -> None:
    same = NOW - timedelta(seconds=1)
    events = [TailEvent(at=same, outcome=outcome, variant="on", labels={}) for outcome in ("ok", "error", "error")]
    events.append(TailEvent(at=NOW, outcome="error", variant="on", labels={}))

    assert measure(streak_rule(), [], events, NOW).value == 3
    assert measure(streak_rule(), [], [events[1], events[2], events[0], events[3]], NOW).value == 1


def test_streak_skips_events_not_selected_by_where() -> None:
    rule = streak_rule(where=selector(model=["vision-v2"]))
    events = [
        *tail("error", end=NOW - timedelta(seconds=4), labels={"model": "vision-v2"}),
        *tail("ok", end=NOW - timedelta(seconds=3), labels={"model": "vision-v1"}),
        *tail("error", "error", end=NOW - timedelta(seconds=1), labels={"model": "vision-v2"}),
        *tail("ok", end=NOW, labels={"model": "vision-v1"}),
    ]

    result = measure(rule, [], events, NOW)

    assert result.value == 3
    assert result.samples == 3
    assert result.breached


def test_streak_without_a_window_counts_events_of_any_age() -> None:
    old = tail("error", "error", "error", end=NOW - timedelta(days=3))

    result = measure(streak_rule(window=timedelta(0)), [], old, NOW)

    assert result.breached
    assert result.window_start is None


def test_streak_with_a_window_ignores_older_events() -> None:
    rule = streak_rule(window=timedelta(minutes=10))
    events = [*tail("error", end=NOW - timedelta(minutes=10, seconds=1)), *tail("error", "error", end=NOW)]

    result = measure(rule, [], events, NOW)

    assert result.value == 2
    assert not result.breached
    assert result.window_start == NOW - timedelta(minutes=10)


def test_streak_with_a_window_counts_an_event_exactly_at_its_start() -> None:
    rule = streak_rule(window=timedelta(minutes=10))
    events = [*tail("error", end=NOW - timedelta(minutes=10)), *tail("error", "error", end=NOW)]

    assert measure(rule, [], events, NOW).value == 3


def test_streak_ignores_events_after_now() -> None:
    events = [*tail("error", "error", "error"), *tail("ok", end=NOW + timedelta(seconds=1))]

    assert measure(streak_rule(), [], events, NOW).value == 3


def test_streak_with_fewer_events_than_min_samples_is_insufficient() -> None:
    result = measure(streak_rule(min_samples=5), [], tail("error", "error", "error", "error"), NOW)

    assert not result.sufficient
    assert result.value is None
    assert not result.breached


def test_streak_without_events_measures_zero_when_no_minimum_is_set() -> None:
    result = measure(streak_rule(), [], [], NOW)

    assert result.sufficient
    assert result.value == 0
    assert not result.breached


# --- cohort ------------------------------------------------------------------------------------------------


def cohorts(canary_bad: int, canary: int, baseline_bad: int, baseline: int) -> list[Series]:
    return [*traffic(canary_bad, canary, variant="on"), *traffic(baseline_bad, baseline, variant="off")]


def test_cohort_measures_canary_ratio_minus_baseline_ratio() -> None:
    result = measure(cohort_rule(min_samples=100), cohorts(10, 200, 2, 100), [], NOW)

    assert result.value == pytest.approx(0.03)
    assert result.samples == 100
    assert "on: 10/200" in result.detail
    assert "off: 2/100" in result.detail


def test_cohort_difference_exactly_at_the_margin_does_not_fire_greater_than_but_fires_greater_or_equal() -> None:
    series = cohorts(5, 100, 2, 100)

    assert not measure(cohort_rule("0.03", Comparison.GT), series, [], NOW).breached
    assert measure(cohort_rule("0.03", Comparison.GE), series, [], NOW).breached


def test_cohort_difference_above_the_margin_fires() -> None:
    assert measure(cohort_rule("0.03"), cohorts(6, 100, 2, 100), [], NOW).breached


def test_cohort_where_the_canary_does_better_does_not_fire() -> None:
    result = measure(cohort_rule("0.03"), cohorts(0, 100, 50, 100), [], NOW)

    assert result.value == pytest.approx(-0.5)
    assert not result.breached


@pytest.mark.parametrize(("canary", "baseline"), [(99, 500), (500, 99), (0, 500), (500, 0)])
def test_cohort_with_one_cohort_short_of_min_samples_is_insufficient(canary: int, baseline: int) -> None:
    result = measure(cohort_rule(min_samples=100), cohorts(canary, canary, 0, baseline), [], NOW)

    assert not result.sufficient
    assert result.value is None
    assert not result.breached
    assert result.samples == min(canary, baseline)
    assert "each cohort needs 100 events" in result.detail


def test_cohort_ignores_other_variants_and_series_outside_where() -> None:
    rule = cohort_rule(where=UPLOADS)
    series = [
        *cohorts(5, 100, 2, 100),
        *traffic(100, 100, variant="other"),
        *traffic(100, 100, variant="on", route="generate_assets"),
    ]

    assert measure(rule, series, [], NOW).value == pytest.approx(0.03)


# --- insufficient data never breaches ----------------------------------------------------------------------

# Rules that any sufficient measurement breaches: `>= 0`, and a cohort margin of `>= -1`.
RULES = {
    "ratio": ratio_rule("0", Comparison.GE),
    "rate": rate_rule("0", Comparison.GE),
    "mean": mean_rule("0", Comparison.GE),
    "streak": streak_rule("0", Comparison.GE),
    "cohort": cohort_rule("-1", Comparison.GE),
}


def samples_of(kind: str, available: int) -> tuple[list[Series], list[TailEvent]]:
    """``available`` samples of what ``kind`` counts (per cohort for a cohort rule), all of them bad."""
    if kind == "mean":
        return [timed(available, available * 1000.0)], []
    if kind == "streak":
        return [], tail(*["error"] * available)
    if kind == "cohort":
        return cohorts(available, available, 0, available), []
    return [requests(available, "5xx")], []


@given(
    kind=st.sampled_from(sorted(RULES)),
    available=st.integers(min_value=0, max_value=500),
    shortfall=st.integers(min_value=1, max_value=500),
)
def test_a_measurement_with_fewer_samples_than_min_samples_never_breaches(
    kind: str, available: int, shortfall: int
) -> None:
    rule = replace(RULES[kind], min_samples=available + shortfall)
    series, events = samples_of(kind, available)

    # With the minimum met the same data breaches (a rate or streak of no events is 0, which `>= 0` breaches)...
    enough = measure(replace(rule, min_samples=available), series, events, NOW)
    assert enough.breached == (available > 0 or kind in ("rate", "streak"))
    # ...but short of it, the result is insufficient data: no value, never a breach.
    result = measure(rule, series, events, NOW)

    assert not result.sufficient
    assert not result.breached
    assert result.value is None


# --- step: the alert state machine -------------------------------------------------------------------------

HELD = ratio_rule(hold=timedelta(minutes=5))
T0 = NOW


def run(rule: Rule, steps: Sequence[tuple[timedelta, Measurement]]) -> list[AlertStatus]:
    """Step a new alert through measurements taken at T0 + each offset; every status in turn."""
    previous: AlertStatus | None = None
    statuses = []
    for offset, measurement in steps:
        previous = step(rule, previous, measurement, T0 + offset)
        statuses.append(previous)
    return statuses


def test_first_clear_evaluation_is_inactive_since_now() -> None:
    status = step(HELD, None, CLEAR, T0)

    assert status.state is AlertState.INACTIVE
    assert status.since == T0
    assert status.active_since is None


def test_inactive_stays_inactive_and_keeps_its_since_while_clear() -> None:
    _, later = run(HELD, [(timedelta(0), CLEAR), (timedelta(minutes=1), CLEAR)])

    assert later.state is AlertState.INACTIVE
    assert later.since == T0


def test_a_breach_with_a_hold_is_pending_until_the_hold_elapses() -> None:
    first, almost = run(HELD, [(timedelta(0), BREACH), (timedelta(minutes=4, seconds=59), BREACH)])

    assert first.state is AlertState.PENDING
    assert (first.since, first.active_since, first.last_breach_at) == (T0, T0, T0)
    assert almost.state is AlertState.PENDING
    assert almost.since == T0
    assert almost.active_since == T0
    assert almost.last_breach_at == T0 + timedelta(minutes=4, seconds=59)


def test_a_breach_held_for_exactly_the_hold_fires() -> None:
    *_, fired = run(HELD, [(timedelta(0), BREACH), (timedelta(minutes=2), BREACH), (timedelta(minutes=5), BREACH)])

    assert fired.state is AlertState.FIRING
    assert fired.since == T0 + timedelta(minutes=5)
    assert fired.active_since == T0


def test_a_clear_evaluation_while_pending_resets_the_episode() -> None:
    statuses = run(
        HELD,
        [
            (timedelta(0), BREACH),
            (timedelta(minutes=3), CLEAR),
            (timedelta(minutes=4), BREACH),
            (timedelta(minutes=8), BREACH),
            (timedelta(minutes=9), BREACH),
        ],
    )

    assert [status.state for status in statuses] == [
        AlertState.PENDING,
        AlertState.INACTIVE,
        AlertState.PENDING,
        AlertState.PENDING,
        AlertState.FIRING,
    ]
    assert statuses[1].since == T0 + timedelta(minutes=3)
    assert statuses[1].active_since is None
    assert statuses[3].active_since == T0 + timedelta(minutes=4)
    assert statuses[4].active_since == T0 + timedelta(minutes=4)


def test_without_a_hold_a_breach_fires_at_once() -> None:
    status = step(ratio_rule(), None, BREACH, T0)

    assert status.state is AlertState.FIRING
    assert (status.since, status.active_since, status.last_breach_at) == (T0, T0, T0)


def test_firing_stays_firing_with_its_since_while_breached() -> None:
    _, later = run(ratio_rule(), [(timedelta(0), BREACH), (timedelta(minutes=1), measured(breached=True, value=0.5))])

    assert later.state is AlertState.FIRING
    assert later.since == T0
    assert later.active_since == T0
    assert later.last_breach_at == T0 + timedelta(minutes=1)
    assert later.value == 0.5


def test_without_keep_firing_for_a_clear_evaluation_resolves_at_once() -> None:
    _, resolved = run(ratio_rule(), [(timedelta(0), BREACH), (timedelta(seconds=10), CLEAR)])

    assert resolved.state is AlertState.INACTIVE
    assert resolved.since == T0 + timedelta(seconds=10)
    assert resolved.active_since is None


KEEP = ratio_rule(keep_firing_for=timedelta(minutes=2))


def test_keep_firing_for_keeps_firing_until_it_elapses_after_the_first_clear_evaluation() -> None:
    statuses = run(
        KEEP,
        [
            (timedelta(0), BREACH),
            (timedelta(minutes=1), CLEAR),
            (timedelta(minutes=2), CLEAR),
            (timedelta(minutes=2, seconds=59), CLEAR),
            (timedelta(minutes=3), CLEAR),
        ],
    )

    assert [status.state for status in statuses] == [AlertState.FIRING] * 4 + [AlertState.INACTIVE]
    for held in statuses[1:4]:
        assert held.keep_firing_since == T0 + timedelta(minutes=1)
        assert held.since == T0
        assert held.last_breach_at == T0
    assert statuses[4].since == T0 + timedelta(minutes=3)
    assert statuses[4].keep_firing_since is None


def test_a_breach_during_keep_firing_restarts_it() -> None:
    statuses = run(
        KEEP,
        [
            (timedelta(0), BREACH),
            (timedelta(minutes=1), CLEAR),
            (timedelta(minutes=2), BREACH),
            (timedelta(minutes=3), CLEAR),
            (timedelta(minutes=4, seconds=59), CLEAR),
            (timedelta(minutes=5), CLEAR),
        ],
    )

    assert [status.state for status in statuses] == [AlertState.FIRING] * 5 + [AlertState.INACTIVE]
    assert statuses[2].keep_firing_since is None
    assert statuses[2].last_breach_at == T0 + timedelta(minutes=2)
    assert statuses[3].keep_firing_since == T0 + timedelta(minutes=3)
    assert statuses[4].since == T0


def test_keep_firing_for_does_not_apply_to_a_pending_alert() -> None:
    rule = ratio_rule(hold=timedelta(minutes=5), keep_firing_for=timedelta(minutes=2))

    _, cleared = run(rule, [(timedelta(0), BREACH), (timedelta(minutes=1), CLEAR)])

    assert cleared.state is AlertState.INACTIVE


@pytest.mark.parametrize("prior", [None, AlertState.INACTIVE])
def test_insufficient_data_from_inactive_is_insufficient_data_since_now(prior: AlertState | None) -> None:
    previous = None if prior is None else AlertStatus(state=prior, since=T0 - timedelta(hours=1))

    status = step(HELD, previous, NO_DATA, T0)

    assert status.state is AlertState.INSUFFICIENT_DATA
    assert status.since == T0
    assert status.value is None
    assert status.samples == 3


def test_insufficient_data_from_pending_resets_the_pending_episode() -> None:
    statuses = run(
        HELD,
        [
            (timedelta(0), BREACH),
            (timedelta(minutes=4), NO_DATA),
            (timedelta(minutes=5), BREACH),
            (timedelta(minutes=9), BREACH),
            (timedelta(minutes=10), BREACH),
        ],
    )

    assert [status.state for status in statuses] == [
        AlertState.PENDING,
        AlertState.INSUFFICIENT_DATA,
        AlertState.PENDING,
        AlertState.PENDING,
        AlertState.FIRING,
    ]
    assert statuses[1].active_since is None
    assert statuses[2].active_since == T0 + timedelta(minutes=5)
    assert statuses[2].since == T0 + timedelta(minutes=5)


def test_insufficient_data_keeps_its_since_while_data_stays_missing() -> None:
    _, later = run(HELD, [(timedelta(0), NO_DATA), (timedelta(minutes=1), NO_DATA)])

    assert later.state is AlertState.INSUFFICIENT_DATA
    assert later.since == T0


def test_insufficient_data_then_a_clear_measurement_is_inactive_since_then() -> None:
    _, clear = run(HELD, [(timedelta(0), NO_DATA), (timedelta(minutes=1), CLEAR)])

    assert clear.state is AlertState.INACTIVE
    assert clear.since == T0 + timedelta(minutes=1)


def test_insufficient_data_then_a_breach_without_hold_fires() -> None:
    _, fired = run(ratio_rule(), [(timedelta(0), NO_DATA), (timedelta(minutes=1), BREACH)])

    assert fired.state is AlertState.FIRING
    assert fired.active_since == T0 + timedelta(minutes=1)


def test_a_firing_alert_holds_on_insufficient_data_and_resolves_only_on_a_clear_measurement() -> None:
    statuses = run(
        ratio_rule(),
        [
            (timedelta(0), BREACH),
            (timedelta(minutes=1), NO_DATA),
            (timedelta(hours=5), NO_DATA),
            (timedelta(hours=6), CLEAR),
        ],
    )

    assert [status.state for status in statuses] == [AlertState.FIRING] * 3 + [AlertState.INACTIVE]
    for held in statuses[1:3]:
        assert held.since == T0
        assert held.active_since == T0
        assert held.last_breach_at == T0
        assert held.value is None
        assert held.samples == 3
    assert statuses[3].since == T0 + timedelta(hours=6)


def test_insufficient_data_during_keep_firing_keeps_its_clock() -> None:
    statuses = run(
        KEEP,
        [
            (timedelta(0), BREACH),
            (timedelta(minutes=1), CLEAR),
            (timedelta(minutes=2), NO_DATA),
            (timedelta(minutes=3), CLEAR),
        ],
    )

    assert [status.state for status in statuses] == [AlertState.FIRING] * 3 + [AlertState.INACTIVE]
    assert statuses[2].keep_firing_since == T0 + timedelta(minutes=1)


def test_step_carries_the_measured_value_samples_and_detail() -> None:
    measurement = Measurement(value=0.04, samples=100, sufficient=True, breached=True, detail="4/100 = 4%")

    status = step(ratio_rule(), None, measurement, T0)

    assert (status.value, status.samples, status.detail) == (0.04, 100, "4/100 = 4%")


@given(
    sequence=st.lists(
        st.tuples(st.integers(min_value=1, max_value=120), st.sampled_from(["breach", "clear", "none"])),
        max_size=40,
    ),
    hold=st.integers(min_value=0, max_value=600),
)
def test_an_alert_fires_only_after_a_breach_held_for_the_hold_and_never_on_missing_data(
    sequence: list[tuple[int, str]], hold: int
) -> None:
    rule = ratio_rule(hold=timedelta(seconds=hold))
    by_name = {"breach": BREACH, "clear": CLEAR, "none": NO_DATA}
    now, status = T0, None
    for gap, name in sequence:
        now += timedelta(seconds=gap)
        before = status
        status = step(rule, before, by_name[name], now)
        was_firing = before is not None and before.state is AlertState.FIRING
        if status.state is AlertState.FIRING and not was_firing:
            assert name == "breach"
            assert status.active_since is not None
            assert now - status.active_since >= rule.hold
        if name == "none":
            assert status.state is (AlertState.FIRING if was_firing else AlertState.INSUFFICIENT_DATA)
        if name == "clear":
            assert status.state is AlertState.INACTIVE


# --- rules in words and in storage -------------------------------------------------------------------------


def test_condition_states_the_rule_in_words() -> None:
    assert (
        ratio_rule(where=UPLOADS).condition()
        == "ratio of http_request (status_class in {4xx, 5xx}) where route in {upload_reference_image} > 0.03 over 5m"
    )
    assert mean_rule().condition() == "mean http_request value > 6 over 1m for 5m"
    assert streak_rule().condition() == "consecutive vision_analysis `error` >= 3"
    assert streak_rule(window=timedelta(minutes=10)).condition() == "consecutive vision_analysis `error` >= 3 over 10m"
    assert rate_rule().condition() == "rate of http_request per 1m where status_class in {5xx} > 2 over 5m"
    assert cohort_rule().condition() == (
        "http_request (status_class in {4xx, 5xx}) ratio, on minus off > 0.03 over 15m"
    )


def test_a_rule_survives_a_json_round_trip() -> None:
    rule = Rule(
        name="upload-error-rate-canary",
        pipeline="reference-images",
        kind=RuleKind.COHORT,
        event="http_request",
        op=Comparison.GE,
        threshold="0.02",
        window=timedelta(minutes=15),
        hold=timedelta(minutes=1, seconds=30),
        keep_firing_for=timedelta(minutes=2),
        min_samples=200,
        severity=Severity.TICKET,
        description="Upload error rate of the flag-on cohort against the flag-off cohort.",
        where=UPLOADS,
        numerator=BAD,
        per=timedelta(seconds=30),
        outcome="",
        flag="enable-reference-images",
        canary_variant="on",
        baseline_variant="off",
        environments=("staging", "production"),
        runbook_url="https://runbooks.example.com/reference-images#canary",
    )

    stored = json.loads(json.dumps(rule_to_json(rule)))

    assert "pipeline" not in stored
    assert stored["where"] == {"route": ["upload_reference_image"]}
    assert stored["numerator"] == {"status_class": ["4xx", "5xx"]}
    assert stored["for_seconds"] == 90
    assert rule_from_json("reference-images", stored) == rule


def test_a_streak_rule_survives_a_json_round_trip() -> None:
    rule = streak_rule(where=selector(model=["a", "b"]))

    assert rule_from_json(rule.pipeline, json.loads(json.dumps(rule_to_json(rule)))) == rule


def test_rule_from_json_fills_optional_fields_with_defaults() -> None:
    stored = {
        "name": "r",
        "kind": "ratio",
        "event": "e",
        "op": ">",
        "threshold": "0.03",
        "window_seconds": 300,
        "for_seconds": 0,
        "keep_firing_for_seconds": 0,
        "min_samples": 10,
        "severity": "page",
    }

    rule = rule_from_json("p", stored)

    assert rule == Rule(
        name="r", pipeline="p", kind=RuleKind.RATIO, event="e", op=Comparison.GT, threshold="0.03", min_samples=10
    )
