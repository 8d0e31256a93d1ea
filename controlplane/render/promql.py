"""Definition alert rules as PromQL over the metrics /metrics exports, meaning what ``alerting.rules.measure`` means.

Every query is per ``(pipeline, environment)``: one result series per environment, as the control plane measures
one alert per environment. Counters are read through recording rules that sum their increase over the rule's
window by the labels the rule selects on (``level:metric:operations``), so an alert reads a handful of
pre-aggregated series instead of every raw series of every replica three times.

    ratio   bad / all in scope          (sum(increase(bad)) or 0 * all) / all            and all >= min_samples
    rate    in scope per `per`          sum(increase(in scope)) * per / window            and count >= min_samples
    mean    mean value in scope         sum(increase(_sum)) / sum(increase(_count))        and count >= min_samples
    cohort  canary ratio - baseline     ratio{variant=canary} - ratio{variant=baseline}   and each count >= min_samples
    streak  trailing run of an outcome  max(controlplane_event_streak{rule=...})  (the control plane's own gauge)

Too few samples never fires (the ``and`` drops the series), as insufficient data never breaches in Python; a
numerator with no series yet (no bad event since the replicas started) reads as 0, not as absent, via ``or 0 *``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Rule, RuleKind, Selector
from controlplane.render.promql_text import LabelMatch, duration, matchers, paren

__all__ = [
    "EVENT_KINDS",
    "GROUPING",
    "STREAK_GAUGE",
    "Recording",
    "RuleQuery",
    "rule_query",
]

#: The labels every rule query keeps: one series, and so one alert, per pipeline and environment.
GROUPING = ("pipeline", "environment")
_BY = f"sum by ({', '.join(GROUPING)})"
#: The gauge the control plane exports for streak rules (``api.metrics.StreakMetrics``).
STREAK_GAUGE = "controlplane_event_streak"
#: The kinds measured from events, which Prometheus can measure too (``query`` rules already come from it).
EVENT_KINDS = frozenset({RuleKind.RATIO, RuleKind.RATE, RuleKind.MEAN, RuleKind.STREAK, RuleKind.COHORT})


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording rule: ``record`` is ``level:metric:operations``."""

    record: str
    expr: str


@dataclass(frozen=True, slots=True)
class RuleQuery:
    """A rule as PromQL: the value it measures, the alert condition, and the recording rules both read."""

    value: str  # one series per (pipeline, environment) with enough samples or not
    alert: str  # the value compared with the threshold, only where there are enough samples
    recordings: tuple[Recording, ...]
    value_template: str  # how an annotation shows the value: `{{ $value | humanizePercentage }}`
    threshold_words: str  # the threshold as an annotation says it: `3%`, `2 per 1m`, `6s`


def rule_query(rule: Rule, event: EventType, scope: Sequence[LabelMatch] = ()) -> RuleQuery:
    """The PromQL of an event rule, restricted by ``scope`` (matchers on ``environment``) besides its own selectors.

    Without an ``environment`` matcher in ``scope``, the rule's own ``environments`` (if any) restrict it.
    """
    if rule.kind not in EVENT_KINDS or rule.event != event.name:
        raise ValueError(f"rule {rule.name} is not measured from events of {event.name}")
    if rule.environments and not any(match.label == "environment" for match in scope):
        # The control plane measures such a rule only in these environments (a caller's own environment matcher
        # has narrowed them already).
        scope = (*scope, LabelMatch("environment", frozenset(rule.environments)))
    pipeline = LabelMatch("pipeline", frozenset({event.pipeline}))
    if rule.kind is RuleKind.STREAK:
        return _streak(rule, pipeline, scope)
    window = duration(rule.window)
    cohort = {"variant"} if rule.kind is RuleKind.COHORT else set()
    keys = sorted({*rule.where.matches, *rule.numerator.matches} | cohort)
    level = "_".join([*GROUPING, *keys])
    # Ratios and means need at least one event anyway (0/0 is NaN, which never compares true): a clause only
    # for more. A rate of no events is 0, a measurement, unless min_samples asks for at least one.
    floored = rule.min_samples > (0 if rule.kind is RuleKind.RATE else 1)
    if rule.kind is RuleKind.MEAN:
        assert event.histogram_name is not None  # the loader refuses a mean over an event without a value
        totals = _increase(level, f"{event.histogram_name}_sum", window, keys, pipeline)
        counts = _increase(level, f"{event.histogram_name}_count", window, keys, pipeline)
        values = _sum(counts.record, _selected(rule.where), scope)
        value = f"{_sum(totals.record, _selected(rule.where), scope)}\n/\n{values}"
        return _query(
            rule, value, [values] if floored else [], (totals, counts), _unit_template(event), _unit_words(rule, event)
        )
    counter = _increase(level, event.counter_name, window, keys, pipeline)
    if rule.kind is RuleKind.RATE:
        counted = _sum(counter.record, _selected(rule.where), scope)
        # Multiplied before dividing: whole counts over whole seconds stay exact, so a rate exactly at the
        # threshold compares as equal (as the evaluator's fractions do) instead of one rounding above it.
        per, span = int(rule.per.total_seconds()), int(rule.window.total_seconds())
        return _query(
            rule,
            f"{counted} * {per} / {span}",
            [counted] if floored else [],
            (counter,),
            "{{ $value | humanize }}" + f" per {duration(rule.per)}",
            f"{_number(rule.threshold)} per {duration(rule.per)}",
        )
    if rule.kind is RuleKind.RATIO:
        value, total = _ratio(counter.record, rule, (), scope)
        return _query(
            rule,
            value,
            [total] if floored else [],
            (counter,),
            "{{ $value | humanizePercentage }}",
            _percent(rule.threshold),
        )
    assert rule.canary_variant is not None and rule.baseline_variant is not None  # checked by the loader
    canary, canary_total = _ratio(counter.record, rule, _variant(rule.canary_variant), scope)
    baseline, baseline_total = _ratio(counter.record, rule, _variant(rule.baseline_variant), scope)
    return _query(
        rule,
        f"{paren(canary)}\n-\n{paren(baseline)}",
        [canary_total, baseline_total] if floored else [],
        (counter,),
        "{{ $value | humanizePercentage }}",
        f"{_percent(rule.threshold)} (percentage points)",
    )


