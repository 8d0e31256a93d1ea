"""Input data for the generated promtool tests, per rule kind: which series a rule reads (with the levels of
``scenario_levels``: how much of each to send for healthy, just below, exactly at, breaching, too few samples), the
series of a scenario on every replica, and what the alert expression evaluates to at each step, computed both as
Prometheus does (floats, in the expression's order) and exactly (fractions, as ``alerting.rules.measure`` compares).

A step where the two disagree about the breach is a test that could pass or fail on rounding: building it raises
``AmbiguousScenario`` rather than writing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Comparison, Rule, RuleKind, Selector
from controlplane.render.promql import STREAK_GAUGE
from controlplane.render.promtool import InputSeries
from controlplane.render.scenario_levels import (
    Levels,
    cohort_levels,
    mean_levels,
    rate_levels,
    ratio_levels,
    sample_floor,
    streak_levels,
)

__all__ = [
    "FOREIGN_PIPELINE",
    "INSTANCES",
    "AmbiguousScenario",
    "Model",
    "Phase",
    "Reading",
    "alert_value",
    "bad_and_good",
    "base_labels",
    "build_series",
    "cumulative",
    "model_for",
]

#: Two replicas scraped: counters are summed over them, gauges read once.
INSTANCES = ("cp-1:8080", "cp-2:8080")
#: Another pipeline sending the same event name: its series must never count.
FOREIGN_PIPELINE = "another-pipeline"


#: A role's increase over the window at one step, as Prometheus computes it and exactly; None: no such series.
_Increase = Callable[[str], tuple[float, Fraction] | None]


class AmbiguousScenario(ValueError):
    """A scenario whose breach at some step depends on float rounding."""


@dataclass(frozen=True, slots=True)
class Reading:
    """The alert expression at one step: its value as Prometheus computes it and exactly, and whether enough
    samples back it (None values: no result at all)."""

    value: float | None
    exact: Fraction | None
    enough: bool = True


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of ``steps`` steps during which each role grows by ``rates`` per step (gauges: holds that level).

    A role missing from ``rates`` has no series at all in this phase's scenario (never created on any replica)."""

    steps: int
    rates: Mapping[str, Fraction | None]


@dataclass(slots=True)
class Model:
    """How one rule kind is fed and read.

    ``roles`` name the series kinds (``bad``, ``good``...), ``role_labels`` their labels beside pipeline and
    environment, ``levels`` the per-step rates giving each level of the measured value.
    """

    rule: Rule
    event: EventType
    metric: dict[str, str]  # role -> metric name of its series
    role_labels: dict[str, dict[str, str]]
    levels: Levels
    window_steps: int
    step_seconds: int
    gauge: bool = False
    # Series that must not count: (metric, labels, the role whose breaching rates it gets, under another pipeline?)
    noise: list[tuple[str, dict[str, str], str, bool]] = field(default_factory=list)

    def read(self, at: int, series: Mapping[str, Sequence[Sequence[Fraction | None]]]) -> Reading:
        """The alert expression's value at step ``at``, from each role's values on each replica."""
        if self.gauge:
            level = series["gauge"][0][at] if "gauge" in series else None
            if level is None:
                return Reading(None, None, enough=False)
            return Reading(float(level), level)
        if at == 0:
            return Reading(None, None, enough=False)  # increase() needs two samples
        start = max(0, at - self.window_steps)

        def increase(role: str) -> tuple[float, Fraction] | None:
            # The recording rule: increase() per replica's series, then their sum.
            if role not in series:
                return None
            as_float, exact = 0.0, Fraction(0)
            for values in series[role]:
                last, first = values[at], values[start]
                assert last is not None and first is not None
                as_float += float(last) - float(first)
                exact += last - first
            return as_float, exact

        return _READERS[self.rule.kind](self, increase)


def _holds(op: Comparison, value: float, limit: float) -> bool:
    return value > limit if op is Comparison.GT else value >= limit


