"""Checks of a definition's `dashboard:` section: the curated rows its Grafana dashboard shows besides the generated
ones (guards, a panel per event type), every name in it one the definition declares.

    dashboard:
      title: Reference images
      rows:
        - title: Uploads
          panels:
            - title: "Rejected uploads by reason"
              description: "Rejected uploads per minute by rejection_reason. Counter {counter}."
              unit: opm
              event: reference_image_upload
              targets:
                - measure: per_minute
                  where: {outcome: [rejected]}
                  by: [rejection_reason]
                  legend: "{{rejection_reason}}"
            - {guard: upload-error-rate, title: Upload endpoint error rate, what: Share of uploads answered 4xx or 5xx}

A description may name what its panel reads: ``{counter}``, ``{histogram}``, ``{flag}`` and ``{totals[<name>]}``
of its event, ``{rule}`` and ``{condition}`` of its rule. Called by the loader, which owns file positions: every
refusal names the field path it is about.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Rule, RuleKind
from controlplane.definitions.document import FieldPath, Refuse
from controlplane.definitions.rules import check_selector
from controlplane.definitions.schemas import DashboardSpec, PanelSpec, TargetSpec

__all__ = ["check_dashboard"]

#: The rule kinds a panel can draw as PromQL: a share of events, or a mean of their values.
_DRAWN_KINDS = frozenset({RuleKind.RATIO, RuleKind.MEAN})
#: What a description may name, and what the panel must read for it.
_DESCRIPTION_FIELDS: Mapping[str, str] = MappingProxyType(
    {"counter": "event", "histogram": "event", "flag": "event", "totals": "event", "rule": "rule", "condition": "rule"}
)
_VARIABLE = re.compile(r"^[a-z_][a-z0-9_]*$")
_RESERVED_VARIABLES = frozenset({"datasource", "environment"})


def check_dashboard(
    spec: DashboardSpec | None, events: Sequence[EventType], rules: Sequence[Rule], refuse: Refuse
) -> DashboardSpec | None:
    """Check the section against the definition's events and rules; it is kept as written."""
    if spec is None:
        return None
    variables: set[str] = set()
    for index, variable in enumerate(spec.variables):
        at: FieldPath = ("dashboard", "variables", index, "name")
        if not _VARIABLE.fullmatch(variable.name) or variable.name in _RESERVED_VARIABLES:
            raise refuse(at, f"variable `{variable.name}` must be snake_case and not `datasource` or `environment`")
        if variable.name in variables:
            raise refuse(at, f"variable `{variable.name}` is declared twice")
        variables.add(variable.name)
    by_event = {event.name: event for event in events}
    by_rule = {rule.name: rule for rule in rules}
    for row_index, row in enumerate(spec.rows):
        for panel_index, panel in enumerate(row.panels):
            at = ("dashboard", "rows", row_index, "panels", panel_index)
            _check_panel(panel, at, by_event, by_rule, variables, refuse)
    return spec


def _check_panel(
    panel: PanelSpec,
    at: FieldPath,
    events: dict[str, EventType],
    rules: dict[str, Rule],
    variables: set[str],
    refuse: Refuse,
) -> None:
    if panel.guard is not None:
        _drawn_rule(panel.guard, (*at, "guard"), rules, refuse)
        if not panel.what:
            raise refuse((*at, "what"), "a guard's panel needs `what`: what its rule measures, in words")
        for field in ("description", "event", "rule", "threshold_line", "targets"):
            if getattr(panel, field):
                raise refuse((*at, field), f"a guard's panel takes no `{field}`: it draws its rule as written")
        return
    if not panel.description:
        raise refuse((*at, "description"), "a panel needs a `description`")
    if not panel.unit:
        raise refuse((*at, "unit"), "a panel needs a `unit` (a Grafana unit id such as `opm`, `s`, `percentunit`)")
    if not panel.targets:
        raise refuse((*at, "targets"), "a panel needs `targets` (or `guard`, for a guard's panel)")
    event = _event(panel.event, (*at, "event"), events, refuse) if panel.event is not None else None
    rule = _rule(panel.rule, (*at, "rule"), rules, refuse) if panel.rule is not None else None
    if panel.threshold_line and rule is None:
        raise refuse((*at, "threshold_line"), "`threshold_line` draws the threshold of the panel's `rule`: name one")
    _check_description(panel.description, event, rule, (*at, "description"), refuse)
    for index, target in enumerate(panel.targets):
        labelled = events.get(rule.event) if target.measure == "rule" and rule is not None else event
        _check_target(target, event, rule, labelled, (*at, "targets", index), variables, refuse)


