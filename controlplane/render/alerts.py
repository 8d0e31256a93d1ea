"""Prometheus rule files from the definitions: per pipeline, one alert per definition rule and burn-rate alerts per
objective, with the recording rules they read (``alerts/<pipeline>.rules.yml``).

An alert keeps its rule's threshold, ``op``, window, ``for`` and ``keep_firing_for``. Its labels are ``severity``
(``info`` for a shadow rule, what its notifications carry), ``pipeline``, ``flag``, ``rule`` and, from the series,
``environment``: the control plane's Alertmanager webhook rolls back the rollout of ``flag`` in ``environment``. In
the environments where the rule guards a stage of a plan with ``auto_rollback``, the alert also carries
``guard="true"``, which the example Alertmanager configuration routes to that webhook (which answers a shadow rule's
alert ``shadow_guard`` and a sequential rule's ``sequential_guard``, rolling nothing back: Prometheus compares the
plain value, and the control plane's own test decides those); the same alert elsewhere only notifies (two alerting
rules, one name, split by environment).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Rule
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.names import alert_name, template_literal
from controlplane.render.promql import EVENT_KINDS, RuleQuery, rule_query
from controlplane.render.promql_text import LabelMatch, duration
from controlplane.render.slo import objective_rules
from controlplane.render.yamlfile import generated_header, to_yaml

__all__ = [
    "GUARD_LABEL",
    "DefinitionAlert",
    "definition_alerts",
    "guard_environments",
    "render_rules",
]

#: The label that marks an alert whose rule guards the rollout in its environment (value "true").
GUARD_LABEL = "guard"


@dataclass(frozen=True, slots=True)
class DefinitionAlert:
    """An alerting rule rendered from a definition rule (a guarded rule gives two: guarded environments, the rest)."""

    name: str
    rule: Rule
    event: EventType
    query: RuleQuery
    environments: LabelMatch | None  # which environments this alerting rule covers; None: all of them
    labels: dict[str, str]
    annotations: dict[str, str]

    @property
    def guard(self) -> bool:
        """True when firing rolls the flag back through Alertmanager."""
        return self.labels.get(GUARD_LABEL) == "true"

    def covers(self, environment: str) -> bool:
        """True when this alerting rule measures ``environment``."""
        if self.environments is None:
            return True
        return (environment in self.environments.values) != self.environments.negate

    def to_rule(self) -> dict[str, Any]:
        """The alerting rule as the rule file writes it."""
        written: dict[str, Any] = {"alert": self.name, "expr": self.query.alert}
        if self.rule.hold:
            written["for"] = duration(self.rule.hold)
        if self.rule.keep_firing_for:
            written["keep_firing_for"] = duration(self.rule.keep_firing_for)
        written["labels"] = self.labels
        written["annotations"] = self.annotations
        return written


def guard_environments(definition: PipelineDefinition, rule: Rule, flag: str) -> frozenset[str]:
    """The environments where ``rule`` guards a stage of ``flag``'s plan with ``auto_rollback``.

    In an environment run per segment the guards are the rules scoped to each segment (``rule.segment``), not the
    plan's rule they were derived from: that one measures every segment at once and rolls none back.
    """
    for candidate in definition.flags:
        if candidate.key != flag or candidate.plan is None or not candidate.plan.auto_rollback:
            continue
        scope = rule.segment
        return frozenset(
            step.environment
            for step in candidate.plan.environments
            if (step.per is None) == (scope is None)
            and (scope is None or (scope.flag == flag and scope.environment == step.environment))
            and any((rule.name if scope is None else scope.guard) in stage.guards for stage in step.stages)
        )
    return frozenset()


def _flag_of(definition: PipelineDefinition, rule: Rule, event: EventType) -> str:
    if rule.segment is not None:
        return rule.segment.flag
    if rule.flag:
        return rule.flag
    # A rule naming no flag: the one flag whose plan it guards, else the flag its event carries.
    guarding = [flag.key for flag in definition.flags if guard_environments(definition, rule, flag.key)]
    return guarding[0] if len(guarding) == 1 else event.flag


def definition_alerts(definition: PipelineDefinition) -> list[DefinitionAlert]:
    """Every alerting rule rendered from ``definition``'s event rules, in declaration order."""
    events = {event.name: event for event in definition.events}
    alerts: list[DefinitionAlert] = []
    for rule in definition.rules:
        if rule.kind not in EVENT_KINDS:
            continue  # measured by querying Prometheus already: see _not_rendered
        event = events[rule.event]
        flag = _flag_of(definition, rule, event)
        guarded = guard_environments(definition, rule, flag)
        if rule.environments:
            applies = frozenset(rule.environments)
            parts = [(applies & guarded, False, True), (applies - guarded, False, False)]
        elif guarded:
            parts = [(guarded, False, True), (guarded, True, False)]
        else:
            parts = [(frozenset(), False, False)]
        for environments, negate, guard in parts:
            if not environments and (guard or rule.environments):
                continue
            match = LabelMatch("environment", environments, negate) if environments else None
            query = rule_query(rule, event, (match,) if match else ())
            # A shadow rule's alert carries the severity its notifications do (info), not the one it declares.
            severity = rule.notified_severity.value
            labels = {"severity": severity, "pipeline": rule.pipeline, "flag": flag, "rule": rule.name}
            if guard:
                labels[GUARD_LABEL] = "true"
            alerts.append(
                DefinitionAlert(
                    name=alert_name(rule.name),
                    rule=rule,
                    event=event,
                    query=query,
                    environments=match,
                    labels=labels,
                    annotations=_annotations(rule, query, flag if guard else None),
                )
            )
    return alerts


