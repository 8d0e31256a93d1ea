"""Alert rules as declared: what a rule measures, over which events, against which threshold, and their stored
JSON form. Pure data, read by the alerting evaluator, the renderers and the telemetry ingest alike.

Thresholds are kept as the decimal they were written as, so evaluators compare them exactly (``Rule.limit``).
A rule with ``confidence`` is decided sequentially (``alerting.sequential``): its threshold is weighed against an
alternative (``Rule.against``) at that confidence. A rule in ``mode: shadow`` is evaluated and recorded like any
other but only watched: notified as ``info``, it never holds a rollout stage nor rolls one back (``RuleMode``).
A rule with ``per_subject_cap`` counts each subject's events (ratio, rate and cohort kinds) at most that many times
over its window (``alerting.subjects``), so one client cannot move it.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

__all__ = [
    "ENVIRONMENT_PLACEHOLDER",
    "SHADOW_CONDITION",
    "WINDOW_SIZE",
    "AlertState",
    "Comparison",
    "Rule",
    "RuleKind",
    "RuleMode",
    "RuleSegment",
    "RuleSource",
    "Selector",
    "Severity",
    "escape_string",
    "format_duration",
    "placeholders",
    "rule_from_json",
    "rule_to_json",
    "segment_name",
]


#: The only placeholder of a Prometheus rule's queries, replaced by each environment's name.
ENVIRONMENT_PLACEHOLDER = "{environment}"


#: How a shadow rule's condition ends, wherever it is shown (alerts, guard readings, transitions).
SHADOW_CONDITION = "(shadow: watched only, never holds a stage or rolls back)"


#: Default width of an aggregation window; ingest and rules must agree on it (settings.telemetry_window_seconds).
WINDOW_SIZE = timedelta(seconds=10)


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


class RuleMode(enum.StrEnum):
    """What a rule's alert may do besides being recorded and notified."""

    ENFORCE = "enforce"  # as a stage guard, holds the stage and rolls the rollout back
    SHADOW = "shadow"  # watched only: notified as info, never holds a stage, never rolls back


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
    """The states a rule's alert can be in, for one environment (alerting steps it; rollout gates read it)."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    INSUFFICIENT_DATA = "insufficient_data"
    # A cohort rule's cohorts are not the sizes the rollout's split makes: its comparison is not to be trusted.
    SAMPLE_RATIO_MISMATCH = "sample_ratio_mismatch"


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


def segment_name(attribute: str, value: str) -> str:
    """A segment as operations, tails and rules name it: ``attribute=value`` (``queue=sales``)."""
    return f"{attribute}={value}"


@dataclass(frozen=True, slots=True)
class RuleSegment:
    """What a guard scoped to one segment guards: the rollout of ``flag`` in ``environment`` for the segment
    ``attribute=value``, and the plan's ``guard`` it was derived from (a plan run per segment, ``per:``)."""

    flag: str
    environment: str
    attribute: str
    value: str
    guard: str

    def __str__(self) -> str:
        return segment_name(self.attribute, self.value)


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
    confidence: str | None = None  # the decimal as written (0.99); None: a plain threshold rule
    alternative: str | None = None  # the breach a sequential rule tests for, as written; None: the default
    mode: RuleMode = RuleMode.ENFORCE
    # Over the window each subject's events count in time order up to this many, none after (None: no cap).
    per_subject_cap: int | None = None
    # A guard the loader derived for one segment of a plan run per segment: which rollout it guards (None: a rule
    # as declared). Carried so an alert naming the rule is mapped to that segment without reading its name.
    segment: RuleSegment | None = None

    @property
    def shadow(self) -> bool:
        """True for a rule only watched: it never holds a stage nor rolls a rollout back."""
        return self.mode is RuleMode.SHADOW

    @property
    def notified_severity(self) -> Severity:
        """The severity its notifications carry: ``info`` for a shadow rule, whatever it declares."""
        return Severity.INFO if self.shadow else self.severity

    @property
    def against(self) -> str:
        """The alternative a sequential rule weighs its threshold against: ``alternative`` as written, or else
        twice the threshold (a ratio's at most halfway from the threshold to 1), written like a threshold."""
        if self.alternative is not None:
            return self.alternative
        return _doubled(self.threshold, self.kind in (RuleKind.RATIO, RuleKind.COHORT))

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

    def sequential_condition(self) -> str:
        """How a sequential rule decides, in words: ``at 99% confidence (sequential: CUSUM against 0.06)``; empty
        for a plain rule."""
        if self.confidence is None:
            return ""
        percent = f"{(Decimal(self.confidence) * 100).normalize():f}"
        if self.kind is RuleKind.COHORT:
            return (
                f"at {percent}% confidence (sequential: two-sample mixture test against {self.against}, "
                "cohort sizes checked against the rollout's split)"
            )
        if self.kind is RuleKind.MEAN:
            return f"at {percent}% confidence (sequential: CUSUM of e-values against {self.against}, breach only)"
        return f"at {percent}% confidence (sequential: CUSUM against {self.against})"

    def cap_condition(self) -> str:
        """A capped rule's cap in words: ``each subject counted at most 10 times``; empty without a cap."""
        if self.per_subject_cap is None:
            return ""
        return f"each subject counted at most {self.per_subject_cap} times"

    def condition(self, *, sequential: bool = True, capped: bool = True) -> str:
        """The rule in words: ``ratio of http_request (status_class in {4xx, 5xx}) > 0.03 over 5m``, followed by
        how a sequential rule decides unless ``sequential`` is False, by its per-subject cap unless ``capped`` is
        False, and by ``(shadow: ...)`` for a shadow rule."""
        decided = self.sequential_condition() if sequential else ""
        cap = self.cap_condition() if capped else ""
        shadow = f" {SHADOW_CONDITION}" if self.shadow else ""
        return self._plain_condition() + (f" {decided}" if decided else "") + (f", {cap}" if cap else "") + shadow

    def _plain_condition(self) -> str:
        held = f" for {format_duration(self.hold)}" if self.hold else ""
        if self.source is RuleSource.PROMETHEUS:
            floor = (
                f" with at least {self.min_samples} samples by prometheus `{_one_line(self.samples_query)}`"
                if self.samples_query
                else ""
            )
            return f"prometheus `{_one_line(self.query)}` {self.op.value} {self.threshold}{floor}{held}"
        what = {
            RuleKind.RATIO: f"ratio of {self.event} ({self.numerator.describe()})",
            RuleKind.RATE: f"rate of {self.event} per {format_duration(self.per)}",
            RuleKind.MEAN: f"mean {self.event} value",
            RuleKind.STREAK: f"consecutive {self.event} `{self.outcome}`",
            RuleKind.COHORT: f"{self.event} ({self.numerator.describe()}) ratio, "
            f"{self.canary_variant} minus {self.baseline_variant}",
        }[self.kind]
        scope = "" if not self.where.matches else f" where {self.where.describe()}"
        over = "" if self.kind is RuleKind.STREAK and not self.window else f" over {format_duration(self.window)}"
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


