"""What a stage's guards would do, by Monte Carlo through the alerting rule engine itself: how often a healthy
stage is rolled back, how often and how fast a regression is.

A trial is one stage of ``stage_seconds`` on a simulated clock (nothing sleeps), evaluated every ``interval``
seconds like the served evaluation job. Every evaluation of a guard goes through ``_evaluate`` (the engine's
``assess``: ``measure`` then ``step``, or the sequential decision of a rule with ``confidence``; never a second
implementation of a rule), and a guard rolls the stage back at the first evaluation where it is firing with a
breaching measurement: the condition the served plan lists as ``breaching`` and
``guarding.rollback.roll_back_breaching`` acts on. Guards are independent alerts, so each one is watched on its own
and the stage is rolled back by the first of them, shadow guards (``mode: shadow``) aside: they are watched and
reported like the others, but never roll back, so the stage's figures leave them out.

The traffic model, per guard (each guard gets its own stream of its own event type, at the same rate):

- The canary cohort sends the guarded event as a Poisson process of ``rate`` events per 5 minutes (so each
  10-second window holds a Poisson number of events spread uniformly over it); an optional baseline cohort sends
  ``baseline_rate`` (a cohort guard without one gets a baseline as busy as the canary). With ``warm_up``, both
  send healthy traffic for that many seconds before the stage starts, so the guard's windows are full at its
  start (as when the rule reads traffic that was there before the stage); without, they start empty.
- Each event is bad with probability ``healthy``; in the canary, ``regressed`` from the ``onset`` (seconds from
  the stage start) on. A bad event is one the rule counts: its ``numerator`` (ratio, cohort), its ``where``
  (rate: a good event is one of the same type it does not count), its ``outcome`` (streak). Events outside the
  rule's scope are not generated: they change no measurement (only the 64-event tail of a streak rule with a
  ``where`` would be shorter in life).
- Mean rules: every event carries a log-normal value (shape ``sigma`` in log space) with mean ``healthy_mean``
  (default: half the threshold), in the canary ``regressed_mean`` (default: twice the threshold) from the onset.
- What the engine is handed is what the served evaluation hands it: for window rules one ``Series`` per event shape
  summed over the rule's window, starting at its cutoff (as ``alerting.queries.fetch_series`` sums them), or for
  sequential rules one per shape and 10-second window (``fetch_windows``), the current window holding only the
  events that arrived by ``now``; for streak rules the newest ``TAIL_LENGTH`` events in order. A mean rule's series
  carry their values' count, sum and sum of squares (what a sequential mean weighs each window by). Each trial
  starts with empty windows and a fresh alert.

Deterministic for a seed: every (traffic, onset, trial, guard) draws from its own ``random.Random`` seeded with
a string of them, so neither the number of workers nor the other guards of a stage change a guard's result.

One cohesive thing past the usual length: the traffic model, the trial loop over the engine and the figures
only make sense together.
"""

from __future__ import annotations

import functools
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from controlplane.alerting.rules import (
    AlertStatus,
    Measurement,
    Series,
    TailEvent,
    assess,
    unfolded_since,
    window_cutoff,
)
from controlplane.catalog.events import EventType
from controlplane.catalog.rules import WINDOW_SIZE, AlertState, Rule, RuleKind, RuleSource, Selector
from controlplane.telemetry.service import TAIL_LENGTH

__all__ = [
    "Detection",
    "EventShape",
    "Guard",
    "GuardOutcome",
    "Scenario",
    "SimulationError",
    "StageOutcome",
    "Traffic",
    "guard_for",
    "simulate",
]

_START = datetime(2026, 1, 5, tzinfo=UTC)  # the simulated stage start: any instant on a window edge
_MICROS = 1_000_000  # event and evaluation times are whole microseconds, as datetimes hold them: exact compares
_WINDOW_US = WINDOW_SIZE // timedelta(microseconds=1)
_DAY = 86_400


class SimulationError(ValueError):
    """Something the simulation cannot model, said in words."""


