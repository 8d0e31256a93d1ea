"""Burn-rate alerts of a definition's objectives (``slo:``), multi-window and multi-burn-rate (SRE Workbook ch. 5).

Per objective: the bad share of its events recorded over every window of the table, then one alert per severity
that fires when, for any row of that severity, both the long and the short window burn the budget faster than the
row's rate. ``$value`` is the burn rate over the long window: 1 spends the budget in exactly the period.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from controlplane.catalog.events import EventType
from controlplane.catalog.objectives import BURN_RATE_ALERTS, BurnRateAlert, Objective
from controlplane.catalog.rules import Severity
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.names import alert_name, template_literal
from controlplane.render.promql import GROUPING
from controlplane.render.promql_text import LabelMatch, duration, matchers, paren

__all__ = [
    "BURN_ALERT_SUFFIX",
    "ObjectiveAlert",
    "budget_literal",
    "objective_alerts",
    "objective_rules",
    "ratio_record",
]

#: What each severity's burn-rate alert is called after the objective's name.
BURN_ALERT_SUFFIX = {Severity.PAGE: "ErrorBudgetBurn", Severity.TICKET: "ErrorBudgetSlowBurn"}


@dataclass(frozen=True, slots=True)
class ObjectiveAlert:
    """One burn-rate alert of an objective: the rows of the table it fires on."""

    name: str
    objective: Objective
    severity: Severity
    rows: tuple[BurnRateAlert, ...]
    labels: dict[str, str]
    annotations: dict[str, str]
    expr: str


def ratio_record(window: timedelta) -> str:
    """The recording rule of an objective's bad share over ``window`` (told apart by its ``slo`` label)."""
    return f"{'_'.join(GROUPING)}_slo:slo_errors_per_events:ratio_rate{duration(window)}"


def budget_literal(objective: Objective) -> str:
    """The objective's error budget as the alerts write it: ``0.005`` for 99.5%."""
    return _number(objective.budget)


def _windows() -> list[timedelta]:
    return sorted({window for row in BURN_RATE_ALERTS for window in (row.long_window, row.short_window)})


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _recordings(objective: Objective, event: EventType) -> list[dict[str, Any]]:
    base = [LabelMatch("pipeline", frozenset({objective.pipeline}))]
    base += [LabelMatch(key, values) for key, values in sorted(objective.where.matches.items())]
    bad = dict(objective.where.matches)
    for key, values in objective.bad.matches.items():
        bad[key] = bad[key] & values if key in bad else values
    bad_matches = [LabelMatch("pipeline", frozenset({objective.pipeline}))]
    bad_matches += [LabelMatch(key, values) for key, values in sorted(bad.items())]
    by = f"sum by ({', '.join(GROUPING)})"
    counter = f"{event.counter_name}_total"
    recorded = []
    for window in _windows():
        span = duration(window)
        total = f"{by} (rate({counter}{matchers(base)}[{span}]))"
        errors = f"{by} (rate({counter}{matchers(bad_matches)}[{span}]))"
        # No bad event since the replicas started means no bad series at all: a share of 0, not no share.
        recorded.append(
            {
                "record": ratio_record(window),
                "expr": paren(f"{errors}\nor\n0 * {total}") + f"\n/\n{total}",
                "labels": {"slo": objective.name},
            }
        )
    return recorded


def objective_alerts(definition: PipelineDefinition) -> list[ObjectiveAlert]:
    """The burn-rate alerts of every objective of ``definition``."""
    alerts = []
    for objective in definition.objectives:
        slo = LabelMatch("slo", frozenset({objective.name}))
        for severity, suffix in BURN_ALERT_SUFFIX.items():
            rows = tuple(row for row in BURN_RATE_ALERTS if row.severity is severity)
            if not rows:
                continue
            branches = []
            for row in rows:
                rate = _number(row.burn_rate)
                long, short = (
                    f"{ratio_record(window)}{matchers([slo])} / {budget_literal(objective)} > {rate}"
                    for window in (row.long_window, row.short_window)
                )
                branches.append(paren(f"{long}\nand\n{short}"))
            words = " or ".join(
                f"{_number(row.burn_rate)}x over {duration(row.long_window)} and {duration(row.short_window)}"
                for row in rows
            )
            percent = f"{(Decimal(objective.objective) * 100).normalize():f}%"
            about = template_literal(objective.description.strip().rstrip("."))
            environment = "{{ $labels.environment }}"
            description = (
                f"{about + ': ' if about else ''}the error budget of {objective.name} ({percent} of {objective.event} "
                f"events{_where(objective)} not {objective.bad.describe()}, over {duration(objective.period)}) "
                f"burns {{{{ $value | humanize }}}}x as fast as the period allows in {environment}. "
                f"Fires at {words}."
            )
            annotations = {
                "summary": f"{objective.name} in {environment}: error budget burning {{{{ $value | humanize }}}}x",
                "description": description,
            }
            if objective.runbook_url:
                annotations["runbook_url"] = objective.runbook_url
            alerts.append(
                ObjectiveAlert(
                    name=alert_name(objective.name) + suffix,
                    objective=objective,
                    severity=severity,
                    rows=rows,
                    labels={
                        "severity": severity.value,
                        "pipeline": objective.pipeline,
                        "flag": objective.flag,
                        "slo": objective.name,
                    },
                    annotations=annotations,
                    expr="\nor\n".join(branches),
                )
            )
    return alerts


def _where(objective: Objective) -> str:
    return f" where {objective.where.describe()}" if objective.where.matches else ""


def objective_rules(definition: PipelineDefinition) -> list[dict[str, Any]]:
    """The recording and alerting rules of ``definition``'s objectives, as a rule group lists them."""
    events = {event.name: event for event in definition.events}
    rules: list[dict[str, Any]] = []
    for objective in definition.objectives:
        rules += _recordings(objective, events[objective.event])
    for alert in objective_alerts(definition):
        rules.append(
            {"alert": alert.name, "expr": alert.expr, "labels": alert.labels, "annotations": alert.annotations}
        )
    return rules
