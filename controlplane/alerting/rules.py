"""Alert rules: a pure function from aggregation windows, the event tail and the clock to a measurement, and
a pure state machine from (previous state, measurement, clock) to the next state.

    measure(rule, series, tail, now) -> Measurement(value, samples, sufficient, breached)
    step(rule, previous, measurement, now) -> AlertStatus
    assess(rule, previous, series, tail, now) -> (Measurement, AlertStatus)   what the evaluator calls

    inactive --breach--> pending --breach held `for`--> firing --no breach for `keep_firing_for`--> inactive
    (for = 0: inactive --breach--> firing at once)
    too few samples --> insufficient_data: never a pass, never a breach. A firing alert holds (it does not
    resolve on missing data: only a measurement below the threshold proves recovery).

A rule's measurement comes from ingested events (``source: events``, the default: ``measure`` here) or from a
Prometheus server's query API (``source: prometheus``, kind ``query``: ``alerting.prometheus`` reads the answer);
both go through the same ``step``.

``assess`` is ``measure`` then ``step`` for a plain rule. A rule with ``confidence`` (ratio and rate kinds) is
decided sequentially (``alerting.sequential``): ``assess`` folds the windows closed since the previous status's
``evidence`` into a CUSUM and breaches when it shows a breach at that confidence, measures a pass when it shows
none of the alternative's size, and is insufficient while it shows neither (or below ``min_samples`` over the
window). The evidence travels in the returned ``AlertStatus``, so replaying from a stored status continues exactly
where the last evaluation stopped. The windows it folds are one series per aggregation window (``windows``, or
``series`` itself), from ``unfolded_since`` on; its plain value and floor read ``series`` like ``measure``.

Thresholds compare exactly: ratios and rates as fractions, the threshold read as the decimal it was written as,
so exactly 3% never fires a ``> 3%`` rule whatever the float rounding.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from controlplane.alerting import cohorts, sequential
from controlplane.alerting.cohorts import CohortEvidence, CohortTest, Population
from controlplane.alerting.sequential import Evidence, Hypotheses, Verdict
from controlplane.catalog.rules import WINDOW_SIZE, AlertState, Rule, RuleKind, format_duration

__all__ = [
    "AlertStatus",
    "Measurement",
    "Series",
    "TailEvent",
    "assess",
    "hypotheses",
    "measure",
    "step",
    "unfolded_since",
    "window_cutoff",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Series:
    """Aggregated events of one window (or of several, summed) with the same outcome, variant and labels."""

    start: datetime
    outcome: str
    variant: str
    labels: Mapping[str, str]
    count: int
    value_count: int = 0
    value_sum: float = 0.0
    value_sumsq: float = 0.0  # the sum of the squared values


@dataclass(frozen=True, slots=True)
class TailEvent:
    """One recent event, in order, for streak rules."""

    at: datetime
    outcome: str
    variant: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Measurement:
    """What a rule measured now: the value (None when unmeasurable), the samples behind it, and the verdict."""

    value: float | None
    samples: int
    sufficient: bool
    breached: bool
    detail: str
    window_start: datetime | None = None
    mismatch: bool = False  # a cohort rule's cohorts are not the sizes the rollout's split makes


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """An alert's state and when things happened to it."""

    state: AlertState
    since: datetime  # when it entered this state
    active_since: datetime | None = None  # first breach of the current pending/firing episode
    keep_firing_since: datetime | None = None  # first evaluation without a breach while firing
    last_breach_at: datetime | None = None
    value: float | None = None
    samples: int = 0
    detail: str = ""
    evidence: Evidence | CohortEvidence | None = None  # a sequential rule's statistic (None: plain, or none yet)


@functools.lru_cache(maxsize=256)  # one tick asks for the same few (now, window) pairs thousands of times
def window_cutoff(now: datetime, window: timedelta, size: timedelta = WINDOW_SIZE) -> datetime:
    """The start of the oldest aggregation window a rule over ``window`` reads: the one holding ``now - window``."""
    edge = now - window
    steps = (edge - _EPOCH) // size
    return _EPOCH + steps * size


