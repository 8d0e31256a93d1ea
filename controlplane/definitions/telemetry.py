"""Checks of a definition's event catalog and alert rules, turning what is written into catalog and rule values.

Called by the loader, which owns file positions: every refusal names the field path it is about.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta

from controlplane.alerting.rules import Comparison, Rule, RuleKind, Selector, Severity
from controlplane.definitions.schemas import EventSpec, FlagSpec, RuleSpec
from controlplane.telemetry.catalog import (
    DEFAULT_BUCKETS,
    METRIC_NAME,
    RESERVED_LABELS,
    UNITS,
    EventType,
    LabelSpec,
    ValueSpec,
)

__all__ = ["MAX_RULE_WINDOW", "check_events", "check_rules"]

Segment = str | int
FieldPath = tuple[Segment, ...]
Refuse = Callable[[FieldPath, str], Exception]

#: The longest window a rule may read: aggregation windows are kept at least this long.
MAX_RULE_WINDOW = timedelta(days=1)
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_./+:-]{1,64}$")
_RULE_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _names(values: Sequence[str], at: FieldPath, refuse: Refuse, what: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if not _LABEL_VALUE.fullmatch(value):
            raise refuse((*at, index), f"{what} `{value}` must be 1-64 letters, digits or . _ / + : -")
        if value in seen:
            raise refuse((*at, index), f"{what} `{value}` is listed twice")
        seen.add(value)


def check_events(
    pipeline: str, specs: Sequence[EventSpec], flags: Sequence[FlagSpec], refuse: Refuse
) -> tuple[EventType, ...]:
    """Check a definition's event types: names fit for metric names, bounded labels, a base unit per value."""
    by_flag = {flag.key: flag for flag in flags}
    events: list[EventType] = []
    first: dict[str, int] = {}
    metrics: dict[str, str] = {}  # every metric and sample name taken so far -> what it is
    for index, spec in enumerate(specs):
        at: FieldPath = ("events", index)
        if not METRIC_NAME.fullmatch(spec.name) or spec.name.startswith("controlplane_"):
            raise refuse(
                (*at, "name"),
                f"event name `{spec.name}` must be snake_case (a-z, 0-9, _) and not start with `controlplane_`: "
                "it becomes a metric name",
            )
        if spec.name in first:
            raise refuse((*at, "name"), f"event `{spec.name}` is already declared at events[{first[spec.name]}]")
        first[spec.name] = index
        flag = by_flag.get(spec.flag) if spec.flag is not None else flags[0]
        if flag is None:
            raise refuse((*at, "flag"), f"unknown flag `{spec.flag}`; an event carries a flag of its own definition")
        _names(spec.outcomes, (*at, "outcomes"), refuse, "outcome")
        labels: dict[str, LabelSpec] = {}
        for label, label_spec in spec.labels.items():
            here = (*at, "labels", label)
            if not METRIC_NAME.fullmatch(label) or label in RESERVED_LABELS:
                raise refuse(
                    here,
                    f"label `{label}` must be snake_case and not one of {', '.join(sorted(RESERVED_LABELS))}, "
                    "which every event carries already",
                )
            _names(label_spec.values, (*here, "values"), refuse, "label value")
            if label_spec.otherwise is not None and label_spec.otherwise not in label_spec.values:
                raise refuse(
                    (*here, "otherwise"), f"`otherwise: {label_spec.otherwise}` must be one of the listed values"
                )
            labels[label] = LabelSpec(values=tuple(label_spec.values), otherwise=label_spec.otherwise)
        value = None
        if spec.value is not None:
            here = (*at, "value")
            if not METRIC_NAME.fullmatch(spec.value.name):
                raise refuse((*here, "name"), f"value name `{spec.value.name}` must be snake_case")
            if spec.value.unit not in UNITS:
                raise refuse(
                    (*here, "unit"),
                    f"unit `{spec.value.unit}` is not a base unit; use one of {', '.join(UNITS)} "
                    "(milliseconds are written as seconds)",
                )
            buckets = tuple(spec.value.buckets) if spec.value.buckets is not None else DEFAULT_BUCKETS[spec.value.unit]
            if (
                not buckets
                or any(not math.isfinite(bound) for bound in buckets)
                or list(buckets) != sorted(set(buckets))
            ):
                raise refuse((*here, "buckets"), "buckets must be finite and strictly increasing")
            if spec.value.minimum is not None and not math.isfinite(spec.value.minimum):
                # NaN would admit every value (no comparison holds) and inf would refuse every one.
                raise refuse((*here, "minimum"), "minimum must be a finite number, or null for none")
            value = ValueSpec(
                name=spec.value.name,
                unit=spec.value.unit,
                buckets=tuple(map(float, buckets)),
                minimum=spec.value.minimum,
            )
        _names(spec.totals, (*at, "totals"), refuse, "total")
        for position, total in enumerate(spec.totals):
            if not METRIC_NAME.fullmatch(total):
                raise refuse((*at, "totals", position), f"total `{total}` must be snake_case")
        event = EventType(
            pipeline=pipeline,
            name=spec.name,
            flag=flag.key,
            variants=tuple(flag.variants),
            description=spec.description,
            outcomes=tuple(spec.outcomes),
            labels=labels,
            value=value,
            totals=tuple(spec.totals),
        )
        _claim_metric_names(event, at, metrics, refuse)
        events.append(event)
    return tuple(events)


