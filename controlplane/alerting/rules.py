"""Alert rules: a pure function from aggregation windows, the event tail and the clock to a measurement, and
a pure state machine from (previous state, measurement, clock) to the next state.

    measure(rule, series, tail, now) -> Measurement(value, samples, sufficient, breached)
    step(rule, previous, measurement, now) -> AlertStatus

    inactive --breach--> pending --breach held `for`--> firing --no breach for `keep_firing_for`--> inactive
    (for = 0: inactive --breach--> firing at once)
    too few samples --> insufficient_data: never a pass, never a breach. A firing alert holds (it does not
    resolve on missing data: only a measurement below the threshold proves recovery).

A rule's measurement comes from ingested events (``source: events``, the default: ``measure`` here) or from a
Prometheus server's query API (``source: prometheus``, kind ``query``: ``alerting.prometheus`` reads the answer);
both go through the same ``step``.

Thresholds compare exactly: ratios and rates as fractions, the threshold read as the decimal it was written as,
so exactly 3% never fires a ``> 3%`` rule whatever the float rounding.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

__all__ = [
    "ENVIRONMENT_PLACEHOLDER",
    "WINDOW_SIZE",
    "AlertState",
    "AlertStatus",
    "Comparison",
    "Measurement",
    "Rule",
    "RuleKind",
    "RuleSource",
    "Selector",
    "Series",
    "Severity",
    "TailEvent",
    "measure",
    "placeholders",
    "rule_from_json",
    "rule_to_json",
    "step",
    "window_cutoff",
]

#: The only placeholder of a Prometheus rule's queries, replaced by each environment's name.
ENVIRONMENT_PLACEHOLDER = "{environment}"

#: Default width of an aggregation window; ingest and rules must agree on it (settings.telemetry_window_seconds).
WINDOW_SIZE = timedelta(seconds=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RuleKind(enum.StrEnum):
    """What a rule measures."""

    RATIO = "ratio"  # matching events / all events in scope, over the window
    RATE = "rate"  # matching events per `per`, over the window
    MEAN = "mean"  # mean of the events' value, over the window
    STREAK = "streak"  # trailing run of one outcome, in event order
    COHORT = "cohort"  # ratio on the canary variant minus ratio on the baseline variant
    QUERY = "query"  # the value of a PromQL query, read from Prometheus (``source: prometheus`` rules only)


class RuleSource(enum.StrEnum):
    """Where a rule's measurement comes from."""

    EVENTS = "events"  # the control plane's own aggregation windows and event tails
    PROMETHEUS = "prometheus"  # an instant query to the configured Prometheus server


class Comparison(enum.StrEnum):
    """How the measured value is compared with the threshold: stated exactly, never implied."""

    GT = ">"
    GE = ">="

    def holds(self, value: Fraction, threshold: Fraction) -> bool:
        """True when ``value`` breaches ``threshold``."""
        return value > threshold if self is Comparison.GT else value >= threshold


class Severity(enum.StrEnum):
    """How urgently on-call hears about it; routes pick receivers by it."""

    PAGE = "page"
    TICKET = "ticket"
    INFO = "info"


class AlertState(enum.StrEnum):
    """An alert's state for one rule in one environment."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True, slots=True)
class Selector:
    """Which events count: per key (a label, ``outcome`` or ``variant``), the values admitted; empty admits all."""

    matches: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def admits(self, outcome: str, variant: str, labels: Mapping[str, str]) -> bool:
        """True when an event (or a series of them) with these fields is selected."""
        for key, allowed in self.matches.items():
            if key == "outcome":
                actual = outcome
            elif key == "variant":
                actual = variant
            else:
                actual = labels.get(key, "")
            if actual not in allowed:
                return False
        return True

    def describe(self) -> str:
        """The selector in words, for messages: ``status_class in {4xx, 5xx}``."""
        if not self.matches:
            return "all"
        return ", ".join(f"{key} in {{{', '.join(sorted(values))}}}" for key, values in sorted(self.matches.items()))


@dataclass(frozen=True, slots=True)
class Rule:
    """An alert rule as the evaluator reads it (validated by the definitions loader)."""

    name: str
    pipeline: str
    kind: RuleKind
    event: str
    op: Comparison
    threshold: str  # the decimal as written; compared exactly
    window: timedelta = timedelta(minutes=5)
    hold: timedelta = timedelta(0)  # `for`
    keep_firing_for: timedelta = timedelta(0)
    min_samples: int = 0
    severity: Severity = Severity.PAGE
    description: str = ""
    where: Selector = field(default_factory=Selector)
    numerator: Selector = field(default_factory=Selector)
    per: timedelta = timedelta(minutes=1)
    outcome: str = ""
    flag: str | None = None
    canary_variant: str | None = None
    baseline_variant: str | None = None
    environments: tuple[str, ...] = ()
    runbook_url: str = ""
    source: RuleSource = RuleSource.EVENTS
    query: str = ""  # PromQL with `{environment}`; source prometheus only
    samples_query: str = ""  # PromQL counting what `query` is measured over, checked against min_samples

    @property
    def limit(self) -> Fraction:
        """The threshold as an exact fraction."""
        return _exact(self.threshold)

    def query_for(self, environment: str) -> str:
        """The rule's value query for one environment: ``{environment}`` replaced by its name."""
        return _substitute(self.query, environment)

    def samples_query_for(self, environment: str) -> str:
        """The rule's samples query for one environment (empty when it has none)."""
        return _substitute(self.samples_query, environment)

    def condition(self) -> str:
        """The rule in words: ``ratio of http_request (status_class in {4xx, 5xx}) > 0.03 over 5m``."""
        held = f" for {_duration(self.hold)}" if self.hold else ""
        if self.source is RuleSource.PROMETHEUS:
            floor = (
                f" with at least {self.min_samples} samples by prometheus `{_one_line(self.samples_query)}`"
                if self.samples_query
                else ""
            )
            return f"prometheus `{_one_line(self.query)}` {self.op.value} {self.threshold}{floor}{held}"
        what = {
            RuleKind.RATIO: f"ratio of {self.event} ({self.numerator.describe()})",
            RuleKind.RATE: f"rate of {self.event} per {_duration(self.per)}",
            RuleKind.MEAN: f"mean {self.event} value",
            RuleKind.STREAK: f"consecutive {self.event} `{self.outcome}`",
            RuleKind.COHORT: f"{self.event} ({self.numerator.describe()}) ratio, "
            f"{self.canary_variant} minus {self.baseline_variant}",
        }[self.kind]
        scope = "" if not self.where.matches else f" where {self.where.describe()}"
        over = "" if self.kind is RuleKind.STREAK and not self.window else f" over {_duration(self.window)}"
        return f"{what}{scope} {self.op.value} {self.threshold}{over}{held}"