def alert_value(name: str, step: int, reading: Reading, op: Comparison, threshold: str) -> float | None:
    """The alert expression's result at a step (None: no alert), refusing a breach that depends on rounding."""
    if reading.value is None or reading.exact is None or not reading.enough or math.isnan(reading.value):
        return None
    as_float = _holds(op, reading.value, float(threshold))
    exactly = op.holds(reading.exact, Fraction(threshold))
    if as_float != exactly:
        raise AmbiguousScenario(
            f"{name} at step {step}: {reading.value!r} against {threshold} breaches in floats ({as_float}) "
            f"but not exactly ({exactly}), or the other way round"
        )
    return reading.value if as_float else None


def _enough(rule: Rule, count: tuple[float, Fraction], floor: int) -> bool:
    """Whether ``count`` samples reach ``floor``, refusing a count whose float is on the other side."""
    exact = count[1] >= floor
    if (count[0] >= floor) != exact:
        raise AmbiguousScenario(f"{rule.name}: {count[0]!r} samples against {floor} is {exact} only exactly")
    return exact


def _read_ratio(model: Model, increase: _Increase, prefix: str = "") -> tuple[Reading, float, Fraction]:
    bad, good = increase(f"{prefix}bad"), increase(f"{prefix}good")
    total_float = (bad[0] if bad else 0.0) + (good[0] if good else 0.0)
    total_exact = (bad[1] if bad else Fraction(0)) + (good[1] if good else Fraction(0))
    if (bad is None and good is None) or total_float == 0:
        return Reading(None, None, enough=False), total_float, total_exact
    # (bad or 0 * total) / total
    value = (bad[0] if bad else 0.0 * total_float) / total_float
    exact = (bad[1] if bad else Fraction(0)) / total_exact
    enough = _enough(model.rule, (total_float, total_exact), sample_floor(model.rule))
    return Reading(value, exact, enough=enough), total_float, total_exact


def _read_cohort(model: Model, increase: _Increase) -> Reading:
    canary, _, _ = _read_ratio(model, increase, "canary_")
    baseline, _, _ = _read_ratio(model, increase, "baseline_")
    if canary.value is None or baseline.value is None or canary.exact is None or baseline.exact is None:
        return Reading(None, None, enough=False)
    return Reading(canary.value - baseline.value, canary.exact - baseline.exact, canary.enough and baseline.enough)


def _read_rate(model: Model, increase: _Increase) -> Reading:
    counted = increase("hit")
    if counted is None:
        return Reading(None, None, enough=False)
    per, span = int(model.rule.per.total_seconds()), int(model.rule.window.total_seconds())
    value = counted[0] * per / span
    return Reading(value, counted[1] * per / span, enough=_enough(model.rule, counted, model.rule.min_samples))


def _read_mean(model: Model, increase: _Increase) -> Reading:
    total, count = increase("sum"), increase("count")
    if total is None or count is None or count[0] == 0:
        return Reading(None, None, enough=False)
    return Reading(
        total[0] / count[0], total[1] / count[1], enough=_enough(model.rule, count, sample_floor(model.rule))
    )


def _read_ratio_only(model: Model, increase: _Increase) -> Reading:
    return _read_ratio(model, increase)[0]


_READERS = {
    RuleKind.RATIO: _read_ratio_only,
    RuleKind.COHORT: _read_cohort,
    RuleKind.RATE: _read_rate,
    RuleKind.MEAN: _read_mean,
}


# --- labels of the series a rule reads ------------------------------------------------------------------------------


def _declared(event: EventType, key: str) -> tuple[str, ...]:
    if key == "outcome":
        return event.outcomes
    if key == "variant":
        return event.variants
    return event.labels[key].values