def escape_string(text: str, quote: str = '"') -> str:
    """``text`` escaped for the inside of a PromQL string quoted with ``quote`` (``"`` or ``'``): backslashes and
    that quote get a backslash, so no value can end the string early."""
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote)


def _substitute(query: str, environment: str) -> str:
    if not query:
        return query
    parts: list[str] = []
    last = 0
    for position, quote in placeholders(query):
        # Escaped for the string it sits in, so no environment name can end that string early.
        name = environment if quote in (None, "`") else escape_string(environment, quote)
        parts += [query[last:position], name]
        last = position + len(ENVIRONMENT_PLACEHOLDER)
    parts.append(query[last:])
    return "".join(parts)


@functools.lru_cache(maxsize=256)  # asked at every evaluation of a sequential rule (its hypotheses, its words)
def _doubled(threshold: str, share: bool) -> str:
    """Twice ``threshold`` (a share's at most halfway from it to 1), written like a threshold."""
    written = Decimal(threshold)
    doubled = written * 2
    if share and doubled >= 1:
        doubled = (written + 1) / 2
    return repr(float(doubled))


@functools.lru_cache(maxsize=4096)
def _exact(threshold: str) -> Fraction:
    # Parsed once per distinct threshold: an evaluation tick compares thousands of measurements against few.
    return Fraction(threshold)


def format_duration(value: timedelta) -> str:
    """A duration as Prometheus writes one, in its largest whole unit: ``5m``, ``1h``, ``90s``."""
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
    """The stored form of a rule; the Prometheus fields only on Prometheus rules, and ``confidence``,
    ``alternative``, ``mode`` (shadow), ``per_subject_cap`` and ``segment`` only when set, so stored plain enforced
    rules stay as they were."""
    stored: dict[str, Any] = {
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
    # Only when set, so stored plain rules stay as they were.
    if rule.confidence is not None:
        stored["confidence"] = rule.confidence
    if rule.alternative is not None:
        stored["alternative"] = rule.alternative
    if rule.shadow:
        stored["mode"] = rule.mode.value
    if rule.per_subject_cap is not None:
        stored["per_subject_cap"] = rule.per_subject_cap
    if rule.segment is not None:
        segment = rule.segment
        stored["segment"] = {
            "flag": segment.flag,
            "environment": segment.environment,
            "attribute": segment.attribute,
            "value": segment.value,
            "guard": segment.guard,
        }
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
        confidence=data.get("confidence"),
        alternative=data.get("alternative"),
        mode=RuleMode(data.get("mode", RuleMode.ENFORCE.value)),
        per_subject_cap=data.get("per_subject_cap"),
        segment=RuleSegment(**data["segment"]) if data.get("segment") else None,
    )
