"""Unit tests for the guard simulation (``controlplane.alerting.simulation``): what it reports for guards whose
behaviour is known, that it is deterministic for a seed, and that skipping evaluations whose result cannot
change gives what evaluating every time gives, status for status."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from controlplane.alerting import simulation
from controlplane.alerting.rules import AlertStatus
from controlplane.alerting.simulation import (
    Guard,
    Scenario,
    SimulationError,
    Traffic,
    guard_for,
    simulate,
)
from controlplane.catalog.events import EventType, LabelSpec
from controlplane.catalog.rules import AlertState, Comparison, Rule, RuleKind, RuleMode, RuleSource, Selector

HTTP = EventType(
    pipeline="demo",
    name="http_request",
    labels={
        "route": LabelSpec(("upload", "other")),
        "status_class": LabelSpec(("2xx", "3xx", "4xx", "5xx")),
    },
)
VISION = EventType(pipeline="demo", name="vision", outcomes=("ok", "error"))


def selector(**matches: list[str]) -> Selector:
    return Selector({key: frozenset(values) for key, values in matches.items()})


def rule(kind: RuleKind = RuleKind.RATIO, **changes: Any) -> Rule:
    base = Rule(
        name=f"{kind.value}-guard",
        pipeline="demo",
        kind=kind,
        event="http_request",
        op=Comparison.GT,
        threshold="0.03",
        window=timedelta(minutes=5),
        min_samples=50,
        where=selector(route=["upload"]),
        numerator=selector(status_class=["4xx", "5xx"]),
    )
    return replace(base, **changes)


def streak(**changes: Any) -> Rule:
    base = rule(
        RuleKind.STREAK,
        event="vision",
        op=Comparison.GE,
        threshold="3",
        window=timedelta(0),
        min_samples=0,
        outcome="error",
        where=Selector(),
        numerator=Selector(),
    )
    return replace(base, **changes)


def one(guard: Guard, traffic: Traffic, **options: Any) -> simulation.StageOutcome:
    onsets = options.pop("onsets", (0.0,))
    stage_seconds = options.pop("stage_seconds", 900.0)
    scenario = Scenario((guard,), traffic, onsets, stage_seconds=stage_seconds)
    return simulate([scenario], **{"trials": 20, "seed": 7, **options})[0]


def test_a_bad_event_is_one_the_guard_counts_and_a_good_one_is_not() -> None:
    guard = guard_for(rule(), HTTP)
    assert guard.bad.labels == {"route": "upload", "status_class": "4xx"}
    assert guard.good.labels == {"route": "upload", "status_class": "2xx"}
    vision = guard_for(streak(), VISION)
    assert (vision.bad.outcome, vision.good.outcome) == ("error", "ok")
    rate = guard_for(rule(RuleKind.RATE, where=selector(route=["upload"], status_class=["5xx"])), HTTP)
    assert rate.bad.labels == {"route": "upload", "status_class": "5xx"}
    assert not rate.rule.where.admits(rate.good.outcome, "on", rate.good.labels)


@pytest.mark.parametrize(
    ("changed", "words"),
    [
        ({"source": RuleSource.PROMETHEUS, "kind": RuleKind.QUERY}, "measured by Prometheus"),
        ({"numerator": Selector()}, "counts every event"),
        ({"numerator": selector(route=["upload"])}, "every event in its scope"),
        ({"where": selector(variant=["off"])}, "never sees the canary"),
    ],
)
def test_what_cannot_be_simulated_is_refused_in_words(changed: dict[str, Any], words: str) -> None:
    with pytest.raises(SimulationError, match=words):
        guard_for(rule(**changed), HTTP)


def test_a_guard_that_can_never_fire_never_rolls_back() -> None:
    never = guard_for(rule(threshold="1"), HTTP)  # a share is never above 1
    outcome = one(never, Traffic(rate=1000, healthy=0.5, regressed=1.0), onsets=(0.0, 300.0))
    assert outcome.stage.healthy_rolled_back == 0
    for detection in outcome.stage.detections:
        assert (detection.caught, detection.before_onset) == (0, 0)
        assert detection.median_delay is None and detection.p90_delay is None


@pytest.mark.parametrize("onset", [0.0, 300.0])
def test_a_regression_to_every_event_failing_is_always_caught_quickly(onset: float) -> None:
    guard = guard_for(rule(), HTTP)
    outcome = one(guard, Traffic(rate=3000, healthy=0.0, regressed=1.0), onsets=(onset,), trials=30)
    (detection,) = outcome.stage.detections
    assert outcome.stage.healthy_rolled_back == 0
    assert detection.caught == 1
    # 10 events a second: 50 samples (or 3% of a full window) within seconds, seen at the next 2 s evaluation.
    assert detection.p90_delay is not None and detection.p90_delay <= 30


def test_a_held_guard_rolls_back_no_sooner_than_its_hold() -> None:
    guard = guard_for(rule(hold=timedelta(minutes=1)), HTTP)
    (detection,) = one(guard, Traffic(rate=3000, healthy=0.0, regressed=1.0), trials=10).stage.detections
    assert detection.caught == 1
    assert detection.median_delay is not None and 60 <= detection.median_delay <= 90


def test_the_stage_is_rolled_back_by_the_first_of_its_guards() -> None:
    guards = (guard_for(rule(), HTTP), guard_for(rule(hold=timedelta(minutes=2), name="slow"), HTTP))
    scenario = Scenario(guards, Traffic(rate=3000, healthy=0.0, regressed=1.0), (0.0,), stage_seconds=600)
    outcome = simulate([scenario], trials=5, seed=3)[0]
    fast, slow = (figures.detections[0].median_delay for figures in outcome.guards)
    assert fast is not None and slow is not None and fast < slow
    assert outcome.stage.detections[0].median_delay == fast


def test_a_warm_up_fills_the_windows_before_the_stage_starts() -> None:
    # 3% of 50 events: a healthy 1% breaches it by chance while the window fills, never once it is full.
    guard = guard_for(rule(), HTTP)
    cold = one(guard, Traffic(rate=3000, healthy=0.01, regressed=0.01), onsets=(), trials=60, stage_seconds=60)
    warm = one(
        guard, Traffic(rate=3000, healthy=0.01, regressed=0.01, warm_up=300), onsets=(), trials=60, stage_seconds=60
    )
    assert cold.stage.healthy_rolled_back > 0
    assert warm.stage.healthy_rolled_back == 0


def test_a_seed_gives_the_same_figures_with_any_number_of_workers() -> None:
    guards = (guard_for(rule(), HTTP), guard_for(streak(), VISION))
    scenario = Scenario(guards, Traffic(rate=300, healthy=0.02, regressed=0.08), (0.0, 200.0), stage_seconds=600)
    first = simulate([scenario], trials=12, seed=5)
    assert simulate([scenario], trials=12, seed=5, workers=2) == first
    assert simulate([scenario], trials=12, seed=6) != first


def kinds() -> list[tuple[Guard, Traffic]]:
    """One guard of each kind, with `for` and `keep_firing_for` where they apply, on traffic that crosses them."""
    traffic = Traffic(rate=300, healthy=0.03, regressed=0.1, baseline_rate=200)
    per = replace(traffic, baseline_rate=0)
    rate = rule(RuleKind.RATE, where=selector(status_class=["5xx"]), threshold="2", min_samples=0)
    return [
        (guard_for(rule(hold=timedelta(seconds=30), keep_firing_for=timedelta(minutes=1)), HTTP), traffic),
        (guard_for(rule(window=timedelta(minutes=1), min_samples=20), HTTP), traffic),
        (guard_for(rule(RuleKind.MEAN, threshold="6", hold=timedelta(minutes=1), min_samples=5), HTTP), traffic),
        (
            guard_for(rule(RuleKind.COHORT, threshold="0.02", canary_variant="on", baseline_variant="off"), HTTP),
            traffic,
        ),
        (guard_for(rate, HTTP), per),
        (guard_for(streak(), VISION), replace(traffic, healthy=0.2)),
        # Busy and mostly good: the tail often holds only good events, so newer tails read like the last one.
        (guard_for(streak(), VISION), Traffic(rate=3000, healthy=0.01, regressed=0.3)),
        (guard_for(streak(window=timedelta(seconds=30), min_samples=3), VISION), replace(traffic, healthy=0.2)),
        (guard_for(rule(confidence="0.99", min_samples=20, keep_firing_for=timedelta(minutes=1)), HTTP), traffic),
        (guard_for(replace(rate, confidence="0.99"), HTTP), per),
        (guard_for(rule(RuleKind.MEAN, threshold="6", confidence="0.99", min_samples=5), HTTP), per),
    ]


KINDS = [
    *("ratio-held", "ratio-1m", "mean-held", "cohort", "rate", "streak", "streak-busy", "streak-30s"),
    *("sequential-ratio", "sequential-rate", "sequential-mean"),
]


def as_sequential(status: AlertStatus) -> tuple[object, ...]:
    """What of a sequential rule's status decides its future: the state (the quiet ones alike), the evidence, and
    when an active episode began."""
    quiet = status.state in (AlertState.INACTIVE, AlertState.INSUFFICIENT_DATA)
    return ("quiet" if quiet else status.state, status.evidence, None if quiet else status.active_since)


@pytest.mark.parametrize(("guard", "traffic"), kinds(), ids=KINDS)
def test_skipping_unchanged_evaluations_changes_no_status(
    guard: Guard, traffic: Traffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = simulation._clock(1800.0, 2.0)
    calls: list[int] = []
    evaluate = simulation._evaluate

    def counted(*args: Any) -> Any:
        calls.append(1)
        return evaluate(*args)

    monkeypatch.setattr(simulation, "_evaluate", counted)
    seen: set[AlertState] = set()
    for trial in range(3):
        stream = simulation._draw(guard, traffic, clock, 600 * 1_000_000, str(trial))
        every: list[AlertStatus] = []
        skipping: list[AlertStatus] = []
        full = simulation._watch(guard, stream, clock, skip=False, to_end=True, trace=every)
        evaluated = len(calls)
        fast = simulation._watch(guard, stream, clock, skip=True, to_end=True, trace=skipping)
        assert fast == full
        if guard.rule.confidence is None:
            assert skipping == every
        else:
            # Between window boundaries after a clear, a sequential rule's quiet evaluations are left out: the same
            # rollbacks, episodes, active states and evidence, not the same values or details in between.
            assert [as_sequential(status) for status in skipping] == [as_sequential(status) for status in every]
        assert len(every) == len(clock.offsets) == evaluated
        skipped = len(every) - (len(calls) - evaluated)
        calls.clear()
        # Rate rules and streaks over a window read the clock itself: they are evaluated every time.
        reads_clock = guard.rule.kind is RuleKind.RATE or (guard.rule.kind is RuleKind.STREAK and guard.rule.window)
        assert (skipped > 0) is not reads_clock
        seen |= {status.state for status in every}
    assert len(seen) > 1  # the traffic moved the alert


def test_skipping_gives_the_same_figures_as_evaluating_every_time() -> None:
    guards = tuple(guard for guard, _ in kinds()[:4])
    scenario = Scenario(guards, kinds()[0][1], (0.0, 300.0), stage_seconds=900)
    assert simulate([scenario], trials=6, seed=2) == simulate([scenario], trials=6, seed=2, skip_unchanged=False)


def test_a_sequential_guard_folds_the_windows_one_by_one_and_catches_what_the_plain_one_does() -> None:
    plain, sequential = rule(), rule(confidence="0.99", name="sequential")
    guards = (guard_for(plain, HTTP), guard_for(sequential, HTTP))
    scenario = Scenario(guards, Traffic(rate=1000, healthy=0.0, regressed=1.0), (0.0, 300.0), stage_seconds=600)
    outcome = simulate([scenario], trials=5, seed=4)[0]
    for figures in outcome.guards:
        assert figures.healthy_rolled_back == 0
        assert all(detection.caught == 1 for detection in figures.detections)
    clock = simulation._clock(600.0, 2.0)
    stream = simulation._draw(guards[1], scenario.traffic, clock, None, "1")
    assert isinstance(stream, simulation._Pieces)
    reader = simulation._Reader(guards[1], stream, clock)
    for index in range(150):  # 5 minutes
        reader.advance(index)
    summed, _, windows = reader.read(149, None)
    assert windows is not None
    starts = sorted({item.start for item in windows})
    assert len(starts) == len(windows) == 30  # one per 10-second window (every event good): the 5 minutes' windows
    arrived = sum(stream.totals[reader.low : reader.high])
    assert sum(item.count for item in windows) == sum(item.count for item in summed) == arrived


def test_chance_streaks_are_counted_at_about_the_rate_runs_of_errors_occur() -> None:
    # 0.1 events a second, evaluated every second: a run of 3 errors is almost always seen before the next event.
    share = 0.3
    traffic = Traffic(rate=30, healthy=share, regressed=share)
    scenario = Scenario((guard_for(streak(), VISION),), traffic, (), stage_seconds=3600, interval=1)
    (figures,) = simulate([scenario], trials=40, seed=11)[0].guards
    # Runs of at least 3 errors start at an event with probability (1 - p) p^3; 8,640 events a day.
    expected = 8640 * (1 - share) * share**3
    assert figures.chance_streaks_per_24h is not None
    assert 0.75 * expected <= figures.chance_streaks_per_24h <= 1.1 * expected
    assert figures.healthy_rolled_back > 0.9


def test_impossible_scenarios_are_refused() -> None:
    guard = guard_for(rule(), HTTP)
    with pytest.raises(SimulationError, match=r"within 0\.\.1"):
        Traffic(rate=100, healthy=1.5, regressed=0.1)
    with pytest.raises(SimulationError, match="onset"):
        Scenario((guard,), Traffic(rate=100, healthy=0.01, regressed=0.1), (3600.0,))
    mean = guard_for(rule(RuleKind.MEAN, threshold="0"), HTTP)
    with pytest.raises(SimulationError, match="means"):
        Scenario((mean,), Traffic(rate=100, healthy=0.01, regressed=0.1))


def test_a_sequential_mean_guard_weighs_each_window_by_its_values() -> None:
    # The e-value of a window needs its values' count, sum and sum of squares, as fetch_windows reads them.
    guard = guard_for(rule(RuleKind.MEAN, threshold="6", confidence="0.99", min_samples=20), HTTP)
    traffic = Traffic(rate=1000, healthy=0.0, regressed=0.0, healthy_mean=2, regressed_mean=24)
    outcome = one(guard, traffic, onsets=(300.0,), trials=10, stage_seconds=900)
    (detection,) = outcome.stage.detections
    assert outcome.stage.healthy_rolled_back == 0
    assert detection.caught == 1 and detection.median_delay is not None and detection.median_delay <= 120
    clock = simulation._clock(900.0, 2.0)
    stream = simulation._draw(guard, traffic, clock, None, "1")
    reader = simulation._Reader(guard, stream, clock)
    for index in range(15):
        reader.advance(index)
    summed, _, windows = reader.read(14, None)
    assert windows
    for item in windows:
        assert item.value_count == item.count and item.value_sum > 0
        assert item.value_sumsq >= item.value_sum**2 / item.count  # a sum of squares, not of the values
    assert sum(item.value_sumsq for item in windows) == pytest.approx(sum(item.value_sumsq for item in summed))


def test_a_shadow_guard_is_reported_but_never_rolls_the_stage_back() -> None:
    watched = guard_for(rule(name="watched", mode=RuleMode.SHADOW), HTTP)
    enforced = guard_for(rule(name="enforced", hold=timedelta(minutes=2)), HTTP)
    scenario = Scenario((watched, enforced), Traffic(rate=3000, healthy=0.0, regressed=1.0), (0.0,), stage_seconds=600)
    outcome = simulate([scenario], trials=5, seed=3)[0]
    shadow, other = outcome.guards
    assert (shadow.shadow, other.shadow, outcome.stage.shadow) == (True, False, False)
    fast, slow = shadow.detections[0].median_delay, other.detections[0].median_delay
    assert fast is not None and slow is not None and fast < slow
    # The stage is rolled back by the enforced guard, later: the shadow one only says when it would have.
    assert outcome.stage.detections[0].median_delay == slow
    alone = simulate([replace(scenario, guards=(watched,))], trials=5, seed=3)[0]
    assert alone.guards[0].detections[0].caught == 1
    assert alone.stage.detections[0].caught == 0 and alone.stage.healthy_rolled_back == 0


def test_pieces_hold_the_poisson_traffic_the_scenario_asks_for() -> None:
    # Drawn per piece (a Poisson count, a binomial share of bad events, log-normal values): the same process as
    # events one by one. Totals of a long stage against their expectations, within 5 standard deviations.
    clock = simulation._clock(36000.0, 2.0)  # ten hours
    onset = 18000 * 1_000_000  # half-way
    ratio = guard_for(rule(), HTTP)
    stream = simulation._draw(ratio, Traffic(rate=600, healthy=0.02, regressed=0.1), clock, onset, "pieces")
    assert isinstance(stream, simulation._Pieces)
    starts = stream.grid.starts
    before = [kinds for start, kinds in zip(starts, stream.kinds, strict=True) if start < onset]
    after = [kinds for start, kinds in zip(starts, stream.kinds, strict=True) if start >= onset]
    for pieces, share in ((before, 0.02), (after, 0.1)):
        events, bad = sum(kinds[0] + kinds[1] for kinds in pieces), sum(kinds[1] for kinds in pieces)
        assert abs(events - 36_000) <= 5 * 36_000**0.5  # 600 per 5 minutes for 5 hours
        assert abs(bad - share * events) <= 5 * (events * share * (1 - share)) ** 0.5
        assert sum(kinds[2] + kinds[3] for kinds in pieces) == 0  # no baseline asked for
    mean = guard_for(rule(RuleKind.MEAN, threshold="6", min_samples=5), HTTP)
    traffic = Traffic(rate=600, healthy=0.0, regressed=0.0, healthy_mean=3, regressed_mean=12, baseline_rate=300)
    values = simulation._draw(mean, traffic, clock, onset, "values")
    assert isinstance(values, simulation._Pieces)
    for regressed, expected in ((False, 3.0), (True, 12.0)):
        chosen = [number for number, start in enumerate(values.grid.starts) if (start >= onset) is regressed]
        count = sum(values.kinds[number][0] for number in chosen)
        total = sum(values.sums[number][0] for number in chosen)
        # Log-normal with shape 1: the standard deviation is the mean times sqrt(e - 1).
        assert abs(total / count - expected) <= 5 * expected * 1.311 / count**0.5
        baseline = sum(values.kinds[number][2] for number in chosen)
        assert abs(baseline - 18_000) <= 5 * 18_000**0.5
        assert sum(values.sums[number][1] for number in chosen) / baseline == pytest.approx(3.0, rel=0.05)
