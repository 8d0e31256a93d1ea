"""Unit tests for sequential cohort rules (``kind: cohort`` with ``confidence:``): the two-sample test and the
sample-ratio check of ``alerting.cohorts`` on simulated Poisson traffic, and ``alerting.rules.assess``, which
carries the cohorts' counts in an alert's status.

The statistical tests run fixed seeds, so they are deterministic. Streams are 10-second windows of both cohorts
(the canary holding the rollout's share of the traffic), folded once closed, as the evaluator does; each
docstring says what was measured with more trials and how much room its assertion leaves.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.alerting.cohorts import (
    CohortEvidence,
    CohortTest,
    Population,
    compare,
    expected_share,
    mismatch_evidence,
    stored_evidence,
)
from controlplane.alerting.rules import AlertStatus, Measurement, Series, assess, step, unfolded_since
from controlplane.alerting.sequential import Evidence, Verdict
from controlplane.catalog.rules import WINDOW_SIZE, AlertState, Comparison, Rule, RuleKind, Selector

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # on a window edge
TEST = CohortTest(threshold=0.02, alternative=0.04, confidence=0.99)
SERVER_ERRORS = Selector({"status_class": frozenset({"5xx"})})
HOUR = 360  # ten-second windows


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: Knuth's product of uniforms below ``e^-mean``, in pieces of at most 30 so it stays exact."""
    count = 0
    while mean > 0:
        part = min(mean, 30.0)
        mean -= part
        floor, product = math.exp(-part), rng.random()
        while product > floor:
            product *= rng.random()
            count += 1
    return count