@dataclass(frozen=True, slots=True)
class EventShape:
    """The outcome and labels of a generated event (the variant comes from its cohort)."""

    outcome: str
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Guard:
    """A guard rule as the simulation drives it: what its good and bad events look like, and the cohorts."""

    rule: Rule
    good: EventShape
    bad: EventShape
    canary_variant: str
    baseline_variant: str


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the cohorts send (see the module docstring): rates in events per 5 minutes, shares of bad events."""

    rate: float
    healthy: float
    regressed: float
    baseline_rate: float = 0.0
    healthy_mean: float | None = None
    regressed_mean: float | None = None
    sigma: float = 1.0
    # Out of the repr, which seeds the trials: a warm-up joins the seed only when there is one (``_run_task``), so
    # the trials of a seed without one are what they were before warm-ups existed.
    warm_up: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if self.warm_up < 0:
            raise SimulationError("the warm-up must not be negative")
        if not self.rate > 0 or self.baseline_rate < 0:
            raise SimulationError("rates must be positive (the baseline's may be 0)")
        if not (0 <= self.healthy <= 1 and 0 <= self.regressed <= 1):
            raise SimulationError("the healthy and regressed shares must be within 0..1")
        for mean in (self.healthy_mean, self.regressed_mean):
            if mean is not None and not mean > 0:
                raise SimulationError("a mean value must be positive")
        if self.sigma < 0:
            raise SimulationError("sigma must not be negative")

    def means_for(self, rule: Rule) -> tuple[float, float]:
        """A mean rule's healthy and regressed mean values: as given, else half and twice its threshold."""
        threshold = float(rule.limit)
        means = (self.healthy_mean or threshold / 2, self.regressed_mean or threshold * 2)
        if not min(means) > 0:
            raise SimulationError(f"guard `{rule.name}` (threshold {rule.threshold}): give healthy and regressed means")
        return means


@dataclass(frozen=True, slots=True)
class Scenario:
    """One stage to simulate: its guards, the traffic, and the regression onsets to try (seconds from the start)."""

    guards: tuple[Guard, ...]
    traffic: Traffic
    onsets: tuple[float, ...] = (0.0,)
    stage_seconds: float = 3600.0
    interval: float = 2.0

    def __post_init__(self) -> None:
        if not self.guards:
            raise SimulationError("a scenario needs at least one guard")
        if not 0 < self.interval <= self.stage_seconds:
            raise SimulationError("the interval must be positive and at most the stage's length")
        if any(not 0 <= onset < self.stage_seconds for onset in self.onsets):
            raise SimulationError("an onset must be within the stage: 0 <= onset < stage seconds")
        for guard in self.guards:
            if guard.rule.kind is RuleKind.MEAN:
                self.traffic.means_for(guard.rule)


@dataclass(frozen=True, slots=True)
class Detection:
    """How a regression from ``onset`` was met. ``caught``: share of trials rolled back at or after the onset;
    ``before_onset``: share rolled back earlier (on healthy traffic). Delays (seconds after the onset) are nearest-
    rank percentiles over the trials still running at the onset, a trial never rolled back counting as infinitely
    late: None when that percentile was never rolled back within the stage."""

    onset: float
    caught: float
    before_onset: float
    median_delay: float | None
    p90_delay: float | None


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    """One guard's figures (or the stage's: the first of its enforced guards). ``chance_streaks_per_24h``: for
    streak guards, the firing episodes per 24 hours the healthy trials saw (watched to their end). A ``shadow`` guard
    (``mode: shadow``) never rolls back: its figures say what it would have done, and the stage's leave it out."""

    guard: str
    kind: str
    healthy_rolled_back: float
    detections: tuple[Detection, ...]
    chance_streaks_per_24h: float | None = None
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class StageOutcome:
    """A scenario's figures: per guard, and for the stage as a whole."""

    scenario: Scenario
    trials: int
    guards: tuple[GuardOutcome, ...]
    stage: GuardOutcome