def _in_window(series: Iterable[Series], since: datetime, now: datetime) -> list[Series]:
    return [item for item in series if since <= item.start <= now]


def _ratio(series: Sequence[Series], rule: Rule, variant: str | None = None) -> tuple[int, int]:
    numerator = denominator = 0
    for item in series:
        if variant is not None and item.variant != variant:
            continue
        if not rule.where.admits(item.outcome, item.variant, item.labels):
            continue
        denominator += item.count
        if rule.numerator.admits(item.outcome, item.variant, item.labels):
            numerator += item.count
    return numerator, denominator


def _percent(numerator: int, denominator: int) -> str:
    return f"{numerator}/{denominator} = {100 * numerator / denominator:.4g}%" if denominator else "0/0"


def measure(
    rule: Rule,
    series: Sequence[Series],
    tail: Sequence[TailEvent],
    now: datetime,
    *,
    window_size: timedelta = WINDOW_SIZE,
) -> Measurement:
    """Measure ``rule`` over one environment's ``series`` (windows) and ``tail`` (recent events) at ``now``."""
    since = window_cutoff(now, rule.window, window_size)
    current = _in_window(series, since, now)
    floor = max(rule.min_samples, 1)
    if rule.kind is RuleKind.RATIO:
        numerator, denominator = _ratio(current, rule)
        if denominator < floor:
            return _insufficient(rule, denominator, since, f"{denominator} events, fewer than {floor} needed")
        value = Fraction(numerator, denominator)
        return _verdict(rule, value, denominator, since, _percent(numerator, denominator))
    if rule.kind is RuleKind.RATE:
        count = sum(item.count for item in current if rule.where.admits(item.outcome, item.variant, item.labels))
        if count < rule.min_samples:
            return _insufficient(rule, count, since, f"{count} events, fewer than {rule.min_samples} needed")
        # Divided by the time the counted windows really span (the window, plus the part of the oldest 10-second
        # window before it): dividing by the window alone would overstate a 1m rate by up to a sixth.
        span = Fraction(max(now - since, rule.window).total_seconds())
        value = Fraction(count) * Fraction(rule.per.total_seconds()) / span
        return _verdict(rule, value, count, since, f"{count} events in {float(span):g}s")
    if rule.kind is RuleKind.MEAN:
        selected = [item for item in current if rule.where.admits(item.outcome, item.variant, item.labels)]
        values = sum(item.value_count for item in selected)
        if values < floor:
            return _insufficient(rule, values, since, f"{values} values, fewer than {floor} needed")
        total = sum(item.value_sum for item in selected)
        if not math.isfinite(total):
            # A NaN or infinite sum (bad data or overflow) is no measurement; Fraction() would raise on it.
            return _insufficient(rule, values, since, f"the {values} values sum to {total}, not a number to compare")
        return _verdict(rule, Fraction(total) / values, values, since, f"mean of {values} values")
    if rule.kind is RuleKind.STREAK:
        return _streak(rule, tail, now)
    return _cohort(rule, current, since, floor)


def _streak(rule: Rule, tail: Sequence[TailEvent], now: datetime) -> Measurement:
    since = now - rule.window if rule.window else None
    if rule.where.matches:
        events = [
            event
            for event in tail
            if (since is None or event.at >= since)
            and event.at <= now
            and rule.where.admits(event.outcome, event.variant, event.labels)
        ]
    else:  # the common case, without a function call per event
        events = [event for event in tail if (since is None or event.at >= since) and event.at <= now]
    if len(events) < rule.min_samples:
        return _insufficient(rule, len(events), since, f"{len(events)} events, fewer than {rule.min_samples} needed")
    run = 0
    for event in reversed(events):
        if event.outcome != rule.outcome:
            break
        run += 1
    last = f"; the last event was `{events[-1].outcome}`" if events else ""
    return _verdict(rule, Fraction(run), len(events), since, f"{run} consecutive `{rule.outcome}`{last}")