_COUNTER_SAMPLES = ("", "_total", "_created")
_HISTOGRAM_SAMPLES = ("", "_bucket", "_count", "_sum", "_created")


def _claim_metric_names(event: EventType, at: FieldPath, taken: dict[str, str], refuse: Refuse) -> None:
    """Refuse an event whose metrics (counter, histogram, totals) share a name with one already declared."""
    families: list[tuple[FieldPath, str, str, tuple[str, ...]]] = [
        ((*at, "name"), event.counter_name, f"the counter of event `{event.name}`", _COUNTER_SAMPLES)
    ]
    if event.histogram_name is not None:
        families.append(
            ((*at, "value"), event.histogram_name, f"the histogram of event `{event.name}`", _HISTOGRAM_SAMPLES)
        )
    for position, total in enumerate(event.totals):
        families.append(
            (
                (*at, "totals", position),
                event.total_name(total),
                f"the `{total}` total of event `{event.name}`",
                _COUNTER_SAMPLES,
            )
        )
    for here, family, what, suffixes in families:
        names = [family + suffix for suffix in suffixes]
        for name in names:
            if name in taken:
                raise refuse(here, f"{what} would be the metric `{family}`, whose `{name}` is {taken[name]} already")
        taken.update(dict.fromkeys(names, what))


def _selector(
    written: Mapping[str, list[str]], event: EventType, flag: FlagSpec | None, at: FieldPath, refuse: Refuse
) -> Selector:
    matches: dict[str, frozenset[str]] = {}
    for key, values in written.items():
        if not values:
            raise refuse((*at, key), f"`{key}` lists no values: it would select nothing")
        if key == "outcome":
            allowed: Collection[str] | None = event.outcomes
        elif key == "variant":
            allowed = event.variants
        elif key in event.labels:
            allowed = event.labels[key].values
        else:
            known = ", ".join(["outcome", "variant", *event.labels]) or "outcome, variant"
            raise refuse((*at, key), f"event `{event.name}` has no label `{key}`; it has {known}")
        for value in values:
            if allowed is not None and value not in allowed:
                raise refuse((*at, key), f"`{value}` is not a declared value of `{key}` ({', '.join(allowed)})")
        matches[key] = frozenset(values)
    return Selector(matches)


