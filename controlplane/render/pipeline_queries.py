"""A pipeline definition as its dashboard reads it: events and rules looked up by name, and the PromQL of their
metrics, every label matcher checked against the event catalog (a panel that would select nothing is refused
while rendering, not discovered as an empty graph).

Metric names come from the code that exports them: ``EventType.counter_name``/``histogram_name``/``total_name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.catalog.events import EventType
from controlplane.catalog.rules import Rule, RuleKind
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.panels import ENVIRONMENT, ROLLOUT_STATE, Timeseries, timeseries
from controlplane.render.promql_text import matcher, selector, sum_rate

__all__ = ["PipelineQueries"]


@dataclass(frozen=True, slots=True)
class PipelineQueries:
    """A definition's events and rules, looked up by name, with PromQL selectors checked against the catalog."""

    definition: PipelineDefinition

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def flags(self) -> list[str]:
        return sorted(flag.key for flag in self.definition.flags)

    def event(self, name: str) -> EventType:
        """The event type ``name``; refused when the definition declares none."""
        for event in self.definition.events:
            if event.name == name:
                return event
        raise ValueError(f"pipeline {self.name} declares no event `{name}`, which its dashboard reads")

    def rule(self, name: str, kinds: Iterable[RuleKind] = tuple(RuleKind)) -> Rule:
        """The rule ``name``, of one of ``kinds``; refused when the definition declares none."""
        wanted = set(kinds)
        for rule in self.definition.rules:
            if rule.name == name and rule.kind in wanted:
                return rule
        kind = " or ".join(sorted(kind.value for kind in wanted)) if len(wanted) < len(RuleKind) else "alert"
        raise ValueError(f"pipeline {self.name} declares no {kind} rule `{name}`, which its dashboard draws")

    def selector(self, event: EventType, metric: str, where: Mapping[str, Iterable[str]] | None = None) -> str:
        """``metric{pipeline=..., environment=~"$environment", ...}``, each matcher checked against the catalog."""
        matchers = [matcher("pipeline", [self.name]), ENVIRONMENT]
        for label, values in sorted((where or {}).items()):
            chosen = set(values)
            if label == "outcome":
                allowed = set(event.outcomes)
            elif label == "variant":
                allowed = set(event.variants) or chosen
            elif label in event.labels:
                allowed = set(event.labels[label].values)
            else:
                raise ValueError(f"event {event.name} of {self.name} has no label `{label}`")
            if not chosen or not chosen <= allowed:
                raise ValueError(
                    f"event {event.name} of {self.name}: {label} {sorted(chosen)} not in {sorted(allowed)}"
                )
            matchers.append(matcher(label, chosen))
        return selector(metric, *matchers)

    def counter(self, event: EventType, where: Mapping[str, Iterable[str]] | None = None) -> str:
        """The event's counter (``<event>_events_total``), in scope."""
        return self.selector(event, f"{event.counter_name}_total", where)

    def total(self, event: EventType, name: str, where: Mapping[str, Iterable[str]] | None = None) -> str:
        """The counter of one of the event's totals (``<event>_<total>_total``), in scope."""
        if name not in event.totals:
            raise ValueError(f"event {event.name} of {self.name} declares no `{name}` total, which a panel reads")
        return self.selector(event, f"{event.total_name(name)}_total", where)

    def histogram(self, event: EventType, suffix: str, where: Mapping[str, Iterable[str]] | None = None) -> str:
        """One series of the event's value histogram (``bucket``, ``sum``, ``count``), in scope."""
        if event.histogram_name is None:
            raise ValueError(f"event {event.name} of {self.name} declares no value")
        return self.selector(event, f"{event.histogram_name}_{suffix}", where)

    def share(
        self, event: EventType, part: Mapping[str, Iterable[str]], of: Mapping[str, Iterable[str]], by: Sequence[str]
    ) -> str:
        """The share of ``of`` events that are also ``part`` events, per ``by``."""
        whole = dict(of)
        narrower = {label: set(values) & set(whole.get(label, values)) for label, values in part.items()}
        return f"{sum_rate(self.counter(event, whole | narrower), by)} / {sum_rate(self.counter(event, whole), by)}"

    def ratio_of(self, rule: Rule, by: Sequence[str]) -> str:
        """A ratio rule in PromQL: numerator events in scope / events in scope."""
        return self.share(self.event(rule.event), rule.numerator.matches, rule.where.matches, by)

    def mean_of(self, rule: Rule, by: Sequence[str]) -> str:
        """A mean rule in PromQL: sum of the values in scope / their count."""
        event = self.event(rule.event)
        where = rule.where.matches
        return (
            f"{sum_rate(self.histogram(event, 'sum', where), by)} / "
            f"{sum_rate(self.histogram(event, 'count', where), by)}"
        )

    def measure(self, rule: Rule, by: Sequence[str]) -> str:
        """A ratio or mean rule in PromQL, as the rule measures it, per ``by``."""
        return self.mean_of(rule, by) if rule.kind is RuleKind.MEAN else self.ratio_of(rule, by)

    def against_guard(self, title: str, what: str, rule: Rule, *, unit: str = "percentunit") -> Timeseries:
        """``what`` per environment and variant, as the rule measures it, against its threshold (dashed line)."""
        return timeseries(
            title,
            f"{what}, per environment and variant, against the `{rule.name}` guard (dashed line): {rule.condition()}.",
            unit,
            [(self.measure(rule, ["environment", "variant"]), "{{environment}} {{variant}}")],
            line=float(rule.threshold),
        )

    def environments_query(self) -> str:
        """The environment variable's query: every environment where one of the pipeline's flags has a rollout."""
        return f"label_values({selector(ROLLOUT_STATE, matcher('flag', self.flags))}, environment)"
