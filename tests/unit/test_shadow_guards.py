"""Unit tests for `mode: shadow` rules: how they are declared, stored and described, and that a shadow guard never
holds a stage, never rolls back and is notified as `info` (the definition is `test_definitions_telemetry.VALID`)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from controlplane.alerting.evaluation import alert_event
from controlplane.alerting.rules import Measurement
from controlplane.catalog.rules import (
    SHADOW_CONDITION,
    AlertState,
    Comparison,
    Rule,
    RuleKind,
    RuleMode,
    Severity,
    rule_from_json,
    rule_to_json,
)
from controlplane.flags import service as flag_service
from controlplane.guarding import rollback
from controlplane.guarding.readings import judge_enforced
from controlplane.rollouts.gates import GuardReading
from controlplane.rollouts.service import GuardedRollout
from controlplane.rollouts.stages import RolloutState
from tests.unit.test_definitions_telemetry import VALID, assert_refused, edited, parse

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ERROR_RATE = Rule(
    name="error-rate",
    pipeline="demo",
    kind=RuleKind.RATIO,
    event="demo_request",
    op=Comparison.GT,
    threshold="0.03",
    severity=Severity.PAGE,
    flag="demo-flag",
)
SHADOW = replace(ERROR_RATE, name="error-rate-shadow", threshold="0.01", mode=RuleMode.SHADOW)
BREACH = Measurement(value=0.05, samples=400, sufficient=True, breached=True, detail="20/400 = 5%")
# The ratio rule of VALID (rules[0]), as written there.
RATIO_THRESHOLD = "    threshold: 0.03\n"


def firing(rule: str) -> GuardReading:
    return GuardReading(rule=rule, state=AlertState.FIRING, condition="...", value=0.05, samples=400)


def inactive(rule: str) -> GuardReading:
    return GuardReading(rule=rule, state=AlertState.INACTIVE, condition="...", value=0.001, samples=400)


# --- declared, stored, described ------------------------------------------------------------------------------


def test_a_rule_written_in_shadow_mode_loads_as_one_and_says_so() -> None:
    rule = parse(edited(RATIO_THRESHOLD, RATIO_THRESHOLD + "    mode: shadow\n")).rules[0]

    assert rule.mode is RuleMode.SHADOW and rule.shadow
    assert rule.condition().endswith(f"> 0.03 over 5m {SHADOW_CONDITION}")
    assert rule.notified_severity is Severity.INFO and rule.severity is Severity.PAGE


def test_rules_enforce_by_default_and_store_byte_identically() -> None:
    enforced = parse(edited(RATIO_THRESHOLD, RATIO_THRESHOLD + "    mode: enforce\n")).rules
    for written, default in zip(enforced, parse(VALID).rules, strict=True):
        assert written.mode is default.mode is RuleMode.ENFORCE
        stored = rule_to_json(default)
        assert "mode" not in stored
        assert json.dumps(rule_to_json(written), sort_keys=True) == json.dumps(stored, sort_keys=True)
        assert "shadow" not in default.condition()
        assert default.notified_severity is default.severity


def test_a_shadow_rule_is_stored_with_its_mode_and_read_back() -> None:
    stored = rule_to_json(SHADOW)

    assert stored["mode"] == "shadow"
    assert rule_from_json("demo", stored) == SHADOW
    assert rule_from_json("demo", rule_to_json(ERROR_RATE)).mode is RuleMode.ENFORCE


def test_a_prometheus_rule_may_be_a_shadow_too() -> None:
    text = VALID + (
        "  - name: prom-ratio\n"
        "    source: prometheus\n"
        '    query: sum(rate(errors_total{environment="{environment}"}[5m]))\n'
        '    op: ">"\n'
        "    threshold: 0.05\n"
        "    mode: shadow\n"
    )

    assert parse(text).rules[5].shadow


@pytest.mark.parametrize("written", ["watch", "Shadow", "enforced"])
def test_an_unknown_mode_is_refused_on_its_line(written: str) -> None:
    text = edited(RATIO_THRESHOLD, f"{RATIO_THRESHOLD}    mode: {written}\n")

    assert_refused(text, "rules[0].mode", f"mode: {written}", "mode must be `enforce`", "`shadow`")


# --- never holds a stage ----------------------------------------------------------------------------------------


def test_the_gate_verdict_leaves_a_firing_shadow_guard_out() -> None:
    rules = {rule.name: rule for rule in (ERROR_RATE, SHADOW)}

    verdict = judge_enforced([inactive("error-rate"), firing("error-rate-shadow")], rules, samples=None, min_samples=0)

    assert verdict.clear, verdict.reasons


def test_the_gate_verdict_still_holds_on_an_enforced_guard_or_an_unknown_one() -> None:
    rules = {rule.name: rule for rule in (ERROR_RATE, SHADOW)}

    held = judge_enforced([firing("error-rate"), firing("error-rate-shadow")], rules, samples=None, min_samples=0)
    gone = GuardReading(rule="gone", state=None, condition="no such rule is applied")
    unknown = judge_enforced([gone], rules, samples=None, min_samples=0)
    few = judge_enforced([firing("error-rate-shadow")], rules, samples=10, min_samples=500)

    assert not held.clear and len(held.reasons) == 1 and "`error-rate` is firing" in held.reasons[0]
    assert not unknown.clear
    assert not few.clear and "needs 500" in few.summary


# --- never rolls back, notified as info -------------------------------------------------------------------------


def test_a_breaching_shadow_guard_rolls_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def roll_back_as(session: Session, flag: str, environment: str, *args: Any) -> None:
        calls.append((flag, environment))

    monkeypatch.setattr(rollback, "roll_back_as", roll_back_as)
    # No incident action in force: the enforced rule's rollback is not held back.
    monkeypatch.setattr(flag_service, "active_incidents", lambda session: {})
    guarded = [
        GuardedRollout(
            flag="demo-flag",
            environment="production",
            state=RolloutState.RUNNING,
            guards=("error-rate", "error-rate-shadow"),
            auto_rollback=True,
        )
    ]
    session = Session()  # never used by the rules skipped; the enforced rule's rollback is the stub above

    shadow_only = rollback.roll_back_breaching(
        session,
        [(SHADOW, "production", BREACH)],
        guarded,
        environments=("production",),
        now=NOW,
        gates=None,  # type: ignore[arg-type]
    )
    assert (shadow_only.done, shadow_only.events, calls) == ([], [], [])

    both = rollback.roll_back_breaching(
        session,
        [(SHADOW, "production", BREACH), (ERROR_RATE, "production", BREACH)],
        guarded,
        environments=("production",),
        now=NOW,
        gates=None,  # type: ignore[arg-type]
    )
    assert calls == [("demo-flag", "production")]
    assert [done.rule for done in both.done] == ["error-rate"]


@pytest.mark.parametrize("kind", ["trigger", "resolve"])
def test_a_shadow_rule_is_notified_as_info_whatever_its_severity(kind: str) -> None:
    event = alert_event(SHADOW, kind, "production", BREACH, NOW)
    enforced = alert_event(ERROR_RATE, kind, "production", BREACH, NOW)

    assert (event.severity, enforced.severity) == ("info", "page")
    assert SHADOW_CONDITION in event.description