def check_rules(
    pipeline: str,
    specs: Sequence[RuleSpec],
    events: Sequence[EventType],
    flags: Sequence[FlagSpec],
    environments: Collection[str],
    refuse: Refuse,
    parse_duration: Callable[[str | int], timedelta],
) -> tuple[Rule, ...]:
    """Check a definition's alert rules against its events, flags and the configured environments."""
    by_event = {event.name: event for event in events}
    by_flag = {flag.key: flag for flag in flags}
    rules: list[Rule] = []
    first: dict[str, int] = {}
    for index, spec in enumerate(specs):
        at: FieldPath = ("rules", index)

        def duration(name: str, written: str | int, *, here: FieldPath = at) -> timedelta:
            try:
                value = parse_duration(written)
            except ValueError as exc:
                raise refuse((*here, name), str(exc).replace("bake", name)) from exc
            if value > MAX_RULE_WINDOW:
                raise refuse((*here, name), f"{name} must be at most 1d")
            return value

        if not _RULE_NAME.fullmatch(spec.name):
            raise refuse((*at, "name"), f"rule name `{spec.name}` must be lowercase words joined by dashes")
        if spec.name in first:
            raise refuse((*at, "name"), f"rule `{spec.name}` is already declared at rules[{first[spec.name]}]")
        first[spec.name] = index
        try:
            kind = RuleKind(spec.kind)
        except ValueError:
            raise refuse((*at, "kind"), f"kind must be one of {', '.join(k.value for k in RuleKind)}") from None
        try:
            op = Comparison(spec.op)
        except ValueError:
            raise refuse(
                (*at, "op"), "op must be `>` or `>=`: say exactly whether the threshold itself fires"
            ) from None
        try:
            severity = Severity(spec.severity)
        except ValueError:
            raise refuse((*at, "severity"), f"severity must be one of {', '.join(s.value for s in Severity)}") from None
        if isinstance(spec.threshold, bool) or not math.isfinite(spec.threshold):
            raise refuse((*at, "threshold"), "threshold must be a finite number")
        event = by_event.get(spec.event)
        if event is None:
            declared = ", ".join(by_event) or "none"
            raise refuse((*at, "event"), f"unknown event `{spec.event}`; this definition declares {declared}")
        flag = None
        if spec.flag is not None:
            flag = by_flag.get(spec.flag)
            if flag is None:
                raise refuse((*at, "flag"), f"unknown flag `{spec.flag}`; a rule names a flag of its own definition")
        for position, environment in enumerate(spec.environments):
            if environment not in environments:
                raise refuse((*at, "environments", position), f"unknown environment `{environment}`")
        where = _selector(spec.where, event, flag, (*at, "where"), refuse)
        numerator = _selector(spec.numerator, event, flag, (*at, "numerator"), refuse)
        window = duration("window", spec.window)
        if kind is not RuleKind.STREAK and window <= timedelta(0):
            raise refuse((*at, "window"), "window must be longer than 0s")
        per = duration("per", spec.per)
        if kind is RuleKind.RATE and per <= timedelta(0):
            raise refuse((*at, "per"), "per must be longer than 0s")
        if kind in (RuleKind.RATIO, RuleKind.COHORT) and not numerator.matches:
            raise refuse((*at, "numerator"), f"a {kind.value} rule needs a `numerator`: which events count as bad")
        if kind is not RuleKind.RATIO and kind is not RuleKind.COHORT and numerator.matches:
            raise refuse((*at, "numerator"), f"a {kind.value} rule has no numerator; use `where` to select events")
        for key, counted in numerator.matches.items():
            scope = where.matches.get(key)
            if scope is not None and not counted & scope:
                # Such a ratio is 0 whatever happens: a guard that can never fire.
                raise refuse(
                    (*at, "numerator", key),
                    f"`numerator` selects no `{key}` that `where` admits: the ratio is always 0",
                )
        if kind is RuleKind.RATIO and not 0 <= spec.threshold <= 1:
            raise refuse((*at, "threshold"), "a ratio is a share from 0 to 1: write 3% as 0.03")
        if kind is RuleKind.COHORT and not -1 <= spec.threshold <= 1:
            raise refuse((*at, "threshold"), "a cohort rule compares shares: its margin is from -1 to 1 (2% is 0.02)")
        if kind is RuleKind.MEAN and event.value is None:
            raise refuse((*at, "event"), f"event `{event.name}` declares no value to average")
        if kind is RuleKind.STREAK and spec.outcome not in event.outcomes:
            raise refuse(
                (*at, "outcome"),
                f"a streak rule needs `outcome`, one of the event's outcomes ({', '.join(event.outcomes)})",
            )
        if kind is not RuleKind.STREAK and spec.outcome:
            raise refuse((*at, "outcome"), "`outcome` applies to streak rules; select outcomes with `where`")
        if kind is RuleKind.STREAK and spec.outcome not in where.matches.get("outcome", {spec.outcome}):
            raise refuse((*at, "where", "outcome"), f"`where` leaves out `{spec.outcome}`: the streak is always 0")
        canary = baseline = None
        if kind is RuleKind.COHORT:
            for part, selector in (("where", where), ("numerator", numerator)):
                if "variant" in selector.matches:
                    # In `where` it would empty a cohort (never any data); in `numerator`, count one cohort only.
                    raise refuse(
                        (*at, part, "variant"),
                        "a cohort rule picks its variants with `canary_variant` and `baseline_variant`",
                    )
            if flag is None:
                raise refuse((*at, "flag"), "a cohort rule compares the cohorts of a flag: name it in `flag`")
            if flag.key != event.flag:
                raise refuse(
                    (*at, "flag"), f"event `{event.name}` carries the variant of `{event.flag}`, not `{flag.key}`"
                )
            canary = spec.canary_variant or flag.rollout_variant
            baseline = spec.baseline_variant or flag.off_variant
            for name, variant in (("canary_variant", canary), ("baseline_variant", baseline)):
                if variant is None or variant not in flag.variants:
                    raise refuse((*at, name), f"`{variant}` is not a variant of flag `{flag.key}`")
            if canary == baseline:
                raise refuse((*at, "baseline_variant"), "the canary and baseline variants must differ")
        elif spec.canary_variant or spec.baseline_variant:
            written = "canary_variant" if spec.canary_variant else "baseline_variant"
            raise refuse((*at, written), "canary and baseline variants apply to cohort rules only")
        rules.append(
            Rule(
                name=spec.name,
                pipeline=pipeline,
                kind=kind,
                event=spec.event,
                op=op,
                threshold=repr(float(spec.threshold)),
                window=window,
                hold=duration("for", spec.hold),
                keep_firing_for=duration("keep_firing_for", spec.keep_firing_for),
                min_samples=spec.min_samples,
                severity=severity,
                description=spec.description,
                where=where,
                numerator=numerator,
                per=per,
                outcome=spec.outcome,
                flag=spec.flag,
                canary_variant=canary,
                baseline_variant=baseline,
                environments=tuple(spec.environments),
                runbook_url=spec.runbook_url,
            )
        )
    return tuple(rules)