def _cohort(rule: Rule, current: Sequence[Series], since: datetime, floor: int) -> Measurement:
    assert rule.canary_variant is not None and rule.baseline_variant is not None
    canary = _ratio(current, rule, rule.canary_variant)
    baseline = _ratio(current, rule, rule.baseline_variant)
    samples = min(canary[1], baseline[1])
    words = f"{rule.canary_variant}: {_percent(*canary)}, {rule.baseline_variant}: {_percent(*baseline)}"
    if canary[1] < floor or baseline[1] < floor:
        return _insufficient(rule, samples, since, f"{words}; each cohort needs {floor} events")
    difference = Fraction(canary[0], canary[1]) - Fraction(baseline[0], baseline[1])
    return _verdict(rule, difference, samples, since, words)


def _insufficient(rule: Rule, samples: int, since: datetime | None, detail: str) -> Measurement:
    return Measurement(value=None, samples=samples, sufficient=False, breached=False, detail=detail, window_start=since)


def _verdict(rule: Rule, value: Fraction, samples: int, since: datetime | None, detail: str) -> Measurement:
    breached = rule.op.holds(value, rule.limit)
    return Measurement(
        value=float(value), samples=samples, sufficient=True, breached=breached, detail=detail, window_start=since
    )


def step(rule: Rule, previous: AlertStatus | None, measurement: Measurement, now: datetime) -> AlertStatus:
    """The alert's next status, Prometheus-style for `for` and `keep_firing_for`, with insufficient data apart."""
    prior = previous or AlertStatus(state=AlertState.INACTIVE, since=now)
    value, samples, detail = measurement.value, measurement.samples, measurement.detail
    if measurement.mismatch:
        # Neither a pass nor a breach: the comparison is not to be trusted. A firing alert holds, as on missing data.
        if prior.state is AlertState.FIRING:
            return replace(prior, value=value, samples=samples, detail=detail)
        state = AlertState.SAMPLE_RATIO_MISMATCH
        since = prior.since if prior.state is state else now
        return AlertStatus(state=state, since=since, value=value, samples=samples, detail=detail)
    if not measurement.sufficient:
        if prior.state is AlertState.FIRING:
            # Missing data proves nothing: a firing alert holds until a measurement shows recovery.
            return replace(prior, value=value, samples=samples, detail=detail)
        since = prior.since if prior.state is AlertState.INSUFFICIENT_DATA else now
        return AlertStatus(state=AlertState.INSUFFICIENT_DATA, since=since, value=value, samples=samples, detail=detail)
    if measurement.breached:
        if prior.state is AlertState.FIRING:
            return replace(
                prior, keep_firing_since=None, last_breach_at=now, value=value, samples=samples, detail=detail
            )
        active_since = prior.active_since if prior.state is AlertState.PENDING and prior.active_since else now
        state = AlertState.FIRING if now - active_since >= rule.hold else AlertState.PENDING
        since = prior.since if prior.state is state else now
        return AlertStatus(
            state=state,
            since=since,
            active_since=active_since,
            last_breach_at=now,
            value=value,
            samples=samples,
            detail=detail,
        )
    if prior.state is AlertState.FIRING and rule.keep_firing_for:
        quiet_since = prior.keep_firing_since or now
        if now - quiet_since < rule.keep_firing_for:
            return replace(prior, keep_firing_since=quiet_since, value=value, samples=samples, detail=detail)
    since = prior.since if prior.state is AlertState.INACTIVE else now
    return AlertStatus(state=AlertState.INACTIVE, since=since, value=value, samples=samples, detail=detail)