@dataclass(frozen=True)
class Cohorts:
    """Traffic of both cohorts: ``canary_per_5m`` canary events per 5 minutes, the canary holding ``share`` of all
    events (``actual_share``, when the cohorts are not the sizes the split makes), each cohort's share of errors."""

    canary_per_5m: float
    canary_errors: float
    baseline_errors: float
    share: float = 0.1
    actual_share: float | None = None

    def windows(self, rng: random.Random, count: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """Per window, the canary's and the baseline's (events, errors)."""
        canary = self.canary_per_5m / 30
        actual = self.actual_share or self.share
        baseline = canary * (1 - actual) / actual
        drawn = []
        for _ in range(count):
            cohort = []
            for mean, share in ((canary, self.canary_errors), (baseline, self.baseline_errors)):
                errors, others = poisson(rng, mean * share), poisson(rng, mean * (1 - share))
                cohort.append((errors + others, errors))
            drawn.append((cohort[0], cohort[1]))
        return drawn


@dataclass
class Outcome:
    breached: int = 0
    cleared: int = 0
    mismatched: int = 0
    first_breach: list[int] | None = None


def run(traffic: Cohorts, trials: int, seed: int, windows: int = HOUR, test: CohortTest = TEST) -> Outcome:
    """Each trial folds its windows one by one and decides after each; counts trials that ever breached, cleared
    or showed a mismatch (a trial stops at its first breach, as a rollback would)."""
    rng = random.Random(seed)
    outcome = Outcome(first_breach=[])
    for _ in range(trials):
        evidence = CohortEvidence(0, 0, 0, 0, T0, "test")
        cleared = mismatched = False
        for index, (canary, baseline) in enumerate(traffic.windows(rng, windows)):
            evidence = evidence.plus(canary, baseline, T0 + (index + 1) * WINDOW_SIZE)
            found = compare(evidence, test, traffic.share)
            mismatched |= found.mismatch
            if found.verdict is Verdict.BREACH:
                outcome.breached += 1
                assert outcome.first_breach is not None
                outcome.first_breach.append(index + 1)
                break
            cleared |= found.verdict is Verdict.CLEAR
        outcome.cleared += cleared
        outcome.mismatched += mismatched
    return outcome


# --- the statistics ------------------------------------------------------------------------------------------------


def test_equal_cohorts_never_breach_and_clear_within_the_hour() -> None:
    """Both cohorts at 2% errors, 100 canary events per 5 minutes at a 10% split: measured over 2,000 one-hour
    trials, no breach, and 99.95% cleared within the hour."""
    outcome = run(Cohorts(100, 0.02, 0.02), trials=200, seed=1)
    assert outcome.breached == 0
    assert outcome.cleared >= 190


@pytest.mark.parametrize(("per_5m", "share"), [(100, 0.1), (1000, 0.1), (100, 0.5)])
def test_at_the_threshold_itself_a_false_breach_stays_under_1_minus_the_confidence(per_5m: int, share: float) -> None:
    """The canary worse by exactly the threshold (4% against 2%), the hardest case for a false breach: measured 0
    in 2,000 one-hour trials at each of these rates (before cohorts had to expect 5 events of each kind, 1 of 2,000
    breached after its second window). Allowing 3 of 300 is the promised 1%."""
    outcome = run(Cohorts(per_5m, 0.04, 0.02, share=share), trials=300, seed=2)
    assert outcome.breached <= 3


def test_at_the_alternative_a_false_clear_stays_under_1_minus_the_confidence() -> None:
    """The canary worse by the alternative (6% against 2%): clearing would let a regression of the size tested for
    pass. With the observed variance alone a handful of clean canary events cleared 6% of trials; with each side's
    variance under its hypothesis, measured 0 in 2,000. Allowing 3 of 300 is the promised 1%."""
    outcome = run(Cohorts(100, 0.06, 0.02), trials=300, seed=3)
    assert outcome.cleared <= 3


def test_a_canary_far_worse_than_its_baseline_is_caught_within_the_hour() -> None:
    """10% errors against 2% at 100 canary events per 5 minutes: caught in every one of 2,000 trials, median
    after 17.5 minutes; 6% against 2% at 300 per 5 minutes: 92.75% within the hour."""
    worse = run(Cohorts(100, 0.10, 0.02), trials=100, seed=4)
    assert worse.breached >= 97
    assert worse.first_breach is not None
    assert sorted(worse.first_breach)[len(worse.first_breach) // 2] * 10 <= 20 * 60
    double = run(Cohorts(300, 0.06, 0.02), trials=100, seed=5)
    assert double.breached >= 85


def test_the_split_the_rollout_makes_raises_no_mismatch_and_another_one_does() -> None:
    """At the expected 10% split, measured 0.55% of 2,000 one-hour trials showed a mismatch (allowing 3 of 300 is
    the promised 1%); a canary holding 12% of the events where the rollout serves 10% shows one in 99.9%."""
    honest = run(Cohorts(100, 0.02, 0.02), trials=300, seed=6)
    assert honest.mismatched <= 3
    skewed = run(Cohorts(100, 0.02, 0.02, actual_share=0.12), trials=100, seed=7)
    assert skewed.mismatched >= 90


def test_a_mismatch_decides_nothing_whatever_the_difference() -> None:
    evidence = CohortEvidence(5_000, 1_000, 5_000, 100, T0, "test")  # 20% against 2%, but half the events
    found = compare(evidence, TEST, 0.1)
    assert found.mismatch and found.verdict is Verdict.UNDECIDED
    assert found.breach_evidence >= found.limit  # it would be a breach without the mismatch
    assert compare(evidence, TEST, None).verdict is Verdict.BREACH  # no split expected: nothing to check


def test_the_mixture_bayes_factor_is_1_without_events_and_grows_with_the_gap() -> None:
    assert mismatch_evidence(0, 0, 0.1) == pytest.approx(0.0)
    near = mismatch_evidence(100, 900, 0.1)
    far = mismatch_evidence(200, 800, 0.1)
    assert near < 0 < math.log(100) < far


def test_a_cohort_without_events_decides_nothing() -> None:
    found = compare(CohortEvidence(0, 0, 500, 10, T0, "test"), TEST, None)
    assert (found.verdict, found.difference) == (Verdict.UNDECIDED, None)


def test_the_hypotheses_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="threshold < alternative"):
        CohortTest(threshold=0.04, alternative=0.02, confidence=0.99)
    with pytest.raises(ValueError, match="confidence"):
        CohortTest(threshold=0.02, alternative=0.04, confidence=1.0)


def test_the_evidence_survives_its_stored_form_beside_a_cusums() -> None:
    cohort = CohortEvidence(120, 3, 1_080, 20, T0, "cohort 0.02 0.04 0.99 share 0.1 revision 3 since x")
    assert stored_evidence(json.loads(json.dumps(cohort.to_json()))) == cohort
    cusum = Evidence(upper=1.5, lower=0.0, through=T0, basis="ratio 0.03 0.06")
    assert stored_evidence(json.loads(json.dumps(cusum.to_json()))) == cusum


# --- through assess ------------------------------------------------------------------------------------------------


def cohort_rule(**changes: Any) -> Rule:
    rule = Rule(
        name="error-rate-on-vs-off",
        pipeline="demo",
        kind=RuleKind.COHORT,
        event="http_request",
        op=Comparison.GT,
        threshold="0.02",
        window=timedelta(minutes=10),
        min_samples=20,
        numerator=SERVER_ERRORS,
        flag="demo-flag",
        canary_variant="on",
        baseline_variant="off",
        confidence="0.99",
    )
    return replace(rule, **changes)


def window_series(start: datetime, canary: tuple[int, int], baseline: tuple[int, int]) -> list[Series]:
    """One window's series: per cohort, its errors (5xx) and the rest (2xx)."""
    series = []
    for variant, (events, errors) in (("on", canary), ("off", baseline)):
        for status, count in (("5xx", errors), ("2xx", events - errors)):
            if count:
                series.append(Series(start, "done", variant, {"status_class": status}, count))
    return series


def drive(
    rule: Rule,
    windows: list[tuple[tuple[int, int], tuple[int, int]]],
    population: Population | None,
    previous: AlertStatus | None = None,
    start: datetime = T0,
) -> tuple[list[Measurement], AlertStatus]:
    """Each window sent at its start, then assess after it closed (with a stored-and-read-back status between)."""
    series: list[Series] = []
    measurements = []
    status = previous
    for index, (canary, baseline) in enumerate(windows):
        at = start + index * WINDOW_SIZE
        series.extend(window_series(at, canary, baseline))
        now = at + WINDOW_SIZE + timedelta(seconds=1)
        measurement, status = assess(rule, status, series, (), now, population=population)
        assert status.evidence is not None
        status = replace(status, evidence=stored_evidence(json.loads(json.dumps(status.evidence.to_json()))))
        measurements.append(measurement)
    assert status is not None
    return measurements, status


def split(share: float | None, revision: int = 1) -> Population:
    return Population(expected_share=share, since=T0 - timedelta(minutes=30), revision=revision)


def test_a_worse_canary_fires_and_its_counts_travel_in_the_status() -> None:
    rule = cohort_rule()
    measurements, status = drive(rule, [((20, 4), (180, 4))] * 6, split(0.1))
    assert status.state is AlertState.FIRING
    assert measurements[-1].breached and not measurements[-1].mismatch
    assert isinstance(status.evidence, CohortEvidence)
    assert (status.evidence.canary_events, status.evidence.canary_matching) == (120, 24)
    assert (status.evidence.baseline_events, status.evidence.baseline_matching) == (1_080, 24)
    assert "sequential: breach" in measurements[-1].detail
    assert "cohort sizes consistent with the rollout's 10%" in measurements[-1].detail


def test_equal_cohorts_clear_and_a_stage_can_pass() -> None:
    measurements, status = drive(cohort_rule(), [((100, 1), (900, 9))] * 12, split(0.1))
    assert status.state is AlertState.INACTIVE
    assert "sequential: clear" in measurements[-1].detail


def test_too_few_events_hold_as_insufficient_even_when_the_test_has_decided() -> None:
    measurements, status = drive(cohort_rule(min_samples=500), [((20, 4), (180, 4))] * 6, split(0.1))
    assert status.state is AlertState.INSUFFICIENT_DATA
    assert not measurements[-1].breached


def test_cohorts_of_the_wrong_sizes_are_their_own_state_and_a_firing_alert_holds() -> None:
    # Half the events in the canary where the rollout serves it 10%: a mismatch, neither firing nor clear.
    measurements, status = drive(cohort_rule(), [((500, 5), (500, 5))] * 6, split(0.1))
    assert status.state is AlertState.SAMPLE_RATIO_MISMATCH
    assert measurements[-1].mismatch and not measurements[-1].sufficient
    assert "sample ratio mismatch: on holds 50% of the events, the rollout serves it 10%" in measurements[-1].detail
    firing = AlertStatus(state=AlertState.FIRING, since=T0, active_since=T0, last_breach_at=T0)
    held = step(cohort_rule(), firing, measurements[-1], T0 + timedelta(minutes=2))
    assert held.state is AlertState.FIRING and held.detail == measurements[-1].detail


def test_without_a_split_to_expect_the_sizes_are_not_checked() -> None:
    measurements, status = drive(cohort_rule(), [((500, 100), (500, 5))] * 6, split(None))
    assert status.state is AlertState.FIRING
    assert "cohort sizes not checked" in measurements[-1].detail


def test_a_new_split_starts_a_new_test() -> None:
    _, status = drive(cohort_rule(), [((20, 4), (180, 4))] * 6, split(0.1))
    assert isinstance(status.evidence, CohortEvidence) and status.evidence.canary_events == 120
    later = T0 + 6 * WINDOW_SIZE
    # The next stage: the flag's state changed (revision 2) at `later`; counts start again from its first window.
    moved = Population(expected_share=0.5, since=later, revision=2)
    _, after = drive(cohort_rule(), [((100, 1), (100, 1))], moved, previous=status, start=later)
    assert isinstance(after.evidence, CohortEvidence)
    assert (after.evidence.canary_events, after.evidence.baseline_events) == (100, 100)


def test_the_window_holding_the_change_is_left_out() -> None:
    changed = T0 + timedelta(seconds=4)  # inside the first window
    population = Population(expected_share=0.1, since=changed, revision=2)
    _, status = drive(cohort_rule(), [((20, 0), (180, 4)), ((20, 0), (180, 4))], population)
    assert isinstance(status.evidence, CohortEvidence)
    assert status.evidence.canary_events == 20  # the second window only


def test_the_oldest_unfolded_window_of_a_cohort_alert_follows_its_evidence() -> None:
    rule = cohort_rule()
    now = T0 + timedelta(minutes=30)
    assert unfolded_since(rule, None, now, WINDOW_SIZE) == now - rule.window
    evidence = CohortEvidence(10, 1, 90, 2, now - timedelta(seconds=20), "x")
    status = AlertStatus(state=AlertState.INACTIVE, since=T0, evidence=evidence)
    assert unfolded_since(rule, status, now, WINDOW_SIZE) == now - timedelta(seconds=20)


def test_a_sequential_cohort_rules_condition_says_how_it_decides() -> None:
    assert (
        cohort_rule()
        .condition()
        .endswith(
            "> 0.02 over 10m at 99% confidence (sequential: two-sample mixture test against 0.04, cohort sizes checked "
            "against the rollout's split)"
        )
    )


def test_an_undecided_comparison_says_about_how_many_more_canary_events_decide() -> None:
    measurements, _ = drive(cohort_rule(), [((20, 3), (180, 4))] * 3, split(0.1))
    assert "about 120 more on events to breach at these shares" in measurements[-1].detail
    # At the shares of the detail, that many more events do decide.
    more = CohortEvidence(180, 27, 1_620, 36, T0, "test")
    assert compare(more, TEST, None).verdict is Verdict.BREACH
    fewer = CohortEvidence(120, 18, 1_080, 24, T0, "test")
    assert compare(fewer, TEST, None).verdict is Verdict.UNDECIDED


SEGMENTED = {
    "variant": "on",
    "percentage": 0.0,
    "bucket_by": "agent_id",
    "when": [],
    "segments": {"attribute": "queue", "percentages": {"support": 50.0, "sales": 10.0, "billing": 0.0}},
}


def test_a_rule_scoped_to_one_segment_expects_that_segments_share_and_a_rule_over_all_of_them_none() -> None:
    def share(segment: tuple[str, str] | None, rollout: dict[str, Any] = SEGMENTED) -> float | None:
        return expected_share(
            "on", "off", enabled=True, targeting=[], rollout=rollout, default_variant="off", segment=segment
        )

    assert share(("queue", "sales")) == 0.1
    assert share(("queue", "support")) == 0.5
    assert share(None) is None, "no one share for the whole environment"
    assert share(("queue", "billing")) is None, "not started: no split to check"
    assert share(("queue", "other")) is None and share(("tenant", "sales")) is None
    plain = {"variant": "on", "percentage": 10.0, "bucket_by": "agent_id", "when": []}
    assert share(None, plain) == share(("queue", "sales"), plain) == 0.1
