"""Checks of a definition's alert rules (measuring events, or a Prometheus query per environment) and of the
event selectors rules, objectives and panels write, turning what is written into catalog values.

A ratio, rate, mean or cohort rule may declare ``confidence`` (and an ``alternative``): it is then decided sequentially
(``alerting.sequential``, ``alerting.cohorts`` for cohorts), which needs a threshold strictly inside the values its
kind can take and a rule that breaches above it (``>`` or ``>=``). Any rule may declare
``mode: shadow`` (default ``enforce``): watched only, it never holds a stage nor rolls back. A ratio, rate or cohort
rule may declare ``per_subject_cap``: over its window each subject's events count up to that many
(``alerting.subjects``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import (
    ENVIRONMENT_PLACEHOLDER,
    Comparison,
    Rule,
    RuleKind,
    RuleMode,
    RuleSource,
    Selector,
    Severity,
    placeholders,
)
from controlplane.definitions.document import FieldPath, Refuse
from controlplane.definitions.schemas import FlagSpec, RuleSpec

__all__ = ["MAX_RULE_WINDOW", "check_rules", "check_selector"]

#: The longest window a rule may read: aggregation windows are kept at least this long.
MAX_RULE_WINDOW = timedelta(days=1)
_RULE_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def check_selector(
    written: Mapping[str, list[str]], event: EventType, flag: FlagSpec | None, at: FieldPath, refuse: Refuse
) -> Selector:
    """Check a selector of ``event`` as written (label -> values): only labels it has, only values it declares."""
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
            source = RuleSource(spec.source)
        except ValueError:
            raise refuse(
                (*at, "source"),
                "source must be `events` (the default: measured from ingested events) or `prometheus` "
                "(measured by a PromQL `query`)",
            ) from None
        try:
            mode = RuleMode(spec.mode)
        except ValueError:
            raise refuse(
                (*at, "mode"),
                "mode must be `enforce` (the default: as a stage guard it holds the stage and rolls back) or `shadow` "
                "(watched only: recorded and notified as info, never holds a stage nor rolls back)",
            ) from None
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
        if spec.flag is not None and spec.flag not in by_flag:
            raise refuse((*at, "flag"), f"unknown flag `{spec.flag}`; a rule names a flag of its own definition")
        for position, environment in enumerate(spec.environments):
            if environment not in environments:
                raise refuse((*at, "environments", position), f"unknown environment `{environment}`")
        if source is RuleSource.PROMETHEUS:
            rules.append(replace(_prometheus_rule(pipeline, spec, op, severity, at, refuse, duration), mode=mode))
            continue
        for written in ("query", "samples_query"):
            if getattr(spec, written) is not None:
                raise refuse(
                    (*at, written),
                    f"`{written}` applies to `source: prometheus` rules; this rule measures events "
                    "(add `source: prometheus` to measure the query instead)",
                )
        for required in ("kind", "event"):
            if getattr(spec, required) is None:
                raise refuse((*at, required), f"required field `{required}` is missing (a rule measuring events)")
        assert spec.kind is not None and spec.event is not None
        if spec.kind == RuleKind.QUERY.value:
            raise refuse(
                (*at, "kind"), "a rule measured by a PromQL query is written `source: prometheus` with a `query`"
            )
        try:
            kind = RuleKind(spec.kind)
        except ValueError:
            kinds = ", ".join(k.value for k in RuleKind if k is not RuleKind.QUERY)
            raise refuse((*at, "kind"), f"kind must be one of {kinds}") from None
        event = by_event.get(spec.event)
        if event is None:
            declared = ", ".join(by_event) or "none"
            raise refuse((*at, "event"), f"unknown event `{spec.event}`; this definition declares {declared}")
        flag = by_flag.get(spec.flag) if spec.flag is not None else None
        where = check_selector(spec.where, event, flag, (*at, "where"), refuse)
        numerator = check_selector(spec.numerator, event, flag, (*at, "numerator"), refuse)
        window = duration("window", "5m" if spec.window is None else spec.window)
        if kind is not RuleKind.STREAK and window <= timedelta(0):
            raise refuse((*at, "window"), "window must be longer than 0s")
        per = duration("per", "1m" if spec.per is None else spec.per)
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
        confidence, alternative = _check_sequential(kind, spec, at, refuse)
        per_subject_cap = _check_cap(kind, spec, at, refuse)
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
                confidence=confidence,
                alternative=alternative,
                mode=mode,
                per_subject_cap=per_subject_cap,
            )
        )
    return tuple(rules)


#: The kinds a rule may declare `confidence` on: ratio and rate windows have a likelihood ratio between two values,
#: means an e-value from their sums (values at least 0), cohorts a two-sample test of their difference.
_SEQUENTIAL_KINDS = (RuleKind.RATIO, RuleKind.RATE, RuleKind.MEAN, RuleKind.COHORT)


def _check_sequential(kind: RuleKind, spec: RuleSpec, at: FieldPath, refuse: Refuse) -> tuple[str | None, str | None]:
    """Check `confidence` and `alternative`: the decimals as written (None when absent)."""
    if spec.confidence is None:
        if spec.alternative is not None:
            raise refuse(
                (*at, "alternative"),
                "`alternative` is the breach a sequential rule tests for: it applies with `confidence`",
            )
        return None, None
    if kind not in _SEQUENTIAL_KINDS:
        raise refuse(
            (*at, "confidence"),
            f"`confidence` (a sequential decision) is not supported on {kind.value} rules yet: "
            "only ratio, rate, mean and cohort rules decide sequentially",
        )
    if isinstance(spec.confidence, bool) or not 0.5 <= spec.confidence < 1:
        raise refuse(
            (*at, "confidence"), "confidence must be a decimal from 0.5 up to, not including, 1: e.g. 0.99 for 99%"
        )
    if spec.op not in (">", ">="):
        raise refuse(
            (*at, "op"),
            "a rule with `confidence` breaches above its threshold (`>` or `>=`): it tests whether the value is "
            "past the threshold toward a larger alternative",
        )
    if spec.hold:
        # The statistic sits at its limit only while every window adds evidence: one window of good events (or one
        # slow value, for a mean) takes it below for a moment, which would restart `for`. Measured with guards
        # simulate: a mean of 12 s against 6 s with `for: 5m` was caught in 2% of one-hour stages, without in all.
        raise refuse(
            (*at, "for"),
            "`for` does not combine with `confidence`: the sequential test already waits until the evidence shows a "
            "breach at that confidence, and `for` would also need the evidence to stay at its limit for the whole "
            "duration, which one window without bad events interrupts (the rule would rarely fire). Drop `for`, or "
            "drop `confidence` for a plain threshold held for a duration",
        )
    if kind is RuleKind.COHORT:
        return _check_sequential_cohort(spec, at, refuse)
    if spec.threshold <= 0:
        raise refuse(
            (*at, "threshold"),
            f"a {kind.value} rule with `confidence` needs a threshold above 0: it weighs the threshold against "
            "a larger alternative by their likelihood ratio",
        )
    if kind is RuleKind.RATIO and spec.threshold >= 1:
        raise refuse((*at, "threshold"), "a ratio rule with `confidence` needs a threshold below 1")
    if spec.alternative is None:
        return repr(float(spec.confidence)), None
    if isinstance(spec.alternative, bool) or not math.isfinite(spec.alternative):
        raise refuse((*at, "alternative"), "alternative must be a finite number")
    if spec.alternative <= spec.threshold:
        raise refuse(
            (*at, "alternative"),
            f"alternative must be above the threshold ({spec.threshold!r}): it is the breach the rule tests for",
        )
    if kind is RuleKind.RATIO and spec.alternative >= 1:
        raise refuse((*at, "alternative"), "a ratio's alternative is a share below 1: write 6% as 0.06")
    return repr(float(spec.confidence)), repr(float(spec.alternative))


def _check_sequential_cohort(spec: RuleSpec, at: FieldPath, refuse: Refuse) -> tuple[str, str | None]:
    """A cohort rule's threshold is a difference of shares, canary minus baseline: from 0 up to 1, and its
    alternative (the difference tested for) above it; the default alternative doubles the threshold."""
    assert spec.confidence is not None
    if not 0 <= spec.threshold < 1:
        raise refuse(
            (*at, "threshold"),
            "a cohort rule with `confidence` needs a threshold from 0 up to 1: how much worse the canary's share may "
            "be than the baseline's (0.02 for 2 percentage points)",
        )
    if spec.alternative is None:
        if spec.threshold == 0:
            raise refuse(
                (*at, "alternative"),
                "a cohort rule with `confidence` and threshold 0 needs an `alternative`: the difference it tests "
                "for (0.02 for 2 percentage points)",
            )
        return repr(float(spec.confidence)), None
    if isinstance(spec.alternative, bool) or not math.isfinite(spec.alternative):
        raise refuse((*at, "alternative"), "alternative must be a finite number")
    if not spec.threshold < spec.alternative < 1:
        raise refuse(
            (*at, "alternative"),
            f"alternative must be above the threshold ({spec.threshold!r}) and below 1: it is the difference "
            "of shares the rule tests for",
        )
    return repr(float(spec.confidence)), repr(float(spec.alternative))


#: Why a kind cannot cap each subject's events: the capped kinds count events, these do not.
_UNCAPPED_KINDS = {
    RuleKind.MEAN: "averages its events' values, which a cap on counts would not weigh",
    RuleKind.STREAK: "reads its events' trailing run in order, whoever sent them",
}


def _check_cap(kind: RuleKind, spec: RuleSpec, at: FieldPath, refuse: Refuse) -> int | None:
    """Check `per_subject_cap`: a whole number of events from 1, on a kind that counts events (None when absent)."""
    cap = spec.per_subject_cap
    if cap is None:
        return None
    why = _UNCAPPED_KINDS.get(kind)
    if why is not None:
        raise refuse(
            (*at, "per_subject_cap"),
            f"`per_subject_cap` is not supported on {kind.value} rules: a {kind.value} rule {why}; only ratio, rate "
            "and cohort rules count each subject's events at most that many times",
        )
    if isinstance(cap, bool) or cap < 1:
        raise refuse(
            (*at, "per_subject_cap"),
            f"per_subject_cap must be a whole number of events, at least 1 (got {cap!r}): e.g. 10 counts each "
            "subject's first 10 events over the window and none after",
        )
    return cap


#: Fields of a rule that measures events, refused on a Prometheus rule (the query says all of it).
_EVENT_FIELDS = {
    "kind": "it measures the value of its `query`",
    "event": "it measures its `query`, not ingested events",
    "window": "put the range in the query instead (e.g. `rate(requests_total[5m])`)",
    "where": "select series with label matchers in the query",
    "numerator": "write the ratio in the query",
    "per": "write the rate in the query",
    "outcome": "select series with label matchers in the query",
    "canary_variant": "compare variants in the query",
    "baseline_variant": "compare variants in the query",
    "confidence": "sequential decisions are not supported on prometheus rules yet (ratio and rate rules measuring "
    "events only)",
    "alternative": "it goes with `confidence`, which prometheus rules do not support yet",
    "per_subject_cap": "the control plane caps the subjects of the events it ingests, and Prometheus's samples carry "
    "none",
}
#: Placeholders from other tools (Argo `{{args.x}}`, Grafana `$var`/`${var}`, Python `{env}`): none is ours.
_FOREIGN_PLACEHOLDERS = (
    re.compile(r"\{\{.*?\}\}"),
    re.compile(r"\$\{?\s*[A-Za-z_][A-Za-z0-9_.]*\s*\}?"),
    re.compile(r"\{\s*[A-Za-z_][A-Za-z0-9_.]*\s*\}"),
)


def _prometheus_rule(
    pipeline: str,
    spec: RuleSpec,
    op: Comparison,
    severity: Severity,
    at: FieldPath,
    refuse: Refuse,
    duration: Callable[[str, str | int], timedelta],
) -> Rule:
    """Check a `source: prometheus` rule: a query per environment, and none of the event rules' fields."""
    for name, why in _EVENT_FIELDS.items():
        if getattr(spec, name) not in (None, "", {}):
            raise refuse((*at, name), f"a prometheus rule has no `{name}`: {why}")
    if spec.query is None:
        raise refuse((*at, "query"), "a prometheus rule needs `query`: the PromQL whose value is compared")
    query = _check_query(spec.query, (*at, "query"), refuse)
    samples_query = ""
    if spec.samples_query is not None:
        samples_query = _check_query(spec.samples_query, (*at, "samples_query"), refuse)
        if not spec.min_samples:
            raise refuse(
                (*at, "samples_query"),
                "`samples_query` counts samples to compare with `min_samples`: set min_samples (at least 1)",
            )
    elif spec.min_samples:
        raise refuse(
            (*at, "min_samples"),
            "a prometheus rule counts its samples with `samples_query` (e.g. "
            'sum(increase(requests_total{environment="{environment}"}[5m]))): add one, or drop min_samples',
        )
    return Rule(
        name=spec.name,
        pipeline=pipeline,
        kind=RuleKind.QUERY,
        event="",
        op=op,
        threshold=repr(float(spec.threshold)),
        window=timedelta(0),
        hold=duration("for", spec.hold),
        keep_firing_for=duration("keep_firing_for", spec.keep_firing_for),
        min_samples=spec.min_samples,
        severity=severity,
        description=spec.description,
        flag=spec.flag,
        environments=tuple(spec.environments),
        runbook_url=spec.runbook_url,
        source=RuleSource.PROMETHEUS,
        query=query,
        samples_query=samples_query,
    )


