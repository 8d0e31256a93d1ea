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

- The canary cohort sends the guarded event as a Poisson process of ``rate`` events per 5 minutes; an optional
  baseline cohort sends
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
- How it is drawn: a streak reads events one by one, in order, so its events are drawn one by one (exponential
  gaps). Every other rule reads counts and sums per 10-second window over the events that arrived by ``now``, which
  do not depend on where in a stretch between two evaluations (and window edges) an event falls: per such piece, a
  Poisson number of events, a binomial number of them bad, and their log-normal values summed (``_Pieces``, with
  numpy's generator). The same process, without a Python step per event: at 3,000 events per 5 minutes that step
  was most of a trial's time.
- What the engine is handed is what the served evaluation hands it: for window rules one ``Series`` per event shape
  summed over the rule's window, starting at its cutoff (as ``alerting.queries.fetch_series`` sums them), or for
  sequential rules one per shape and 10-second window (``fetch_windows``), the current window holding only the
  events that arrived by ``now``; for streak rules the newest ``TAIL_LENGTH`` events in order. A mean rule's series
  carry their values' count, sum and sum of squares (what a sequential mean weighs each window by). Each trial
  starts with empty windows and a fresh alert.

Deterministic for a seed: every (traffic, onset, trial, guard) draws from its own generator (``random.Random``
for a streak, numpy's PCG64 otherwise) seeded with a string of them, so neither the number of workers nor the other
guards of a stage change a guard's result.

One cohesive thing past the usual length: the traffic model, the trial loop over the engine and the figures
only make sense together.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

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
    onset_us = None if task.onset is None else round(task.onset * _MICROS)
    clock = _clock(scenario.stage_seconds, scenario.interval)
    warm = scenario.traffic.warm_up
    traffic = f"{scenario.traffic!r}" + (f" warm {warm!r}" if warm else "")
    trials: list[_Trial] = []
    for trial in range(task.start, task.stop):
        outcome = []
        for guard in scenario.guards:
            key = f"{task.seed}|{traffic}|{task.onset}|{scenario.stage_seconds}|{trial}|{guard.rule.name}"
            stream = _draw(guard, scenario.traffic, clock, onset_us, key)
            # Healthy streak guards are watched to the end of the stage: their chance streaks are a figure.
            to_end = onset_us is None and guard.rule.kind is RuleKind.STREAK
            outcome.append(_watch(guard, stream, clock, skip=task.skip, to_end=to_end))
        trials.append(tuple(outcome))
    return trials


def _draw(guard: Guard, traffic: Traffic, clock: _Clock, onset_us: int | None, key: str) -> _Stream | _Pieces:
    """One trial's traffic for ``guard``, drawn from ``key``: events one by one for a streak, pieces otherwise."""
    if guard.rule.kind is RuleKind.STREAK:
        stage_us = round(clock.stage_seconds * _MICROS)
        return _Stream.draw(guard, traffic, onset_us, stage_us, random.Random(key))
    return _Pieces.draw(guard, traffic, _grid(clock, round(traffic.warm_up * _MICROS), onset_us), _generator(key))


def _generator(key: str) -> np.random.Generator:
    """numpy's generator (PCG64) seeded by a digest of ``key``: the same key draws the same traffic anywhere."""
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "big"))


@dataclass(slots=True)
class _Stream:
    """A streak guard's events in time order: microseconds from the start, kind (0/1 canary good/bad, 2/3 baseline),
    value (mean rules). A streak reads its events one by one, in order: they are drawn one by one."""

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


@dataclass(frozen=True, slots=True)
class _Grid:
    """The time before the last evaluation cut into pieces at every evaluation instant, every 10-second window edge
    and the onset, from the warm-up's start. A piece lies in one window, on one side of the onset, and all its events
    have arrived by one evaluation: what the engine reads depends on how many events of each kind a piece holds (and
    their values' sums), not on where in the piece they fall, so pieces are what is drawn."""

    starts: list[int]  # microseconds from the stage start
    windows: list[int]  # the start of the 10-second window holding the piece
    seconds: np.ndarray  # each piece's length
    regressed: np.ndarray  # each piece starts at or after the onset
    arrived: list[int]  # per evaluation, how many pieces have arrived by it (all of those before it, in order)