def _one_line(query: str) -> str:
    return " ".join(query.split())


def placeholders(query: str) -> list[tuple[int, str | None]]:
    """Where ``{environment}`` occurs in a PromQL query, each with the quote of the string around it (None: bare).

    PromQL strings are written in ``"``, ``'`` or backticks; the first two take backslash escapes, raw ones don't.
    """
    found: list[tuple[int, str | None]] = []
    quote: str | None = None
    index = 0
    while index < len(query):
        char = query[index]
        if query.startswith(ENVIRONMENT_PLACEHOLDER, index):
            found.append((index, quote))
            index += len(ENVIRONMENT_PLACEHOLDER)
            continue
        if quote is None:
            if char in "\"'`":
                quote = char
        elif char == "\\" and quote != "`":
            index += 1  # the escaped character cannot end the string
        elif char == quote:
            quote = None
        index += 1
    return found


def _substitute(query: str, environment: str) -> str:
    if not query:
        return query
    parts: list[str] = []
    last = 0
    for position, quote in placeholders(query):
        # Escaped for the string it sits in, so no environment name can end that string early.
        name = environment if quote in (None, "`") else environment.replace("\\", "\\\\").replace(quote, "\\" + quote)
        parts += [query[last:position], name]
        last = position + len(ENVIRONMENT_PLACEHOLDER)
    parts.append(query[last:])
    return "".join(parts)


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


@functools.lru_cache(maxsize=4096)
def _exact(threshold: str) -> Fraction:
    # Parsed once per distinct threshold: an evaluation tick compares thousands of measurements against few.
    return Fraction(threshold)


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


def _duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _selector_json(selector: Selector) -> dict[str, list[str]]:
    return {key: sorted(values) for key, values in selector.matches.items()}


def _selector(data: Mapping[str, Sequence[str]] | None) -> Selector:
    return Selector({key: frozenset(values) for key, values in (data or {}).items()})


def rule_to_json(rule: Rule) -> dict[str, Any]:
    """The stored form of a rule; the Prometheus fields only on Prometheus rules, so stored event rules stay as
    they were."""
    stored = {
        "name": rule.name,
        "kind": rule.kind.value,
        "event": rule.event,
        "op": rule.op.value,
        "threshold": rule.threshold,
        "window_seconds": rule.window.total_seconds(),
        "for_seconds": rule.hold.total_seconds(),
        "keep_firing_for_seconds": rule.keep_firing_for.total_seconds(),
        "min_samples": rule.min_samples,
        "severity": rule.severity.value,
        "description": rule.description,
        "where": _selector_json(rule.where),
        "numerator": _selector_json(rule.numerator),
        "per_seconds": rule.per.total_seconds(),
        "outcome": rule.outcome,
        "flag": rule.flag,
        "canary_variant": rule.canary_variant,
        "baseline_variant": rule.baseline_variant,
        "environments": list(rule.environments),
        "runbook_url": rule.runbook_url,
    }
    if rule.source is not RuleSource.EVENTS:
        stored.update(source=rule.source.value, query=rule.query, samples_query=rule.samples_query)
    return stored


def rule_from_json(pipeline: str, data: Mapping[str, Any]) -> Rule:
    """A rule read back from storage."""
    return Rule(
        name=data["name"],
        pipeline=pipeline,
        kind=RuleKind(data["kind"]),
        event=data["event"],
        op=Comparison(data["op"]),
        threshold=data["threshold"],
        window=timedelta(seconds=data["window_seconds"]),
        hold=timedelta(seconds=data["for_seconds"]),
        keep_firing_for=timedelta(seconds=data["keep_firing_for_seconds"]),
        min_samples=data["min_samples"],
        severity=Severity(data["severity"]),
        description=data.get("description", ""),
        where=_selector(data.get("where")),
        numerator=_selector(data.get("numerator")),
        per=timedelta(seconds=data.get("per_seconds", 60)),
        outcome=data.get("outcome", ""),
        flag=data.get("flag"),
        canary_variant=data.get("canary_variant"),
        baseline_variant=data.get("baseline_variant"),
        environments=tuple(data.get("environments", ())),
        runbook_url=data.get("runbook_url", ""),
        source=RuleSource(data.get("source", RuleSource.EVENTS.value)),
        query=data.get("query", ""),
        samples_query=data.get("samples_query", ""),
    )