def guard_for(
    rule: Rule, event: EventType | None = None, *, canary_variant: str = "on", baseline_variant: str = "off"
) -> Guard:
    """The good and bad events of ``rule`` (values from ``event``'s declared ones where it has them); refuses what
    cannot be simulated."""
    if rule.source is not RuleSource.EVENTS or rule.kind is RuleKind.QUERY:
        raise SimulationError(f"guard `{rule.name}` is measured by Prometheus: only event rules can be simulated")
    if rule.kind is RuleKind.COHORT:
        assert rule.canary_variant is not None and rule.baseline_variant is not None
        canary_variant, baseline_variant = rule.canary_variant, rule.baseline_variant
    declared: dict[str, tuple[str, ...]] = {}
    if event is not None:
        declared = {key: spec.values for key, spec in event.labels.items()}
        declared["outcome"] = event.outcomes
    counted = {
        RuleKind.RATIO: rule.numerator,
        RuleKind.COHORT: rule.numerator,
        RuleKind.RATE: rule.where,
        RuleKind.STREAK: Selector({"outcome": frozenset({rule.outcome})}),
    }.get(rule.kind)
    if counted is None:  # mean: every event in scope counts, its value is what matters
        good = bad = _shape(rule, declared, [rule.where], None)
    elif not counted.matches:
        raise SimulationError(f"guard `{rule.name}` counts every event: no share of bad events to vary")
    else:
        scope = [] if rule.kind is RuleKind.RATE else [rule.where]
        bad, good = _shape(rule, declared, [*scope, counted], None), _shape(rule, declared, scope, counted)
    if not rule.where.admits(bad.outcome, canary_variant, bad.labels):
        raise SimulationError(f"guard `{rule.name}` never sees the canary variant `{canary_variant}`")
    return Guard(rule, good, bad, canary_variant, baseline_variant)


def _shape(
    rule: Rule, declared: Mapping[str, Sequence[str]], admit: list[Selector], avoid: Selector | None
) -> EventShape:
    """An event every selector of ``admit`` admits and ``avoid`` (if given) does not; declared values first."""
    keys = sorted({key for selector in admit for key in selector.matches} | set(avoid.matches if avoid else ()))
    chosen: dict[str, str] = {}
    for key in keys:
        if key == "variant":
            continue  # set by the cohort
        allowed = [selector.matches[key] for selector in admit if key in selector.matches]
        candidates = [*declared.get(key, ()), *sorted(set().union(*allowed)), "other", "-"]
        fits = [value for value in candidates if all(value in values for values in allowed)]
        outside = [value for value in fits if avoid is None or value not in avoid.matches.get(key, ())]
        if not fits:
            raise SimulationError(f"guard `{rule.name}`: no value of `{key}` satisfies the rule's selectors")
        chosen[key] = (outside or fits)[0]
    default_outcome = declared.get("outcome", ())[:1] or ("",)
    outcome = chosen.pop("outcome", default_outcome[0])
    shape = EventShape(outcome, chosen)
    if avoid is not None and avoid.admits(shape.outcome, "", shape.labels):
        raise SimulationError(f"guard `{rule.name}`: every event in its scope is one it counts as bad")
    return shape


def simulate(
    scenarios: Sequence[Scenario], *, trials: int, seed: int = 1, workers: int = 1, skip_unchanged: bool = True
) -> list[StageOutcome]:
    """Run ``trials`` healthy trials and ``trials`` per onset of each scenario; ``workers`` processes share them
    (the result does not depend on how many). ``skip_unchanged=False`` evaluates at every interval."""
    if trials < 1:
        raise SimulationError("at least one trial")
    runs = [(index, onset) for index, scenario in enumerate(scenarios) for onset in (None, *scenario.onsets)]
    chunk = max(1, min(50, trials // max(1, 4 * workers)))
    tasks = [
        _Task(index, scenarios[index], onset, seed, start, min(trials, start + chunk), skip_unchanged)
        for index, onset in runs
        for start in range(0, trials, chunk)
    ]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_run_task, tasks))
    else:
        parts = [_run_task(task) for task in tasks]
    by_run: dict[tuple[int, float | None], list[_Trial]] = {run: [] for run in runs}
    for task, part in zip(tasks, parts, strict=True):
        by_run[(task.index, task.onset)].extend(part)
    return [_summarise(scenario, trials, by_run, index) for index, scenario in enumerate(scenarios)]


#: One trial: per guard, (microsecond of its first rollback or None, firing episodes seen).
_Trial = tuple[tuple[int | None, int], ...]


@dataclass(frozen=True, slots=True)
class _Task:
    index: int
    scenario: Scenario
    onset: float | None
    seed: int
    start: int
    stop: int
    skip: bool


