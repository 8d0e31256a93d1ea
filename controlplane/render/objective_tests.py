"""promtool tests of an objective's burn-rate alerts: fast, medium and slow burns after more than 6 hours of
healthy history (so the 6-hour window is full), each checked for both burn-rate alerts, and the recorded error
share itself. Expected states and annotations come from ``promtool.simulate`` and ``promtool.expand``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from controlplane.catalog.events import EventType
from controlplane.catalog.objectives import Objective
from controlplane.catalog.rules import Comparison
from controlplane.render.promql_text import duration, matcher, selector
from controlplane.render.promtool import InputSeries, expand, simulate
from controlplane.render.scenarios import FOREIGN_PIPELINE, INSTANCES, Reading, alert_value, bad_and_good, base_labels
from controlplane.render.slo import ObjectiveAlert, budget_literal, ratio_record

__all__ = ["ObjectiveTests"]


class ObjectiveTests:
    """Burn-rate tests of one objective: fast (pages via 1h/5m), medium (pages via 6h/30m), slow (ticket only)."""

    def __init__(self, objective: Objective, alerts: Sequence[ObjectiveAlert], event: EventType, step: int) -> None:
        self.objective = objective
        self.alerts = alerts
        self.step = step
        self.budget = Fraction(objective.budget)
        # Whole, even counts per step at every share used (a healthy share is a fifth of the budget).
        self.volume = math.lcm(2000, 10 * self.budget.denominator)
        self.metric = f"{event.counter_name}_total"
        base = base_labels(event, objective.where)
        self.bad_labels, self.good_labels = bad_and_good(event, objective.where, objective.bad, base)

    def tests(self, pipeline: str) -> list[dict[str, Any]]:
        """The three burns, each after 410 healthy minutes: more than 6h, so the 6h window starts out healthy."""
        healthy = 410
        scenarios = (
            ("a fast burn (20x) pages through the 1h and 5m windows and stops soon after it ends", 20, 70, 60),
            ("a medium burn (8x) pages through the 6h and 30m windows", 8, 330, 40),
            ("a slow burn (2x) opens a ticket and never pages", 2, 500, 0),
        )
        tests = []
        for words, burn, minutes, after in scenarios:
            phases = [(healthy, self.budget / 5), (minutes, burn * self.budget)]
            if after:
                phases.append((after, self.budget / 5))
            tests.append(self._test(f"{self.objective.name}: {words}", phases, pipeline))
        return tests

    def _replicas(self, phases: Sequence[tuple[int, Fraction]], role: str) -> list[list[Fraction]]:
        rows = []
        for replica in range(len(INSTANCES)):
            values, total = [Fraction(0)], Fraction(0)
            for minutes, share in phases:
                bad = Fraction(math.floor(min(share, Fraction(1)) * self.volume))
                rate = bad if role == "bad" else self.volume - bad
                first = Fraction(math.ceil(rate / len(INSTANCES)))
                mine = first if replica == 0 else (rate - first) / (len(INSTANCES) - 1)
                for _ in range(minutes * 60 // self.step):
                    total += mine
                    values.append(total)
            rows.append(values)
        return rows

    def _test(self, name: str, phases: Sequence[tuple[int, Fraction]], pipeline: str) -> dict[str, Any]:
        replicas = {role: self._replicas(phases, role) for role in ("bad", "good")}
        length = len(replicas["bad"][0])
        environment = "production"
        series: list[InputSeries] = []
        for role, labels in (("bad", self.bad_labels), ("good", self.good_labels)):
            for instance, values in zip(INSTANCES, replicas[role], strict=True):
                written = {"pipeline": pipeline, "environment": environment, **labels}
                series.append(
                    InputSeries(self.metric, {**written, "instance": instance, "job": "controlplane"}, _floats(values))
                )
        # Another pipeline's errors, ten times as many, must not count.
        for instance, values in zip(INSTANCES, replicas["bad"], strict=True):
            written = {"pipeline": FOREIGN_PIPELINE, "environment": environment, **self.bad_labels}
            series.append(
                InputSeries(self.metric, {**written, "instance": instance, "job": "controlplane"}, _floats(values, 10))
            )
        budget = float(budget_literal(self.objective))

        def burn(step: int, window: int) -> Reading:
            # rate() of each replica's series, summed by the recording rule, then the share over the budget.
            start, seconds = max(0, step - window // self.step), window
            rates = {
                role: [(float(values[step]) - float(values[start])) / seconds for values in replicas[role]]
                for role in ("bad", "good")
            }
            bad, total = sum(rates["bad"]), sum(rates["bad"]) + sum(rates["good"])
            exact_bad = sum((values[step] - values[start] for values in replicas["bad"]), Fraction(0))
            exact_all = exact_bad + sum((values[step] - values[start] for values in replicas["good"]), Fraction(0))
            if step == 0 or total == 0:
                return Reading(None, None, enough=False)
            return Reading(bad / total / budget, exact_bad / exact_all / self.budget)

        checks: list[dict[str, Any]] = []
        healthy_end = phases[0][0] * 60 // self.step
        for alert in self.alerts:
            readings: list[float | None] = []
            for step in range(length):
                value = None
                for row in alert.rows:
                    rate = str(row.burn_rate)
                    long = alert_value(
                        alert.name, step, burn(step, int(row.long_window.total_seconds())), Comparison.GT, rate
                    )
                    short = alert_value(
                        alert.name, step, burn(step, int(row.short_window.total_seconds())), Comparison.GT, rate
                    )
                    if long is not None and short is not None:
                        value = long
                        break
                readings.append(value)
            timeline = simulate(readings, step_seconds=self.step, hold_seconds=0, keep_seconds=0)
            firing = [step for step, state in enumerate(timeline) if state.firing]
            at = {healthy_end, length - 1}
            if firing:
                at |= {firing[0] - 1, firing[0], firing[-1], firing[-1] + 1}
            labels = {**alert.labels, "environment": environment}
            for step in sorted(step for step in at if 0 < step < length):
                state = timeline[step]
                expected = []
                if state.firing and state.value is not None:
                    annotations = {key: expand(text, labels, state.value) for key, text in alert.annotations.items()}
                    expected.append({"exp_labels": labels, "exp_annotations": annotations})
                checks.append(
                    {"eval_time": duration(step * self.step), "alertname": alert.name, "exp_alerts": expected}
                )
        # The recorded share itself, at the end of the healthy stretch (rounded: floats summed in any order).
        shortest = min(row.short_window for row in self.alerts[0].rows)
        scale = 100_000
        slo = matcher("slo", [self.objective.name])
        return {
            "name": name,
            "interval": duration(self.step),
            "input_series": [item.written() for item in series],
            "promql_expr_test": [
                {
                    "expr": f"round({scale} * {selector(ratio_record(shortest), slo)})",
                    "eval_time": duration(healthy_end * self.step),
                    "exp_samples": [
                        {
                            "labels": "{"
                            + ", ".join([matcher("environment", [environment]), matcher("pipeline", [pipeline]), slo])
                            + "}",
                            "value": round(float(phases[0][1] * scale)),
                        }
                    ],
                }
            ],
            "alert_rule_test": checks,
        }


def _floats(values: Sequence[Fraction], times: int = 1) -> list[float | None]:
    return [float(value * times) for value in values]