def _check_target(
    target: TargetSpec,
    event: EventType | None,
    rule: Rule | None,
    labelled: EventType | None,
    at: FieldPath,
    variables: set[str],
    refuse: Refuse,
) -> None:
    if target.measure == "rule":
        if rule is None:
            raise refuse((*at, "measure"), "`measure: rule` draws the panel's `rule`: name one")
        if rule.kind not in _DRAWN_KINDS:
            raise refuse(
                (*at, "measure"),
                f"rule `{rule.name}` is a {rule.kind.value} rule: only ratio and mean rules can be drawn",
            )
        for field in ("where", "part", "total", "q"):
            if getattr(target, field):
                raise refuse((*at, field), f"`measure: rule` takes no `{field}`: the rule's own scope is drawn")
    else:
        if event is None:
            raise refuse((*at, "measure"), f"`measure: {target.measure}` reads the panel's `event`: name one")
        check_selector(target.where, event, None, (*at, "where"), refuse)
    if target.measure == "share":
        if not target.part:
            raise refuse((*at, "part"), "`measure: share` needs `part`: which of the events in `where` count")
        assert event is not None
        check_selector(target.part, event, None, (*at, "part"), refuse)
    elif target.part:
        raise refuse((*at, "part"), "only `measure: share` takes `part`")
    if target.measure == "quantile":
        assert event is not None
        if target.q is None or not 0 < target.q < 1:
            raise refuse((*at, "q"), "`measure: quantile` needs `q` between 0 and 1, e.g. 0.95")
        if event.value is None:
            raise refuse((*at, "measure"), f"event `{event.name}` declares no value: it has no quantiles")
    elif target.q is not None:
        raise refuse((*at, "q"), "only `measure: quantile` takes `q`")
    if target.total is not None:
        assert event is not None
        if target.measure not in ("per_second", "per_minute"):
            raise refuse((*at, "total"), "only `measure: per_second` or `per_minute` counts a `total`")
        if target.total not in event.totals:
            declared = ", ".join(f"`{name}`" for name in event.totals) or "none"
            raise refuse((*at, "total"), f"event `{event.name}` declares no total `{target.total}`; it has {declared}")
    assert labelled is not None  # a rule's event is one the loader found
    for index, label in enumerate(target.by):
        if label not in ("environment", "variant", *(("outcome",) if labelled.outcomes else ()), *labelled.labels):
            raise refuse((*at, "by", index), f"event `{labelled.name}` has no label `{label}` to split by")
    for index, factor in enumerate(target.times):
        if isinstance(factor, str) and not (factor.startswith("$") and factor[1:] in variables):
            raise refuse((*at, "times", index), f"`{factor}` is not a number or a `$variable` of this dashboard")


def _check_description(text: str, event: EventType | None, rule: Rule | None, at: FieldPath, refuse: Refuse) -> None:
    reads = {"event": event, "rule": rule}
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(text) if name]
    except ValueError as exc:  # a lone { or }
        raise refuse(at, f"{exc}: write a literal brace twice ({{{{ or }}}})") from exc
    for name, spec, conversion in fields:
        base, _, key = name.partition("[")
        needs = _DESCRIPTION_FIELDS.get(base)
        if needs is None or spec or conversion or (key != "") != (base == "totals"):
            known = ", ".join(f"{{{field}}}" for field in _DESCRIPTION_FIELDS if field != "totals")
            raise refuse(
                at, f"`{{{name}}}` is not something a description can name; it can name {known} and {{totals[<name>]}}"
            )
        if reads[needs] is None:
            raise refuse(at, f"`{{{name}}}` names the panel's {needs}, and the panel names no `{needs}`")
        if base == "histogram" and event is not None and event.value is None:
            raise refuse(at, f"event `{event.name}` declares no value: it has no histogram")
        if base == "totals" and event is not None and key.rstrip("]") not in event.totals:
            raise refuse(at, f"event `{event.name}` declares no total `{key.rstrip(']')}`")


def _event(name: str, at: FieldPath, events: dict[str, EventType], refuse: Refuse) -> EventType:
    if name not in events:
        declared = ", ".join(f"`{known}`" for known in events) or "none"
        raise refuse(at, f"unknown event `{name}`; this definition declares {declared}")
    return events[name]


def _rule(name: str, at: FieldPath, rules: dict[str, Rule], refuse: Refuse) -> Rule:
    if name not in rules:
        declared = ", ".join(f"`{known}`" for known in rules) or "none"
        raise refuse(at, f"unknown rule `{name}`; this definition declares {declared}")
    return rules[name]


def _drawn_rule(name: str, at: FieldPath, rules: dict[str, Rule], refuse: Refuse) -> Rule:
    rule = _rule(name, at, rules, refuse)
    if rule.kind not in _DRAWN_KINDS:
        raise refuse(at, f"rule `{name}` is a {rule.kind.value} rule: only ratio and mean rules can be drawn")
    return rule
