"""The generated promtool tests expect what the control plane's own evaluator decides.

promtool checks the rendered PromQL against values and alert states the generator works out itself
(controlplane.render.scenarios, controlplane.render.promtool). These tests check those against the evaluator:
the same per-step data, fed to ``alerting.rules.measure`` as aggregation windows, measures the same value with the
same verdict, and ``promtool.simulate`` steps through pending/firing/resolved as ``alerting.rules.step`` does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.alerting.rules import AlertStatus, Measurement, Series, step
from controlplane.alerting.rules import measure as evaluate
from controlplane.catalog.events import EventType
from controlplane.catalog.rules import AlertState, Comparison, Rule, RuleKind
from controlplane.definitions.loader import load_definition
from controlplane.render.promtool import simulate
from controlplane.render.scenarios import Model, Phase, cumulative, model_for

ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"
START = datetime(2026, 11, 1, tzinfo=UTC)
STEP = 60


def levels() -> list[tuple[Rule, EventType, str]]:
    """Every (rule, level) of the shipped definitions the generator builds from whole events per step (fractions
    of an event only exist in Prometheus' counters; streaks are measured by the control plane itself)."""
    found = []
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        definition = load_definition(path, environments=ENVIRONMENTS)
        events = {event.name: event for event in definition.events}
        for rule in definition.rules:
            if rule.kind is RuleKind.STREAK:
                continue
            model = model_for(rule, events[rule.event], STEP)
            for level, rates in model.levels.items():
                if rates is not None and all(rate is None or rate.denominator == 1 for rate in rates.values()):
                    found.append((rule, events[rule.event], level))
    return found


LEVELS = levels()


def as_windows(model: Model, rates: dict[str, Fraction | None], steps: int) -> list[Series]:
    """The same events as the control plane stores them: each step's events in one 10-second window, 30s before
    the step's sample, so a window starting at ``now - window`` holds exactly the steps increase() reads."""
    series = []
    for index in range(1, steps + 1):
        at = START + timedelta(seconds=index * STEP - 30)
        for role, rate in rates.items():
            if rate is None or rate == 0 or role == "sum":
                continue
            labels = dict(model.role_labels[role])
            outcome, variant = labels.pop("outcome", ""), labels.pop("variant")
            if role == "count":
                total = rates["sum"] or Fraction(0)
                series.append(Series(at, outcome, variant, labels, int(rate), int(rate), float(total)))
            else:
                series.append(Series(at, outcome, variant, labels, int(rate)))
    return series


@pytest.mark.parametrize(("rule", "event", "level"), LEVELS, ids=[f"{rule.name}-{level}" for rule, _, level in LEVELS])
def test_the_generators_value_and_verdict_are_the_evaluators(rule: Rule, event: EventType, level: str) -> None:
    model = model_for(rule, event, STEP)
    rates = model.levels[level]
    assert rates is not None
    steps = 3 * model.window_steps
    values = cumulative(model, [Phase(steps, rates)])
    now = START + timedelta(seconds=steps * STEP)

    mirrored = model.read(steps, values)
    measured: Measurement = evaluate(rule, as_windows(model, rates, steps), (), now)

    assert mirrored.enough == measured.sufficient, measured.detail
    if measured.sufficient:
        assert mirrored.exact is not None and measured.value is not None
        assert float(mirrored.exact) == measured.value, measured.detail
        assert rule.op.holds(mirrored.exact, rule.limit) == measured.breached


@settings(max_examples=300, deadline=None)
@given(
    breaches=st.lists(st.booleans(), min_size=1, max_size=40),
    hold=st.integers(min_value=0, max_value=5),
    keep=st.integers(min_value=0, max_value=5),
)
def test_simulated_prometheus_alert_states_are_the_evaluators(breaches: list[bool], hold: int, keep: int) -> None:
    rule = Rule(
        name="r",
        pipeline="p",
        kind=RuleKind.RATIO,
        event="e",
        op=Comparison.GT,
        threshold="0.5",
        hold=timedelta(minutes=hold),
        keep_firing_for=timedelta(minutes=keep),
    )
    states = simulate(
        [1.0 if breach else None for breach in breaches],
        step_seconds=STEP,
        hold_seconds=hold * STEP,
        keep_seconds=keep * STEP,
    )
    status: AlertStatus | None = None
    for index, (breach, simulated) in enumerate(zip(breaches, states, strict=True)):
        now = START + timedelta(seconds=index * STEP)
        measurement = Measurement(value=1.0 if breach else 0.0, samples=1, sufficient=True, breached=breach, detail="")
        status = step(rule, status, measurement, now)
        assert (status.state is AlertState.FIRING) == simulated.firing, (index, status)