def assess(
    rule: Rule,
    previous: AlertStatus | None,
    series: Sequence[Series],
    tail: Sequence[TailEvent],
    now: datetime,
    *,
    window_size: timedelta = WINDOW_SIZE,
    windows: Sequence[Series] | None = None,
    population: Population | None = None,
) -> tuple[Measurement, AlertStatus]:
    """Measure ``rule`` and step its alert from ``previous``: ``measure`` then ``step`` for a plain rule; for a rule
    with ``confidence``, the sequential decision, with the statistic (``AlertStatus.evidence``) carried forward.

    A sequential rule folds ``windows`` (one series per aggregation window, at least those from ``unfolded_since``
    on; by default ``series``, which must then be one per window too) and measures its plain value over ``series``
    (one per window, or summed over the rule's window as the evaluator reads plain rules). A sequential cohort rule
    compares its cohorts since ``population`` (the flag's split) started and checks their sizes against it
    (without one: no split is expected and the sizes are not checked).
    """
    measurement = measure(rule, series, tail, now, window_size=window_size)
    if rule.confidence is None:
        return measurement, step(rule, previous, measurement, now)
    folded = series if windows is None else windows
    evidence: Evidence | CohortEvidence
    if rule.kind is RuleKind.COHORT:
        split = population or Population(expected_share=None, since=_EPOCH, revision=0)
        measurement, evidence = _cohort_sequential(rule, previous, folded, measurement, now, window_size, split)
    else:
        measurement, evidence = _sequential(rule, previous, (series, folded), measurement, now, window_size)
    status = step(rule, previous, measurement, now)
    return measurement, replace(status, evidence=evidence)


def hypotheses(rule: Rule) -> Hypotheses:
    """A sequential rule's threshold and alternative, as shares (ratio) or events per second (rate)."""
    return _hypotheses(rule.kind, rule.threshold, rule.against, rule.per)


@functools.lru_cache(maxsize=256)  # asked at every evaluation of every sequential rule; rules are not hashable
def _hypotheses(kind: RuleKind, threshold: str, against: str, per: timedelta) -> Hypotheses:
    null, alternative = float(Fraction(threshold)), float(Fraction(against))
    if kind is RuleKind.RATIO:
        return Hypotheses.ratio(null, alternative)
    if kind is RuleKind.RATE:
        seconds = per.total_seconds()
        return Hypotheses.poisson(null / seconds, alternative / seconds)
    if kind is RuleKind.MEAN:
        return Hypotheses.mean_of(null, alternative)
    raise ValueError(f"a {kind.value} rule does not decide by a CUSUM (ratio, rate and mean rules do)")


@functools.lru_cache(maxsize=64)  # parsed at every evaluation, it was a tenth of a sequential rule's assess
def _decision_threshold(confidence: str) -> float:
    return sequential.decision_threshold(float(Fraction(confidence)))


def unfolded_since(rule: Rule, previous: AlertStatus | None, now: datetime, window_size: timedelta) -> datetime:
    """The start of the oldest window ``assess`` folds for sequential ``rule`` from ``previous`` at ``now``: which
    windows the evaluator reads one by one (the rule's window for a new alert, the last window or two later on)."""
    since = window_cutoff(now, rule.window, window_size)
    prior = previous.evidence if previous is not None else None
    if rule.kind is RuleKind.COHORT:
        return since if not isinstance(prior, CohortEvidence) else max(since, prior.through)
    return sequential.resume(_ratio_evidence(prior), hypotheses(rule), since, window_size)[1]


def _ratio_evidence(evidence: Evidence | CohortEvidence | None) -> Evidence | None:
    return evidence if isinstance(evidence, Evidence) else None


def _tally(
    rule: Rule, series: Iterable[Series], since: datetime, now: datetime
) -> dict[datetime, tuple[int, float, float]]:
    """Per window start, the (selected, matching, 0) events of ``rule`` (a rate's selected events all match), or a
    mean's (values, their sum, their squares' sum)."""
    windows: dict[datetime, tuple[int, float, float]] = {}
    for item in series:
        if not since <= item.start <= now or not rule.where.admits(item.outcome, item.variant, item.labels):
            continue
        events, counted, squares = windows.get(item.start, (0, 0, 0.0))
        if rule.kind is RuleKind.MEAN:
            windows[item.start] = (events + item.value_count, counted + item.value_sum, squares + item.value_sumsq)
            continue
        hit = rule.kind is RuleKind.RATE or rule.numerator.admits(item.outcome, item.variant, item.labels)
        windows[item.start] = (events + item.count, counted + item.count if hit else counted, 0.0)
    return windows