@functools.lru_cache(maxsize=16)
def _grid(clock: _Clock, warm_us: int, onset_us: int | None) -> _Grid:
    first, last = -warm_us, clock.offsets[-1]
    edges = set(clock.offsets) | {first} | set(range(-(warm_us // _WINDOW_US) * _WINDOW_US, last, _WINDOW_US))
    if onset_us is not None:
        edges.add(onset_us)
    cuts = sorted(edge for edge in edges if first <= edge <= last)
    starts, ends = cuts[:-1], cuts[1:]
    arrived = [bisect.bisect_right(ends, offset) for offset in clock.offsets]
    onset = last + 1 if onset_us is None else onset_us
    return _Grid(
        starts=starts,
        windows=[start - start % _WINDOW_US for start in starts],
        seconds=(np.array(ends, dtype=np.float64) - np.array(starts, dtype=np.float64)) / _MICROS,
        regressed=np.array(starts) >= onset,
        arrived=arrived,
    )


@dataclass(slots=True)
class _Pieces:
    """A window guard's events, drawn per piece of the ``_Grid``: per piece, how many events of each kind (0/1 canary
    good/bad, 2/3 baseline good/bad; mean rules: 0 canary, 2 baseline) and, for mean rules, per cohort the sum of their
    values and of their squares. The same Poisson process as events one by one: a Poisson number per piece, each
    event bad with the piece's share (a binomial count), each value log-normal."""

    grid: _Grid
    kinds: list[tuple[int, int, int, int]]
    totals: list[int]
    sums: list[tuple[float, float]]  # (canary, baseline) per piece: mean rules only
    squares: list[tuple[float, float]]

    @classmethod
    def draw(cls, guard: Guard, traffic: Traffic, grid: _Grid, rng: np.random.Generator) -> _Pieces:
        rule = guard.rule
        baseline = traffic.baseline_rate or (traffic.rate if rule.kind is RuleKind.COHORT else 0.0)
        canary = rng.poisson(grid.seconds * (traffic.rate / 300))
        others = rng.poisson(grid.seconds * (baseline / 300)) if baseline else np.zeros_like(canary)
        if rule.kind is RuleKind.MEAN:
            shift = traffic.sigma**2 / 2  # log-normal: mean = exp(mu + sigma^2 / 2)
            healthy, regressed = (math.log(value) - shift for value in traffic.means_for(rule))
            mus = np.where(grid.regressed, regressed, healthy)
            sums, squares = [], []
            for counts, centres in ((canary, mus), (others, np.full(len(mus), healthy))):
                values = rng.lognormal(np.repeat(centres, counts), traffic.sigma)
                owner = np.repeat(np.arange(len(counts)), counts)
                sums.append(np.bincount(owner, values, len(counts)))
                squares.append(np.bincount(owner, values * values, len(counts)))
            zeros = np.zeros_like(canary)
            kinds = np.stack([canary, zeros, others, zeros], axis=1)
            return cls(
                grid,
                [tuple(row) for row in kinds.tolist()],
                (canary + others).tolist(),
                list(zip(sums[0].tolist(), sums[1].tolist(), strict=True)),
                list(zip(squares[0].tolist(), squares[1].tolist(), strict=True)),
            )
        bad = rng.binomial(canary, np.where(grid.regressed, traffic.regressed, traffic.healthy))
        bad_others = rng.binomial(others, traffic.healthy)
        kinds = np.stack([canary - bad, bad, others - bad_others, bad_others], axis=1)
        return cls(grid, [tuple(row) for row in kinds.tolist()], (canary + others).tolist(), [], [])


class _Clock:
    """The evaluation instants after the start (microseconds, datetimes), and each rule window's cutoffs at them."""

    def __init__(self, stage_seconds: float, interval: float) -> None:
        self.stage_seconds = stage_seconds
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
    ``TAIL_LENGTH`` events (streak, from a ``_Stream``), or from ``_Pieces`` one ``Series`` per event shape summed
    over [cutoff, now] (window rules, as ``alerting.queries.fetch_series`` sums them), and for sequential rules also
    one per shape and 10-second window (as ``fetch_windows`` reads them). ``advance`` says whether anything it reads
    changed: an event arrived, the cutoff moved or a window boundary passed (``moved``, for that alone); for a
    streak without a window, whether the shapes of the tail's events did (``tail_key``).

    Cheap to read again: a ``Series`` whose fields did not change since the last read is the same object, and the
    events of a streak's tail are built only when a tail holding them is read."""

    def __init__(self, guard: Guard, stream: _Stream | _Pieces, clock: _Clock) -> None:
        rule = self.rule = guard.rule
        self.clock = clock
        self.streak, self.mean = rule.kind is RuleKind.STREAK, rule.kind is RuleKind.MEAN
        self.events = stream if isinstance(stream, _Stream) else None
        self.pieces = stream if isinstance(stream, _Pieces) else None
        assert (self.events is not None) is self.streak, "a streak reads events one by one, other rules pieces"
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
        # Events (streak) or pieces read so far: [low, high) are those in the rule's window.
        self.low = self.high = 0
        self.last_cut = self.last_window = -1
        self.moved = True
        # The last Series read per shape (summed) and per (window start, shape), reused while their fields hold.
        self.summed: list[Series | None] = [None, None, None, None]
        self.per_start: dict[tuple[int, int], Series] = {}

    def advance(self, index: int) -> bool:
        """Take in what arrived by the ``index``-th evaluation and drop what aged out; True when anything changed."""
        if self.events is not None:
            times, high, count, now_us = self.events.times, self.high, len(self.events.times), self.clock.offsets[index]
            while high < count and times[high] <= now_us:
                high += 1
            arrived, self.high = high != self.high, high
            return arrived
        assert self.pieces is not None
        pieces, grid = self.pieces, self.pieces.grid
        counts, sums, squares, windows = self.counts, self.sums, self.squares, self.windows
        mean, per_window = self.mean, self.per_window
        arrived = False
        high = self.high
        for number in range(high, grid.arrived[index]):
            if not pieces.totals[number]:
                continue
            arrived = True
            kinds = pieces.kinds[number]
            for kind in range(4):
                counts[kind] += kinds[kind]
            if mean:
                (canary, other), (canary_sq, other_sq) = pieces.sums[number], pieces.squares[number]
                sums[0] += canary
                sums[2] += other
                squares[0] += canary_sq
                squares[2] += other_sq
            if per_window:
                start = grid.windows[number]
                if not windows or windows[-1][0] != start:
                    empty = [0.0, 0.0, 0.0, 0.0]
                    windows.append((start, _START + timedelta(microseconds=start), [0, 0, 0, 0], empty, empty[:]))
                window = windows[-1]
                for kind in range(4):
                    window[2][kind] += kinds[kind]
                if mean:
                    window[3][0] += canary
                    window[3][2] += other
                    window[4][0] += canary_sq
                    window[4][2] += other_sq
        self.high = high = grid.arrived[index]
        cut = self.cut_us[index]
        low, starts = self.low, grid.starts
        while (
            low < high and starts[low] < cut
        ):  # a piece lies in one window: it starts at or after the cutoff or ends before it
            kinds = pieces.kinds[low]
            for kind in range(4):
                counts[kind] -= kinds[kind]
            if mean:
                (canary, other), (canary_sq, other_sq) = pieces.sums[low], pieces.squares[low]
                sums[0] -= canary
                sums[2] -= other
                squares[0] -= canary_sq
                squares[2] -= other_sq
            low += 1
        self.low = low
        while windows and windows[0][0] < cut:
            gone = windows.popleft()[0]
            for kind in range(4):
                self.per_start.pop((gone, kind), None)
        window_number = self.clock.offsets[index] // _WINDOW_US
        self.moved = cut != self.last_cut or window_number != self.last_window
        self.last_cut, self.last_window = cut, window_number
        return arrived or self.moved

    def tail_key(self) -> list[int]:
        """The kinds of the events in the tail, oldest first: a streak without a window reads nothing else of them
        (their times only against its window), so the same kinds give the same measurement."""
        assert self.events is not None
        return self.events.kinds[max(0, self.high - TAIL_LENGTH) : self.high]

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
        assert self.events is not None
        times, kinds, shapes = self.events.times, self.events.kinds, self.shapes
        for number in range(self.first_built + len(built), high):
            shape, variant = shapes[kinds[number]]
            at = _START + timedelta(microseconds=times[number])
            built.append(TailEvent(at, shape.outcome, variant, shape.labels))
        return built[low - self.first_built : high - self.first_built]


def _watch(
    guard: Guard,
    stream: _Stream | _Pieces,
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
    window ages events out: both are evaluated every time.

    A sequential ratio, mean or cohort rule skips more: its verdict comes from closed windows only, so until a
    window boundary passes it cannot turn into a breach, whatever arrives. When the last evaluation measured enough
    and no breach (the verdict was a clear) and the alert is inactive or lacks data, the evaluations before the next
    boundary can only give a quiet state again, never pending or firing, and the evidence they would store is the
    one already stored (no window closed): they are left out, though their value, detail and, for a mean, whether
    the plain mean says clear or insufficient data would differ. Rollbacks, firing episodes and the evidence are
    those of evaluating every time. ``tests/unit/test_guard_simulation.py`` checks both against evaluating every
    time, status for status (the quiet states of a sequential rule by state only).
    """
    rule = guard.rule
    reader = _Reader(guard, stream, clock)
    skippable = skip and rule.kind is not RuleKind.RATE and not (rule.kind is RuleKind.STREAK and rule.window)
    by_tail = skippable and rule.kind is RuleKind.STREAK  # without a window (skippable): compared by the tail's kinds
    until_boundary = skippable and rule.confidence is not None  # ratio, mean, cohort (a rate is not skippable)
    cleared = False  # the last evaluation measured enough and no breach: a clear, which holds until a boundary
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
        if until_boundary and cleared and not reader.moved:
            changed = False
        if skippable and previous is not None and not changed and previous.state in quiet:
            if trace is not None:
                trace.append(previous)
            continue
        if by_tail:
            last_tail = reader.tail_key()
        series, tail, windows = reader.read(index, previous)
        measurement, status = _evaluate(rule, previous, series, tail, now, windows)
        cleared = measurement.sufficient and not measurement.breached
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