def _query(
    rule: Rule,
    value: str,
    floors: Sequence[str],
    recordings: tuple[Recording, ...],
    value_template: str,
    threshold_words: str,
) -> RuleQuery:
    alert = f"{paren(value)}\n{rule.op.value} {_number(rule.threshold)}"
    for count in floors:
        alert += f"\nand on ({', '.join(GROUPING)})\n{count} >= {max(rule.min_samples, 1)}"
    return RuleQuery(
        value=value,
        alert=alert,
        recordings=recordings,
        value_template=value_template,
        threshold_words=threshold_words,
    )


def _variant(name: str) -> tuple[LabelMatch]:
    return (LabelMatch("variant", frozenset({name})),)


def _streak(rule: Rule, pipeline: LabelMatch, scope: Sequence[LabelMatch]) -> RuleQuery:
    # The control plane works the streak out from its stored event tails with the rule itself (window, where,
    # min_samples) and exports it, absent when there are too few events: every replica reads the same tail, so
    # `max` only removes the duplicates of several replicas.
    selector = _selector(STREAK_GAUGE, [pipeline, LabelMatch("rule", frozenset({rule.name})), *scope])
    value = f"max by ({', '.join(GROUPING)}) ({selector})"
    return RuleQuery(
        value=value,
        alert=f"{value}\n{rule.op.value} {_number(rule.threshold)}",
        recordings=(),
        value_template="{{ $value | humanize }}",
        threshold_words=f"{_number(rule.threshold)} consecutive `{rule.outcome}`",
    )


def _ratio(record: str, rule: Rule, cohort: Sequence[LabelMatch], scope: Sequence[LabelMatch]) -> tuple[str, str]:
    """The share of events in scope that the numerator selects, and the count of events in scope."""
    total = _sum(record, [*cohort, *_selected(rule.where)], scope)
    bad = _sum(record, [*cohort, *_selected(_both(rule.where, rule.numerator))], scope)
    either = f"{bad}\nor\n0 * {total}"
    return f"{paren(either)}\n/\n{total}", total


def _increase(level: str, metric: str, window: str, keys: Sequence[str], pipeline: LabelMatch) -> Recording:
    """The recording rule summing one counter's increase over ``window`` by pipeline, environment and ``keys``."""
    sample = metric if metric.endswith(("_sum", "_count")) else f"{metric}_total"
    by = ", ".join([*GROUPING, *keys])
    return Recording(
        record=f"{level}:{metric}:increase{window}",
        expr=f"sum by ({by}) (increase({_selector(sample, [pipeline])}[{window}]))",
    )


def _sum(record: str, selected: Iterable[LabelMatch], scope: Sequence[LabelMatch]) -> str:
    return f"{_BY} ({_selector(record, [*selected, *scope])})"


def _selected(selector: Selector) -> list[LabelMatch]:
    return [LabelMatch(key, values) for key, values in sorted(selector.matches.items())]


def _both(where: Selector, numerator: Selector) -> Selector:
    """Events both selectors admit: per key, the values both allow (the loader refuses an empty overlap)."""
    merged = dict(where.matches)
    for key, values in numerator.matches.items():
        merged[key] = merged[key] & values if key in merged else values
    return Selector(merged)


def _selector(metric: str, matches: Iterable[LabelMatch]) -> str:
    return f"{metric}{matchers(matches)}"


def _percent(threshold: str) -> str:
    return f"{(Decimal(threshold) * 100).normalize():f}%"


def _unit_template(event: EventType) -> str:
    assert event.value is not None
    if event.value.unit == "seconds":
        return "{{ $value | humanizeDuration }}"
    return "{{ $value | humanize }} " + event.value.unit


def _unit_words(rule: Rule, event: EventType) -> str:
    assert event.value is not None
    written = _number(rule.threshold)
    return f"{written}s" if event.value.unit == "seconds" else f"{written} {event.value.unit}"


def _number(threshold: str) -> str:
    """A threshold as people write it: ``6``, not ``6.0``."""
    return f"{Decimal(threshold).normalize():f}"