def _sequential(
    rule: Rule,
    previous: AlertStatus | None,
    read: tuple[Sequence[Series], Sequence[Series]],
    plain: Measurement,
    now: datetime,
    window_size: timedelta,
) -> tuple[Measurement, Evidence]:
    """The sequential measurement: the plain value over the window (``read[0]``), the verdict of the CUSUM after
    folding the windows (``read[1]``)."""
    assert rule.confidence is not None
    tested = hypotheses(rule)
    limit = _decision_threshold(rule.confidence)
    since = window_cutoff(now, rule.window, window_size)
    windows = _tally(rule, read[1], since, now)
    totals = (windows if read[0] is read[1] else _tally(rule, read[0], since, now)).values()
    selected, matching = sum(events for events, _, _ in totals), sum(counted for _, counted, _ in totals)
    prior = _ratio_evidence(previous.evidence if previous is not None else None)
    evidence, upper, lower = sequential.advance(prior, tested, limit, windows, since=since, now=now, size=window_size)
    found = sequential.verdict(upper, lower, limit)
    if tested.mean and found is not Verdict.BREACH:
        # Only a breach is shown sequentially; a mean clears on its plain comparison (see alerting.sequential).
        found = Verdict.CLEAR if plain.sufficient and not plain.breached else Verdict.UNDECIDED
    if tested.rate:
        span = max(now - since, rule.window).total_seconds()  # as the plain rate divides
        estimate: float | None = selected / span
    else:
        estimate = matching / selected if selected else None
    decided = _sequential_words(rule, tested, found, (upper, lower, limit), estimate)
    sufficient = plain.sufficient and found is not Verdict.UNDECIDED
    return (
        replace(
            plain,
            sufficient=sufficient,
            breached=sufficient and found is Verdict.BREACH,
            detail=f"{plain.detail}; {decided}",
        ),
        evidence,
    )


def _sequential_words(
    rule: Rule, tested: Hypotheses, found: Verdict, statistic: tuple[float, float, float], estimate: float | None
) -> str:
    """The sequential part of a measurement's detail: the verdict, the evidence, and what it still needs."""
    upper, lower, limit = statistic
    if found is Verdict.BREACH:
        return f"sequential: breach, evidence {upper:.3g} of {limit:.3g} nats for more than {rule.threshold}"
    if tested.mean:
        if found is Verdict.CLEAR:
            return f"sequential: clear by the plain comparison, evidence {upper:.3g} of {limit:.3g} nats for a breach"
        return (
            f"sequential: undecided, the mean is above {rule.threshold} but the evidence {upper:.3g} of "
            f"{limit:.3g} nats does not show it yet"
        )
    if found is Verdict.CLEAR:
        return f"sequential: clear, evidence {lower:.3g} of {limit:.3g} nats of no breach of {rule.against}"
    words = (
        f"sequential: undecided, evidence {upper:.3g} for a breach and {lower:.3g} against one, "
        f"of {limit:.3g} nats needed"
    )
    ahead = sequential.outlook(tested, upper, lower, limit, estimate)
    if ahead.toward is None:
        if estimate is None:
            return f"{words}; no events yet"
        shown = _estimate_words(rule, tested, estimate)
        return f"{words}; cannot tell how many more events: {shown} sits between {rule.threshold} and {rule.against}"
    goal = "breach" if ahead.toward is Verdict.BREACH else "clear"
    if ahead.seconds is not None and not ahead.events:
        return f"{words}; about {ahead.seconds:.0f}s more without events to {goal}"
    more = f"about {ahead.events:.0f} more events"
    if ahead.seconds is not None:
        more += f" ({ahead.seconds:.0f}s at {_estimate_words(rule, tested, estimate or 0.0)})"
    return f"{words}; {more} to {goal}"


def _estimate_words(rule: Rule, tested: Hypotheses, estimate: float) -> str:
    if tested.rate:
        return f"{estimate * rule.per.total_seconds():.4g} per {format_duration(rule.per)}"
    return f"{100 * estimate:.4g}%"


@functools.lru_cache(maxsize=64)  # parsed once per written value, as _hypotheses are, not at every evaluation
def _cohort_test(threshold: str, against: str, confidence: str) -> CohortTest:
    return CohortTest(float(Fraction(threshold)), float(Fraction(against)), float(Fraction(confidence)))