def _annotations(rule: Rule, query: RuleQuery, guarded_flag: str | None) -> dict[str, str]:
    shown = query.value_template
    environment = "{{ $labels.environment }}"
    about = template_literal(rule.description.strip().rstrip("."))
    floor = f", with at least {rule.min_samples} events" if rule.min_samples else ""
    description = f"{about}: {shown} in {environment}. " if about else f"Measured {shown} in {environment}. "
    description += f"Fires on {template_literal(rule.condition(sequential=False, capped=False))}{floor}."
    if rule.confidence is not None:
        decided = template_literal(rule.sequential_condition())
        description += f" The control plane decides it {decided}; Prometheus compares the plain value."
    if rule.per_subject_cap is not None:
        description += (
            f" The control plane counts each subject at most {rule.per_subject_cap} times over the window; "
            "Prometheus counts every event."
        )
    if guarded_flag and rule.segment is not None:
        # A guard scoped to one segment rolls back that segment's rollout alone.
        guarded_flag = f"{guarded_flag} (segment {rule.segment})"
    if guarded_flag and rule.shadow:
        description += f" A shadow guard of {guarded_flag}: firing never rolls it back."
    elif guarded_flag and rule.confidence is not None:
        description += (
            f" A guard of {guarded_flag}: the control plane rolls it back in {environment} when its test shows the "
            "breach; this alert does not."
        )
    elif guarded_flag:
        description += f" A guard of {guarded_flag}: firing rolls it back in {environment}."
    annotations = {
        "summary": f"{rule.name} in {environment}: {shown} {rule.op.value} {query.threshold_words}",
        "description": description,
    }
    if rule.runbook_url:
        annotations["runbook_url"] = rule.runbook_url
    return annotations


def _not_rendered(definition: PipelineDefinition) -> list[str]:
    skipped = [rule.name for rule in definition.rules if rule.kind not in EVENT_KINDS]
    if not skipped:
        return []
    names = ", ".join(skipped)
    return ["", f"Not rendered (the control plane already reads their queries from Prometheus): {names}."]


def render_rules(definition: PipelineDefinition) -> str:
    """The text of ``alerts/<pipeline>.rules.yml``."""
    alerts = definition_alerts(definition)
    recordings: dict[str, str] = {}
    for alert in alerts:
        for recording in alert.query.recordings:
            recordings.setdefault(recording.record, recording.expr)
    rules: list[dict[str, Any]] = [{"record": record, "expr": expr} for record, expr in recordings.items()]
    rules += [alert.to_rule() for alert in alerts]
    groups: list[dict[str, Any]] = []
    if rules:
        groups.append({"name": f"{definition.name}.rules", "rules": rules})
    slo = objective_rules(definition)
    if slo:
        groups.append({"name": f"{definition.name}.slo", "rules": slo})
    header = generated_header(
        f"Alert rules of pipeline {definition.name} ({Path(definition.source).name}); unit tests in "
        f"tests/{definition.name}.test.yml.",
        *_not_rendered(definition),
    )
    return header + to_yaml({"groups": groups})