def base_labels(event: EventType, where: Selector, variant: str | None = None) -> dict[str, str]:
    """One value per label the event's metrics carry: the first that ``where`` admits."""
    labels: dict[str, str] = {}
    keys = ["variant", *(["outcome"] if event.outcomes else []), *sorted(event.labels)]
    for key in keys:
        allowed = sorted(where.matches.get(key, ()))
        labels[key] = allowed[0] if allowed else _declared(event, key)[0]
    if variant is not None:
        labels["variant"] = variant
    return labels


def bad_and_good(
    event: EventType, where: Selector, bad: Selector, base: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Labels of an event in scope that ``bad`` selects, and of one in scope that it does not."""
    chosen = dict(base)
    for key, values in sorted(bad.matches.items()):
        scope = where.matches.get(key, frozenset(_declared(event, key)))
        chosen[key] = sorted(values & scope)[0]
    for key, values in sorted(bad.matches.items()):
        scope = where.matches.get(key, frozenset(_declared(event, key)))
        spared = sorted(scope - values)
        if spared:
            return chosen, {**chosen, key: spared[0]}
    raise AmbiguousScenario(f"every {event.name} event in scope is selected: the share is always 1")


def _out_of_scope(where: Selector, event: EventType, labels: dict[str, str]) -> dict[str, str] | None:
    """The labels of an event ``where`` leaves out, when the event declares one."""
    for key, values in sorted(where.matches.items()):
        other = [value for value in _declared(event, key) if value not in values]
        if other:
            return {**labels, key: other[0]}
    return None


def model_for(rule: Rule, event: EventType, step_seconds: int) -> Model:
    """The model of ``rule``: its series' labels and the rates of each level."""
    window_steps = max(1, int(rule.window.total_seconds()) // step_seconds)
    if rule.kind is RuleKind.STREAK:
        labels = {"rule": rule.name, "event": event.name, "outcome": rule.outcome}
        return Model(
            rule=rule,
            event=event,
            metric={"gauge": STREAK_GAUGE},
            role_labels={"gauge": labels},
            levels=streak_levels(rule),
            window_steps=1,
            step_seconds=step_seconds,
            gauge=True,
            noise=[
                (STREAK_GAUGE, labels, "gauge", True),
                (STREAK_GAUGE, {**labels, "rule": "another-rule"}, "gauge", False),
            ],
        )
    if rule.kind is RuleKind.MEAN:
        assert event.histogram_name is not None
        base = base_labels(event, rule.where)
        metric = {"sum": f"{event.histogram_name}_sum", "count": f"{event.histogram_name}_count"}
        noise = [(metric[role], base, role, True) for role in ("sum", "count")]
        outside = _out_of_scope(rule.where, event, base)
        if outside is not None:
            noise += [(metric[role], outside, role, False) for role in ("sum", "count")]
        return Model(
            rule=rule,
            event=event,
            metric=metric,
            role_labels={"sum": base, "count": base},
            levels=mean_levels(rule, window_steps),
            window_steps=window_steps,
            step_seconds=step_seconds,
            noise=noise,
        )
    counter = f"{event.counter_name}_total"
    if rule.kind is RuleKind.RATE:
        base = base_labels(event, rule.where)
        outside = _out_of_scope(rule.where, event, base)
        noise = [(counter, base, "hit", True)] + ([(counter, outside, "hit", False)] if outside is not None else [])
        return Model(
            rule=rule,
            event=event,
            metric={"hit": counter},
            role_labels={"hit": base},
            levels=rate_levels(rule, window_steps),
            window_steps=window_steps,
            step_seconds=step_seconds,
            noise=noise,
        )
    if rule.kind is RuleKind.RATIO:
        bad, good = bad_and_good(event, rule.where, rule.numerator, base_labels(event, rule.where))
        outside = _out_of_scope(rule.where, event, bad)
        noise = [(counter, bad, "bad", True)] + ([(counter, outside, "bad", False)] if outside is not None else [])
        return Model(
            rule=rule,
            event=event,
            metric={"bad": counter, "good": counter},
            role_labels={"bad": bad, "good": good},
            levels=ratio_levels(rule, window_steps),
            window_steps=window_steps,
            step_seconds=step_seconds,
            noise=noise,
        )
    assert rule.kind is RuleKind.COHORT and rule.canary_variant and rule.baseline_variant
    roles: dict[str, dict[str, str]] = {}
    for cohort, variant in (("canary_", rule.canary_variant), ("baseline_", rule.baseline_variant)):
        bad, good = bad_and_good(event, rule.where, rule.numerator, base_labels(event, rule.where, variant))
        roles[f"{cohort}bad"], roles[f"{cohort}good"] = bad, good
    outside = _out_of_scope(rule.where, event, roles["canary_bad"])
    noise = [(counter, roles["canary_bad"], "canary_bad", True)]
    noise += [(counter, outside, "canary_bad", False)] if outside is not None else []
    return Model(
        rule=rule,
        event=event,
        metric=dict.fromkeys(roles, counter),
        role_labels=roles,
        levels=cohort_levels(rule, window_steps),
        window_steps=window_steps,
        step_seconds=step_seconds,
        noise=noise,
    )


# --- series of a scenario -------------------------------------------------------------------------------------------


def _replica_rate(rate: Fraction, replica: int) -> Fraction:
    # Whole counts split into whole counts, the first replica taking the odd one, so each replica's counter grows
    # by the same amount every step (short notation) and the sums stay exact in floats.
    if rate.denominator == 1:
        first = Fraction(math.ceil(rate / len(INSTANCES)))
        return first if replica == 0 else (rate - first) / (len(INSTANCES) - 1)
    return rate / len(INSTANCES)


def cumulative(model: Model, phases: Sequence[Phase]) -> dict[str, list[list[Fraction | None]]]:
    """Each role's value at every step on every replica: counters start at 0 and add the phase's rate per step,
    split between the replicas; gauges hold the phase's level, the same on every replica."""
    roles = sorted({role for phase in phases for role in phase.rates})
    values: dict[str, list[list[Fraction | None]]] = {}
    for role in roles:
        replicas: list[list[Fraction | None]] = []
        for replica in range(len(INSTANCES)):
            series: list[Fraction | None] = []
            total = Fraction(0)
            for number, phase in enumerate(phases):
                rate = phase.rates.get(role)
                for _ in range(phase.steps + (1 if number == 0 else 0)):
                    if model.gauge:
                        series.append(rate)
                        continue
                    if series:  # the first sample is 0: counters start there
                        total += _replica_rate(rate or Fraction(0), replica)
                    series.append(total)
            replicas.append(series)
        values[role] = replicas
    return values


def build_series(
    model: Model,
    environment: str,
    values: Mapping[str, Sequence[Sequence[Fraction | None]]],
    *,
    pipeline: str,
    noise: Mapping[str, Sequence[Sequence[Fraction | None]]] | None = None,
) -> list[InputSeries]:
    """The input series of one environment: every role on every replica; with ``noise`` (breaching values per
    role), the same event under another pipeline and outside the rule's scope too, which must change nothing."""
    written: list[InputSeries] = []

    def add(metric: str, labels: Mapping[str, str], replicas: Sequence[Sequence[Fraction | None]], owner: str) -> None:
        for instance, cumulative_values in zip(INSTANCES, replicas, strict=True):
            floats = [None if value is None else float(value) for value in cumulative_values]
            series_labels = {"pipeline": owner, "environment": environment, **labels}
            written.append(InputSeries(metric, {**series_labels, "instance": instance, "job": "controlplane"}, floats))

    for role, replicas in sorted(values.items()):
        add(model.metric[role], model.role_labels[role], replicas, pipeline)
    if noise is not None:
        for metric, labels, role, foreign in model.noise:
            if role in noise:
                add(metric, labels, noise[role], FOREIGN_PIPELINE if foreign else pipeline)
    return written