def _check_query(written: str, at: FieldPath, refuse: Refuse) -> str:
    """Refuse a query that is empty or does not select its environment with one `{environment}` per use, quoted."""
    field = at[-1]
    query = written.strip()
    if not query:
        raise refuse(at, f"`{field}` is empty: write the PromQL to evaluate")
    for pattern in _FOREIGN_PLACEHOLDERS:
        for match in pattern.finditer(query):
            if match.group() != ENVIRONMENT_PLACEHOLDER:
                raise refuse(
                    at,
                    f"`{match.group()}` is not a placeholder here: the only one is `{ENVIRONMENT_PLACEHOLDER}`, "
                    "replaced by each environment's name",
                )
    found = placeholders(query)
    if not found:
        raise refuse(
            at,
            f"`{field}` must select its environment with `{ENVIRONMENT_PLACEHOLDER}` in a label value, e.g. "
            f'`environment="{ENVIRONMENT_PLACEHOLDER}"`: it is replaced by each environment\'s name, and without it '
            "every environment would read the same series",
        )
    if any(quote is None for _, quote in found):
        raise refuse(
            at,
            f"`{ENVIRONMENT_PLACEHOLDER}` must be inside a quoted label value, e.g. "
            f'`environment="{ENVIRONMENT_PLACEHOLDER}"`: it is replaced by the bare environment name',
        )
    return query