def _run_task(task: _Task) -> list[_Trial]:
    scenario = task.scenario
    stage_us = round(scenario.stage_seconds * _MICROS)
    onset_us = None if task.onset is None else round(task.onset * _MICROS)
    clock = _clock(scenario.stage_seconds, scenario.interval)
    warm = scenario.traffic.warm_up
    traffic = f"{scenario.traffic!r}" + (f" warm {warm!r}" if warm else "")
    trials: list[_Trial] = []
    for trial in range(task.start, task.stop):
        outcome = []
        for guard in scenario.guards:
            traffic = f"{scenario.traffic!r}" + (
                f" warm {scenario.traffic.warm_up!r}" if scenario.traffic.warm_up else ""
            )
            key = f"{task.seed}|{traffic}|{task.onset}|{scenario.stage_seconds}|{trial}|{guard.rule.name}"
            stream = _Stream.draw(guard, scenario.traffic, onset_us, stage_us, random.Random(key))
            # Healthy streak guards are watched to the end of the stage: their chance streaks are a figure.
            to_end = onset_us is None and guard.rule.kind is RuleKind.STREAK
            outcome.append(_watch(guard, stream, clock, skip=task.skip, to_end=to_end))
        trials.append(tuple(outcome))
    return trials


@dataclass(slots=True)
class _Stream:
    """A guard's events in time order: microseconds from the start, kind (0/1 canary good/bad, 2/3 baseline),
    value (mean rules)."""

    times: list[int]
    kinds: list[int]
    values: list[float]

    @classmethod
    def draw(cls, guard: Guard, traffic: Traffic, onset_us: int | None, stage_us: int, rng: random.Random) -> _Stream:
        rule = guard.rule
        baseline = traffic.baseline_rate or (traffic.rate if rule.kind is RuleKind.COHORT else 0.0)
        mean = rule.kind is RuleKind.MEAN
        shift = traffic.sigma**2 / 2  # log-normal: mean = exp(mu + sigma^2 / 2)
        mus = [math.log(value) - shift for value in traffic.means_for(rule)] if mean else [0.0, 0.0]
        shares, sigma = (traffic.healthy, traffic.regressed), traffic.sigma
        uniform, log, floor, lognormal = rng.random, math.log, math.floor, rng.lognormvariate
        # Appended to the columns as drawn (the draws, and their order, are those of the event-tuple version: the
        # columns only save building a tuple per event and three lists from them).
        times: list[int] = []
        kinds: list[int] = []
        values: list[float] = []
        add_time, add_kind, add_value = times.append, kinds.append, values.append
        for cohort, rate in ((0, traffic.rate), (2, baseline)):
            if not rate:
                continue
            gap, at = 300 * _MICROS / rate, -traffic.warm_up * _MICROS  # the mean gap between events, in microseconds
            regression = stage_us + 1 if cohort or onset_us is None else onset_us
            while True:
                at -= log(1.0 - uniform()) * gap  # exponential gaps: a Poisson process
                micros = floor(at)
                if micros > stage_us:
                    break
                regressed = micros >= regression
                add_time(micros)
                if mean:
                    add_kind(cohort)
                    add_value(lognormal(mus[regressed], sigma))
                else:
                    add_kind(cohort + (uniform() < shares[regressed]))
        if not mean:
            values = [0.0] * len(times)
        if baseline:  # the two cohorts in time order; a stable sort: at equal times the canary's event first
            order = sorted(range(len(times)), key=times.__getitem__)
            times, kinds, values = [times[i] for i in order], [kinds[i] for i in order], [values[i] for i in order]
        return cls(times, kinds, values)