def _cohort_sequential(
    rule: Rule,
    previous: AlertStatus | None,
    folded: Sequence[Series],
    plain: Measurement,
    now: datetime,
    window_size: timedelta,
    population: Population,
) -> tuple[Measurement, CohortEvidence]:
    """The sequential cohort measurement: the plain difference over the window, the verdict of the two-sample test
    on the cohorts' counts since the split started (``alerting.cohorts``), and the sample-ratio check."""
    assert rule.confidence is not None and rule.canary_variant is not None and rule.baseline_variant is not None
    test = _cohort_test(rule.threshold, rule.against, rule.confidence)
    basis = f"{test.basis} {population.basis}"
    split_start = sequential.aligned(population.since, window_size)
    if split_start < population.since:
        split_start += window_size  # a window holding the change mixes both splits: the first whole one counts
    since = max(window_cutoff(now, rule.window, window_size), split_start)
    prior = previous.evidence if previous is not None else None
    if not isinstance(prior, CohortEvidence) or prior.basis != basis:
        prior = None  # summed under another split or other hypotheses: start afresh
    open_start = sequential.aligned(now, window_size)
    start = since if prior is None else max(since, prior.through)
    evidence = prior or CohortEvidence(0, 0, 0, 0, start, basis)
    if start <= open_start:
        selected = [item for item in folded if start <= item.start < open_start]
        canary = _ratio(selected, rule, rule.canary_variant)
        baseline = _ratio(selected, rule, rule.baseline_variant)
        evidence = evidence.plus((canary[1], canary[0]), (baseline[1], baseline[0]), open_start)
    found = cohorts.compare(evidence, test, population.expected_share)
    sufficient = plain.sufficient and found.verdict is not Verdict.UNDECIDED
    return (
        replace(
            plain,
            sufficient=sufficient,
            breached=sufficient and found.verdict is Verdict.BREACH,
            mismatch=found.mismatch,
            detail=f"{plain.detail}; {_cohort_words(rule, evidence, found, population, test)}",
        ),
        evidence,
    )


def _cohort_words(
    rule: Rule, evidence: CohortEvidence, found: cohorts.Comparison, population: Population, test: CohortTest
) -> str:
    """The sequential part of a cohort measurement's detail: the verdict, the evidence since the split started, how
    many more canary events would decide, and the sample-ratio check."""
    counted = (
        f"{rule.canary_variant} {evidence.canary_matching}/{evidence.canary_events}, "
        f"{rule.baseline_variant} {evidence.baseline_matching}/{evidence.baseline_events} since the split started"
    )
    if found.difference is None:
        shown = f"sequential: undecided, {counted}: a cohort has no events yet"
    else:
        verdict = {
            Verdict.BREACH: f"breach, the canary worse by more than {rule.threshold}",
            Verdict.CLEAR: f"clear, the canary not worse by {rule.against}",
            Verdict.UNDECIDED: "undecided",
        }[found.verdict]
        weighed = (
            f"evidence {found.breach_evidence:.3g} for a breach and {found.clear_evidence:.3g} against one, "
            f"of {found.limit:.3g} nats needed"
        )
        shown = f"sequential: {verdict}; difference {found.difference:.4g}, {weighed}; {counted}"
        ahead = cohorts.outlook(evidence, test) if found.verdict is Verdict.UNDECIDED else None
        if ahead is not None:
            goal = "breach" if ahead[0] is Verdict.BREACH else "clear"
            shown += f"; about {ahead[1]} more {rule.canary_variant} events to {goal} at these shares"
    share = population.expected_share
    total = evidence.canary_events + evidence.baseline_events
    if share is None:
        return f"{shown}; cohort sizes not checked: the flag serves no plain percentage split"
    actual = f"{100 * evidence.canary_events / total:.3g}%" if total else "no events"
    if found.mismatch:
        return (
            f"{shown}; sample ratio mismatch: {rule.canary_variant} holds {actual} of the events, the rollout serves "
            f"it {100 * share:.3g}%: the comparison is not to be trusted"
        )
    return f"{shown}; cohort sizes consistent with the rollout's {100 * share:.3g}% ({actual} of the events)"
