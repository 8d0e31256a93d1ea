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

Per objective: fast, medium and slow burns after more than 6 hours of healthy history (so the 6-hour window is
full), each checked for both burn-rate alerts. The expected states and annotation texts come from
``promtool.simulate`` and ``promtool.expand`` over values computed as Prometheus computes them; a scenario whose
breach would depend on float rounding is refused while rendering (``AmbiguousScenario``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from controlplane.alerting.objectives import Objective
from controlplane.alerting.rules import Comparison, RuleKind
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.alerts import DefinitionAlert, definition_alerts
from controlplane.render.controlplane_rules import CLEANUP_ALERT, ROLLED_BACK_ALERT
from controlplane.render.promql import duration
from controlplane.render.promtool import InputSeries, expand, series_name, simulate
from controlplane.render.scenarios import (
    FOREIGN_PIPELINE,
    INSTANCES,
    AmbiguousScenario,
    Model,
    Phase,
    Reading,
    bad_and_good,
    base_labels,
    build_series,
    cumulative,
    model_for,
)
from controlplane.render.slo import ObjectiveAlert, budget_literal, objective_alerts, ratio_record
from controlplane.render.yamlfile import generated_header, to_yaml
from controlplane.telemetry.catalog import EventType

__all__ = ["render_controlplane_tests", "render_rule_tests"]

#: Candidate environment names for tests, in order of preference.
_ENVIRONMENTS = ("production", "staging", "qa", "dev", "sandbox")


def _duration(seconds: int) -> str:
    """An evaluation time or interval as promtool reads it (0m included)."""
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def _holds(op: Comparison, value: float, limit: float) -> bool:
    return value > limit if op is Comparison.GT else value >= limit


def _check_reading(name: str, step: int, reading: Reading, op: Comparison, threshold: str) -> float | None:
    """The alert expression's result at a step (None: no alert), refusing a breach that depends on rounding."""
    if reading.value is None or reading.exact is None or not reading.enough or math.isnan(reading.value):
        return None
    as_float = _holds(op, reading.value, float(threshold))
    exactly = op.holds(reading.exact, Fraction(threshold))
    if as_float != exactly:
        raise AmbiguousScenario(
            f"{name} at step {step}: {reading.value!r} against {threshold} breaches in floats ({as_float}) "
            f"but not exactly ({exactly}), or the other way round"
        )
    return reading.value if as_float else None


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
                _check_reading(self.name, step, self.model.read(step, values), self.rule.op, self.rule.threshold)
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
            "interval": _duration(self.step),
            "input_series": [item.written() for item in series],
            "alert_rule_test": [
                {"eval_time": _duration(step * self.step), "alertname": self.name, "exp_alerts": expected(step)}
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


# --- objectives ----------------------------------------------------------------------------------------------------


class _ObjectiveTests:
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
                    long = _check_reading(
                        alert.name, step, burn(step, int(row.long_window.total_seconds())), Comparison.GT, rate
                    )
                    short = _check_reading(
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
                    {"eval_time": _duration(step * self.step), "alertname": alert.name, "exp_alerts": expected}
                )
        # The recorded share itself, at the end of the healthy stretch (rounded: floats summed in any order).
        shortest = min(row.short_window for row in self.alerts[0].rows)
        scale = 100_000
        return {
            "name": name,
            "interval": _duration(self.step),
            "input_series": [item.written() for item in series],
            "promql_expr_test": [
                {
                    "expr": f'round({scale} * {ratio_record(shortest)}{{slo="{self.objective.name}"}})',
                    "eval_time": _duration(healthy_end * self.step),
                    "exp_samples": [
                        {
                            "labels": f'{{environment="{environment}", pipeline="{pipeline}", '
                            f'slo="{self.objective.name}"}}',
                            "value": round(float(phases[0][1] * scale)),
                        }
                    ],
                }
            ],
            "alert_rule_test": checks,
        }


def _floats(values: Sequence[Fraction], times: int = 1) -> list[float | None]:
    return [float(value * times) for value in values]


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
        tests += _ObjectiveTests(objective, own, events[objective.event], step).tests(definition.name)
    header = generated_header(
        f"promtool unit tests of every alert in ../{definition.name}.rules.yml; run:",
        f"    promtool test rules alerts/tests/{definition.name}.test.yml",
        *(["", *notes] if notes else []),
    )
    data = {
        "rule_files": [f"../{definition.name}.rules.yml"],
        "evaluation_interval": _duration(step),
        "tests": tests,
    }
    return header + to_yaml(data)


def render_controlplane_tests() -> str:
    """The text of ``alerts/tests/controlplane.test.yml``."""
    from controlplane.render.controlplane_rules import controlplane_alerts

    rules = {rule["alert"]: rule for rule in controlplane_alerts()}

    def firing(alertname: str, labels: dict[str, str], value: float) -> dict[str, Any]:
        rule = rules[alertname]
        every = {**labels, **rule["labels"]}
        texts = {key: expand(text, every, value) for key, text in rule["annotations"].items()}
        return {"exp_labels": every, "exp_annotations": texts}

    rolled_back = {"flag": "enable-reference-images", "environment": "production"}
    replicas = [{"instance": instance, "job": "controlplane"} for instance in INSTANCES]
    state_series = [
        {
            "series": series_name("controlplane_rollout_state", {**rolled_back, "state": state, **replica}),
            "values": values,
        }
        for replica in replicas
        for state, values in (("running", "1x5 0x10"), ("rolled_back", "0x5 1x5 0x5"))
    ]
    # Another environment rolled back from 2m on: its own alert, never this one's.
    state_series += [
        {
            "series": series_name(
                "controlplane_rollout_state",
                {**rolled_back, "environment": "staging", "state": "rolled_back", **replica},
            ),
            "values": "0x1 1x13",
        }
        for replica in replicas
    ]
    staging = firing(ROLLED_BACK_ALERT, {**rolled_back, "environment": "staging"}, 1)
    failing = {"receiver": "pagerduty"}
    notification_series = [
        {
            "series": series_name("controlplane_notifications_total", {**failing, "result": result, **replica}),
            "values": values,
        }
        for replica in replicas
        for result, values in (("failed", "0x10 1x20"), ("sent", "0+5x30"))
    ]
    policy = {"policy": "expired-reference-images", "bucket": "reference-images"}
    # Deadline at 10m (600 s since promtool's epoch); a success at 20m moves it to 90m.
    deadline_series = [
        {
            "series": series_name("controlplane_cleanup_success_deadline_timestamp_seconds", {**policy, **replica}),
            "values": "600x19 5400x10",
        }
        for replica in replicas
    ]
    tests = [
        {
            "name": f"{ROLLED_BACK_ALERT} fires while the rollout's state is rolled_back, once for all replicas",
            "interval": "1m",
            "input_series": state_series,
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": ROLLED_BACK_ALERT, "exp_alerts": []},
                {"eval_time": "4m", "alertname": ROLLED_BACK_ALERT, "exp_alerts": [staging]},
                {
                    "eval_time": "6m",
                    "alertname": ROLLED_BACK_ALERT,
                    "exp_alerts": [firing(ROLLED_BACK_ALERT, rolled_back, 1), staging],
                },
                {"eval_time": "12m", "alertname": ROLLED_BACK_ALERT, "exp_alerts": [staging]},
            ],
        },
        {
            "name": "ControlPlaneNotificationsFailing fires while notifications failed in the last 15m",
            "interval": "1m",
            "input_series": notification_series,
            "alert_rule_test": [
                {"eval_time": "9m", "alertname": "ControlPlaneNotificationsFailing", "exp_alerts": []},
                {
                    "eval_time": "20m",
                    "alertname": "ControlPlaneNotificationsFailing",
                    # Each replica failed one: two in all.
                    "exp_alerts": [firing("ControlPlaneNotificationsFailing", failing, 2)],
                },
                {"eval_time": "28m", "alertname": "ControlPlaneNotificationsFailing", "exp_alerts": []},
            ],
        },
        {
            "name": f"{CLEANUP_ALERT} fires once past the success deadline, once for all replicas, until a success",
            "interval": "1m",
            "input_series": deadline_series,
            "alert_rule_test": [
                {"eval_time": "10m", "alertname": CLEANUP_ALERT, "exp_alerts": []},
                {"eval_time": "15m", "alertname": CLEANUP_ALERT, "exp_alerts": [firing(CLEANUP_ALERT, policy, 300)]},
                {"eval_time": "21m", "alertname": CLEANUP_ALERT, "exp_alerts": []},
            ],
        },
    ]
    header = generated_header(
        "promtool unit tests of ../controlplane.rules.yml; run:",
        "    promtool test rules alerts/tests/controlplane.test.yml",
    )
    data = {"rule_files": ["../controlplane.rules.yml"], "evaluation_interval": "1m", "tests": tests}
    return header + to_yaml(data)
