"""promtool unit tests of the rendered rule files (``alerts/tests/<pipeline>.test.yml``), generated for every alert.

Per definition rule, each test feeds two replicas' series and checks, at the evaluations where something changes
(one before an alert fires, when it fires, its last firing evaluation, the one after), with labels and annotations:

    just below   the threshold by one event (while the same event breaches under another pipeline and outside
                 the rule's scope): never fires
    just above   the threshold by one event: fires (after `for`)
    at           exactly the threshold: fires only for `>=` (where floats can hit it exactly)
    too few      one sample short of min_samples, every one breaching: never fires (for a cohort: either cohort)
    enough       exactly min_samples, every one breaching: fires (where that is a whole number of events per step)
    breach       healthy, breaching, healthy again, in a guarded environment, an unguarded one and, for a rule
                 limited to some environments, one outside them: pending until `for` has elapsed, firing, still
                 firing during `keep_firing_for`, resolved after it

Per objective: the burn-rate tests of ``objective_tests``. The expected states and annotation texts come from
``promtool.simulate`` and ``promtool.expand`` over values computed as Prometheus computes them; a scenario whose
breach would depend on float rounding is refused while rendering (``AmbiguousScenario``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from controlplane.catalog.rules import Comparison, RuleKind
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.alerts import DefinitionAlert, definition_alerts
from controlplane.render.objective_tests import ObjectiveTests
from controlplane.render.promql_text import duration
from controlplane.render.promtool import InputSeries, expand, simulate
from controlplane.render.scenarios import (
    AmbiguousScenario,
    Model,
    Phase,
    alert_value,
    build_series,
    cumulative,
    model_for,
)
from controlplane.render.slo import objective_alerts
from controlplane.render.yamlfile import generated_header, to_yaml

__all__ = ["render_rule_tests"]

#: Candidate environment names for tests, in order of preference.
_ENVIRONMENTS = ("production", "staging", "qa", "dev", "sandbox")


# --- definition rules ----------------------------------------------------------------------------------------------


def _environments(alerts: Sequence[DefinitionAlert]) -> list[str]:
    """A guarded environment, an unguarded one, and one the rule does not measure, where there are such."""
    mentioned = sorted({value for alert in alerts if alert.environments for value in alert.environments.values})
    candidates = [*_ENVIRONMENTS, *mentioned]
    chosen: list[str] = []
    for guard in (True, False):
        for alert in alerts:
            found = next((env for env in candidates if alert.covers(env) and env not in chosen), None)
            if alert.guard is guard and found is not None:
                chosen.append(found)
                break
    outside = next((env for env in candidates if not any(alert.covers(env) for alert in alerts)), None)
    if outside is not None:
        chosen.append(outside)
    return chosen


class _RuleTests:
    """The tests of one definition rule (one alert name, one or two alerting rules)."""

    def __init__(self, alerts: Sequence[DefinitionAlert], pipeline: str, step: int) -> None:
        self.alerts = alerts
        self.rule = alerts[0].rule
        self.pipeline = pipeline
        self.step = step
        self.model: Model = model_for(self.rule, alerts[0].event, step)
        self.environments = _environments(alerts)
        self.name = alerts[0].name
        self.notes: list[str] = []

    def _alert_for(self, environment: str) -> DefinitionAlert | None:
        return next((alert for alert in self.alerts if alert.covers(environment)), None)

    def _steps(self, seconds: float) -> int:
        return math.ceil(seconds / self.step)

    def tests(self) -> list[dict[str, Any]]:
        """Every test of this rule, skipping (with a note) levels that cannot be built for its threshold."""
        levels = self.model.levels
        window = self.model.window_steps
        hold = self._steps(self.rule.hold.total_seconds())
        keep = self._steps(self.rule.keep_firing_for.total_seconds())
        quiet = 2 * window + hold + 3
        tests = []
        for level, words in (
            ("below", "just below the threshold (and the same breach elsewhere) never fires"),
            ("above", "just above the threshold fires"),
            ("at", "exactly at the threshold " + ("fires" if self.rule.op is Comparison.GE else "never fires")),
            ("few", f"{self.rule.min_samples - 1} samples, one fewer than min_samples, all breaching: never fires"),
            ("few_baseline", "too few samples of the baseline cohort never fires"),
            ("enough", f"exactly {self.rule.min_samples} samples, all breaching, fires"),
        ):
            rates = levels.get(level)
            if rates is None:
                if level in ("below", "above", "at") or (level == "few" and self.rule.min_samples > 1):
                    self.notes.append(f"{self.name}: no `{level}` test: no data gives that level exactly here")
                continue
            noise = levels.get("breach") if level == "below" else None
            fires = level in ("above", "enough") or (level == "at" and self.rule.op is Comparison.GE)
            tests.append(
                self._test(
                    f"{self.name}: {words}",
                    [Phase(quiet, rates)],
                    self.environments[:1],
                    noise=noise,
                    must_fire=fires,
                    never_fire=not fires,
                    at=[window + hold + 1, quiet],
                )
            )
        healthy, breach = levels.get("healthy"), levels.get("breach")
        if healthy is None or breach is None:
            self.notes.append(f"{self.name}: no breach test, its threshold leaves no healthy or breaching level")
            return tests
        phases = [Phase(window + 3, healthy), Phase(window + hold + 3, breach), Phase(window + keep + 3, healthy)]
        kept = f", kept firing for {duration(self.rule.keep_firing_for)}" if keep else ""
        held = f" after `for` {duration(self.rule.hold)}" if hold else ""
        tests.append(
            self._test(
                f"{self.name}: a breach fires{held} with its labels and annotations, then resolves{kept}",
                phases,
                self.environments,
                must_fire=True,
                at=[],
            )
        )
        return tests

    def _test(
        self,
        name: str,
        phases: Sequence[Phase],
        environments: Sequence[str],
        *,
        noise: Mapping[str, Fraction | None] | None = None,
        must_fire: bool = False,
        never_fire: bool = False,
        at: Sequence[int],
    ) -> dict[str, Any]:
        values = cumulative(self.model, phases)
        length = len(next(iter(next(iter(values.values())))))
        noise_values = cumulative(self.model, [Phase(length - 1, noise)]) if noise is not None else None
        series: list[InputSeries] = []
        timelines: dict[str, list[float | None]] = {}
        for environment in environments:
            series += build_series(self.model, environment, values, pipeline=self.pipeline, noise=noise_values)
            readings = [
                alert_value(self.name, step, self.model.read(step, values), self.rule.op, self.rule.threshold)
                for step in range(length)
            ]
            if self._alert_for(environment) is not None:
                timelines[environment] = readings
        states = {
            environment: simulate(
                readings,
                step_seconds=self.step,
                hold_seconds=int(self.rule.hold.total_seconds()),
                keep_seconds=int(self.rule.keep_firing_for.total_seconds()),
            )
            for environment, readings in timelines.items()
        }
        firing = sorted({step for timeline in states.values() for step, state in enumerate(timeline) if state.firing})
        if never_fire and firing:
            raise AmbiguousScenario(f"{name}: fires at step {firing[0]}")
        if must_fire and not firing:
            raise AmbiguousScenario(f"{name}: never fires")
        checks = set(at)
        if firing:
            # One evaluation before it fires, when it fires, its last firing evaluation and the one after it.
            first, last = firing[0], firing[-1]
            checks |= {first - 1, first, last, last + 1}
            breach_end = sum(phase.steps for phase in phases[:2]) if len(phases) > 1 else last
            checks |= {breach_end, breach_end + 1}
        checks = {step for step in checks if 0 < step < length}

        def expected(step: int) -> list[dict[str, Any]]:
            found = []
            for environment, timeline in states.items():
                state = timeline[step]
                if not state.firing or state.value is None:
                    continue
                alert = self._alert_for(environment)
                assert alert is not None
                labels = {**alert.labels, "environment": environment}
                annotations = {key: expand(text, labels, state.value) for key, text in alert.annotations.items()}
                found.append({"exp_labels": labels, "exp_annotations": annotations})
            return found

        return {
            "name": name,
            "interval": duration(self.step),
            "input_series": [item.written() for item in series],
            "alert_rule_test": [
                {"eval_time": duration(step * self.step), "alertname": self.name, "exp_alerts": expected(step)}
                for step in sorted(checks)
            ],
        }


def _step(definition: PipelineDefinition) -> int:
    """The input and evaluation interval: a minute, or less when a window is not a whole number of minutes."""
    step = 60
    for rule in definition.rules:
        if rule.kind in (RuleKind.RATIO, RuleKind.RATE, RuleKind.MEAN, RuleKind.COHORT):
            step = math.gcd(step, int(rule.window.total_seconds()))
    return step


# --- files -----------------------------------------------------------------------------------------------------------


def render_rule_tests(definition: PipelineDefinition) -> str:
    """The text of ``alerts/tests/<pipeline>.test.yml``: every alert of ``alerts/<pipeline>.rules.yml`` tested."""
    step = _step(definition)
    grouped: dict[str, list[DefinitionAlert]] = {}
    for alert in definition_alerts(definition):
        grouped.setdefault(alert.name, []).append(alert)
    tests: list[dict[str, Any]] = []
    notes: list[str] = []
    for alerts in grouped.values():
        builder = _RuleTests(alerts, definition.name, step)
        tests += builder.tests()
        notes += builder.notes
    events = {event.name: event for event in definition.events}
    burn_alerts = objective_alerts(definition)
    for objective in definition.objectives:
        own = [alert for alert in burn_alerts if alert.objective is objective]
        tests += ObjectiveTests(objective, own, events[objective.event], step).tests(definition.name)
    header = generated_header(
        f"promtool unit tests of every alert in ../{definition.name}.rules.yml; run:",
        f"    promtool test rules alerts/tests/{definition.name}.test.yml",
        *(["", *notes] if notes else []),
    )
    data = {
        "rule_files": [f"../{definition.name}.rules.yml"],
        "evaluation_interval": duration(step),
        "tests": tests,
    }
    return header + to_yaml(data)