class _Clock:
    """The evaluation instants after the start (microseconds, datetimes), and each rule window's cutoffs at them."""

    def __init__(self, stage_seconds: float, interval: float) -> None:
        count = int(stage_seconds / interval + 1e-9)
        self.offsets = [round(step * interval * _MICROS) for step in range(1, count + 1)]
        self.instants = [_START + timedelta(microseconds=offset) for offset in self.offsets]
        self._cutoffs: dict[timedelta, tuple[list[int], list[datetime]]] = {}

    def cutoffs(self, window: timedelta) -> tuple[list[int], list[datetime]]:
        """At each evaluation, the start of the oldest aggregation window a rule over ``window`` reads (the engine's
        own ``window_cutoff``), in microseconds from the start and as a datetime."""
        found = self._cutoffs.get(window)
        if found is None:
            instants = [window_cutoff(now, window, WINDOW_SIZE) for now in self.instants]
            offsets = [(at - _START) // timedelta(microseconds=1) for at in instants]
            found = self._cutoffs[window] = (offsets, instants)
        return found


@functools.lru_cache(maxsize=8)
def _clock(stage_seconds: float, interval: float) -> _Clock:
    return _Clock(stage_seconds, interval)


def _evaluate(
    rule: Rule,
    previous: AlertStatus | None,
    series: Sequence[Series],
    tail: Sequence[TailEvent],
    now: datetime,
    windows: Sequence[Series] | None = None,
) -> tuple[Measurement, AlertStatus]:
    """One evaluation of one guard by the rule engine (``assess``: measure, then step; the sequential decision for
    a rule with ``confidence``, folding ``windows``): the only place the simulation calls it."""
    return assess(rule, previous, series, tail, now, window_size=WINDOW_SIZE, windows=windows)


#: What the engine is handed at one evaluation: the series, the tail, the windows a sequential rule folds.
_Read = tuple[list[Series], list[TailEvent], list[Series] | None]


class _Reader:
    """What a guard reads at each evaluation, kept up to date as events arrive and age out: the newest
    ``TAIL_LENGTH`` events (streak), one ``Series`` per event shape summed over [cutoff, now] (window rules, as
    ``alerting.queries.fetch_series`` sums them), and for sequential rules also one per shape and 10-second window
    (as ``fetch_windows`` reads them). ``advance`` says whether anything it reads changed: an event arrived, the cutoff
    moved or a window boundary passed; for a streak without a window, whether the shapes of the tail's events did
    (``tail_key``).

    Cheap to read again: a ``Series`` whose fields did not change since the last read is the same object, and the
    events of a streak's tail are built only when a tail holding them is read."""

    def __init__(self, guard: Guard, stream: _Stream, clock: _Clock) -> None:
        rule = self.rule = guard.rule
        self.stream, self.clock = stream, clock
        self.streak, self.mean = rule.kind is RuleKind.STREAK, rule.kind is RuleKind.MEAN
        self.per_window = rule.confidence is not None
        self.shapes = [
            (guard.good, guard.canary_variant),
            (guard.bad, guard.canary_variant),
            (guard.good, guard.baseline_variant),
            (guard.bad, guard.baseline_variant),
        ]
        # Streak: the tail's events built so far, ``built[0]`` being the stream's event number ``first_built``.
        self.built: list[TailEvent] = []
        self.first_built = 0
        # At each evaluation, the start of the oldest window the rule reads (none for a streak).
        self.cut_us, self.cut_at = ([], []) if self.streak else clock.cutoffs(rule.window)
        # Per shape, the events over [cutoff, now] and (mean rules) their values' sum and sum of squares.
        self.counts, self.sums, self.squares = [0, 0, 0, 0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]
        # Sequential: per 10-second window, its start, as a datetime, and per shape its events, their values' sum
        # and sum of squares (mean rules, whose statistic weighs each window by them).
        self.windows: deque[tuple[int, datetime, list[int], list[float], list[float]]] = deque()
        self.low = self.high = 0
        self.last_cut = self.last_window = -1
        # The last Series read per shape (summed) and per (window start, shape), reused while their fields hold.
        self.summed: list[Series | None] = [None, None, None, None]
        self.per_start: dict[tuple[int, int], Series] = {}

    def advance(self, index: int) -> bool:
        """Take in what arrived by the ``index``-th evaluation and drop what aged out; True when anything changed."""
        times, kinds, values = self.stream.times, self.stream.kinds, self.stream.values
        now_us = self.clock.offsets[index]
        counts, sums, squares, windows = self.counts, self.sums, self.squares, self.windows
        arrived = False
        high, count = self.high, len(times)
        if self.streak:
            while high < count and times[high] <= now_us:
                high += 1
            arrived, self.high = high != self.high, high
            return arrived
        mean, per_window = self.mean, self.per_window
        while high < count and times[high] <= now_us:
            at, kind = times[high], kinds[high]
            counts[kind] += 1
            if mean:
                value = values[high]
                sums[kind] += value
                squares[kind] += value * value
            if per_window:
                start = at - at % _WINDOW_US
                if not windows or windows[-1][0] != start:
                    empty = [0.0, 0.0, 0.0, 0.0]
                    windows.append((start, _START + timedelta(microseconds=start), [0, 0, 0, 0], empty, empty[:]))
                windows[-1][2][kind] += 1
                if mean:
                    windows[-1][3][kind] += value
                    windows[-1][4][kind] += value * value
            high += 1
        arrived, self.high = high != self.high, high
        cut = self.cut_us[index]
        low = self.low
        while low < high and times[low] < cut:  # an event's window starts at or after the cutoff iff it does
            counts[kinds[low]] -= 1
            if mean:
                sums[kinds[low]] -= values[low]
                squares[kinds[low]] -= values[low] * values[low]
            low += 1
        self.low = low
        while windows and windows[0][0] < cut:
            gone = windows.popleft()[0]
            for kind in range(4):
                self.per_start.pop((gone, kind), None)
        window = now_us // _WINDOW_US
        moved = cut != self.last_cut or window != self.last_window
        self.last_cut, self.last_window = cut, window
        return arrived or moved

    def tail_key(self) -> list[int]:
        """The kinds of the events in the tail, oldest first: a streak without a window reads nothing else of them
        (their times only against its window), so the same kinds give the same measurement."""
        return self.stream.kinds[max(0, self.high - TAIL_LENGTH) : self.high]

    def read(self, index: int, previous: AlertStatus | None) -> _Read:
        """What the engine is handed at the ``index``-th evaluation (after ``advance``), as the evaluator reads it:
        the series, the tail, and for a sequential rule the windows its statistic has not folded yet, one by one
        (from ``unfolded_since``)."""
        if self.streak:
            return [], self._tail(), None
        shapes, counts, sums, mean, start = self.shapes, self.counts, self.sums, self.mean, self.cut_at[index]
        summed: list[Series] = []
        for kind in range(4):
            count = counts[kind]
            if not count:
                continue
            total, square = (sums[kind], self.squares[kind]) if mean else (0.0, 0.0)
            known = self.summed[kind]
            if (
                known is None
                or known.count != count
                or known.start != start
                or known.value_sum != total
                or known.value_sumsq != square
            ):
                shape, variant = shapes[kind]
                known = self.summed[kind] = Series(
                    start=start,
                    outcome=shape.outcome,
                    variant=variant,
                    labels=shape.labels,
                    count=count,
                    value_count=count if mean else 0,
                    value_sum=total,
                    value_sumsq=square,
                )
            summed.append(known)
        if not self.per_window:
            return summed, [], None
        since = unfolded_since(self.rule, previous, self.clock.instants[index], WINDOW_SIZE)
        unfolded: list[Series] = []
        for window_us, at, window, totals, squares in reversed(self.windows):  # the newest first: the last one or two
            if at < since:
                break
            for kind in range(4):
                if window[kind]:
                    unfolded.append(self._window_series(window_us, at, kind, window[kind], totals[kind], squares[kind]))
        unfolded.reverse()
        return summed, [], unfolded

    def _window_series(
        self, window_us: int, at: datetime, kind: int, count: int, total: float, square: float
    ) -> Series:
        known = self.per_start.get((window_us, kind))
        if known is None or known.count != count:  # a window's values change only with its events
            shape, variant = self.shapes[kind]
            values = count if self.mean else 0
            known = Series(at, shape.outcome, variant, shape.labels, count, values, total, square)
            self.per_start[(window_us, kind)] = known
        return known

    def _tail(self) -> list[TailEvent]:
        """The newest ``TAIL_LENGTH`` events, building the ones not built yet (those of tails never read are not)."""
        low, high = max(0, self.high - TAIL_LENGTH), self.high
        built = self.built
        if self.first_built + len(built) < low or self.first_built > low:  # nothing built is in this tail any more
            built.clear()
            self.first_built = low
        elif low - self.first_built > TAIL_LENGTH:  # keep the list short: drop what no later tail holds
            del built[: low - self.first_built]
            self.first_built = low
        times, kinds, shapes = self.stream.times, self.stream.kinds, self.shapes
        for number in range(self.first_built + len(built), high):
            shape, variant = shapes[kinds[number]]
            at = _START + timedelta(microseconds=times[number])
            built.append(TailEvent(at, shape.outcome, variant, shape.labels))
        return built[low - self.first_built : high - self.first_built]


def _watch(
    guard: Guard,
    stream: _Stream,
    clock: _Clock,
    *,
    skip: bool,
    to_end: bool,
    trace: list[AlertStatus] | None = None,
) -> tuple[int | None, int]:
    """Evaluate one guard over one stream: (microsecond of its first rollback or None, firing episodes).

    Skipping (``skip``) leaves out an evaluation whose result cannot differ from the last one's: the alert is
    inactive or lacks data, and nothing the rule reads changed (no event arrived, the cutoff did not move, no
    window boundary passed). Then ``measure`` gets the same series (ratio, mean, cohort: counts and sums over
    [cutoff, now], which depend on ``now`` only through the cutoff) or the same tail (a streak without a window:
    the newest events, whatever the time, and only their outcomes, variants and labels: a tail whose events have
    the kinds of the last one read measures the same, though newer events replaced older ones), so the same
    measurement; and ``step`` from an inactive or insufficient-data status with the same measurement returns that
    status unchanged (it keeps ``since``; only pending and firing read the clock). A sequential ratio folds only
    windows closed since its evidence (none closed) and weighs the open one by its counts alone, so its evidence is
    the same too. Rate rules weigh the time their windows span (or the open window's exposure), and a streak with a
    window ages events out: both are evaluated every time. ``tests/unit/test_guard_simulation.py`` checks the
    skipping against evaluating every time, status for status.
    """
    rule = guard.rule
    reader = _Reader(guard, stream, clock)
    skippable = skip and rule.kind is not RuleKind.RATE and not (rule.kind is RuleKind.STREAK and rule.window)
    by_tail = skippable and rule.kind is RuleKind.STREAK  # without a window (skippable): compared by the tail's kinds
    last_tail: list[int] | None = None
    previous: AlertStatus | None = None
    first: int | None = None
    episodes = 0
    quiet = (AlertState.INACTIVE, AlertState.INSUFFICIENT_DATA)
    firing = AlertState.FIRING
    offsets = clock.offsets
    for index, now in enumerate(clock.instants):
        changed = reader.advance(index)
        if by_tail and changed:
            changed = reader.tail_key() != last_tail
        if skippable and previous is not None and not changed and previous.state in quiet:
            if trace is not None:
                trace.append(previous)
            continue
        if by_tail:
            last_tail = reader.tail_key()
        series, tail, windows = reader.read(index, previous)
        measurement, status = _evaluate(rule, previous, series, tail, now, windows)
        if trace is not None:
            trace.append(status)
        if status.state is firing:
            if previous is None or previous.state is not firing:
                episodes += 1
            if first is None and measurement.breached:
                first = offsets[index]
                if not to_end:
                    break
        previous = status
    return first, episodes


def _summarise(
    scenario: Scenario, trials: int, by_run: Mapping[tuple[int, float | None], list[_Trial]], index: int
) -> StageOutcome:
    healthy = by_run[(index, None)]
    watched = trials * scenario.stage_seconds  # seconds of healthy traffic watched
    columns = [*range(len(scenario.guards)), None]  # each guard, then the stage (the first of them)
    # A shadow guard is watched, never acted on: the stage is rolled back by the first of the others.
    enforced = [column for column, guard in enumerate(scenario.guards) if not guard.rule.shadow]
    figures: list[GuardOutcome] = []
    for column in columns:

        def first(trial: _Trial, column: int | None = column) -> int | None:
            if column is not None:
                return trial[column][0]
            fired = [at for at in (trial[guard][0] for guard in enforced) if at is not None]
            return min(fired) if fired else None

        detections = tuple(
            _detection(onset, [first(trial) for trial in by_run[(index, onset)]]) for onset in scenario.onsets
        )
        rolled_back = sum(first(trial) is not None for trial in healthy) / trials
        if column is None:
            figures.append(GuardOutcome("stage", "stage", rolled_back, detections))
            continue
        rule = scenario.guards[column].rule
        streaks = None
        if rule.kind is RuleKind.STREAK:
            streaks = sum(trial[column][1] for trial in healthy) * _DAY / watched
        figures.append(GuardOutcome(rule.name, rule.kind.value, rolled_back, detections, streaks, rule.shadow))
    return StageOutcome(scenario, trials, tuple(figures[:-1]), figures[-1])


def _detection(onset: float, firsts: Sequence[int | None]) -> Detection:
    onset_us = round(onset * _MICROS)
    early = sum(at is not None and at < onset_us for at in firsts)
    running = [at for at in firsts if at is None or at >= onset_us]  # still running at the onset
    delays = sorted(math.inf if at is None else (at - onset_us) / _MICROS for at in running)
    caught = sum(delay != math.inf for delay in delays)
    return Detection(onset, caught / len(firsts), early / len(firsts), _rank(delays, 0.5), _rank(delays, 0.9))


def _rank(ordered: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile; None when there is none or it is a trial never rolled back."""
    if not ordered:
        return None
    value = ordered[max(0, math.ceil(share * len(ordered)) - 1)]
    return None if value == math.inf else value
