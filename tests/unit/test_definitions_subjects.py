"""Unit tests for `per_subject_cap:` in a definition's rules: what a capped rule is loaded, stored and described as,
and every refusal on the line of the field (the definition is `test_definitions_telemetry.VALID`)."""

from __future__ import annotations

import pytest

from controlplane.catalog.rules import rule_from_json, rule_to_json
from tests.unit.test_definitions_sequential import PROMETHEUS_RULE, with_rate, with_ratio
from tests.unit.test_definitions_telemetry import VALID, assert_refused, edited, parse


def with_cohort(*lines: str) -> str:
    """VALID with ``lines`` added to its cohort rule (rules[3]), after its threshold."""
    added = "".join(f"    {line}\n" for line in lines)
    return edited("    threshold: 0.02\n", f"    threshold: 0.02\n{added}")


def test_a_capped_ratio_rule_loads_stores_and_reads_its_cap() -> None:
    rule = parse(with_ratio("per_subject_cap: 10")).rules[0]

    assert rule.per_subject_cap == 10
    assert rule.condition().endswith("> 0.03 over 5m, each subject counted at most 10 times")
    assert rule.condition(capped=False).endswith("> 0.03 over 5m")
    stored = rule_to_json(rule)
    assert stored["per_subject_cap"] == 10
    assert rule_from_json(rule.pipeline, stored) == rule


def test_the_cap_is_said_after_how_a_sequential_rule_decides() -> None:
    rule = parse(with_ratio("confidence: 0.99", "per_subject_cap: 10")).rules[0]

    assert rule.condition().endswith(
        "> 0.03 over 5m at 99% confidence (sequential: CUSUM against 0.06), each subject counted at most 10 times"
    )


def test_rate_and_cohort_rules_may_cap_each_subject() -> None:
    assert parse(with_rate("2", "per_subject_cap: 1")).rules[4].per_subject_cap == 1
    assert parse(with_cohort("per_subject_cap: 25")).rules[3].per_subject_cap == 25


def test_rules_without_a_cap_load_and_store_as_before() -> None:
    for rule in parse(VALID).rules:
        assert rule.per_subject_cap is None
        assert "per_subject_cap" not in rule_to_json(rule)
        assert "each subject" not in rule.condition()


@pytest.mark.parametrize(
    ("after", "index", "kind", "why"),
    [
        ("    window: 0\n", 1, "streak", "trailing run in order"),
        ("    for: 5m\n", 2, "mean", "averages its events' values"),
    ],
)
def test_a_cap_on_a_kind_that_does_not_count_events_is_refused(after: str, index: int, kind: str, why: str) -> None:
    text = edited(after, f"{after}    per_subject_cap: 10\n")

    assert_refused(
        text,
        f"rules[{index}].per_subject_cap",
        "per_subject_cap: 10",
        f"not supported on {kind} rules",
        why,
        "only ratio, rate and cohort rules",
    )


def test_a_cap_on_a_prometheus_rule_is_refused() -> None:
    text = VALID + PROMETHEUS_RULE.replace("    confidence: 0.99\n", "    per_subject_cap: 10\n")

    assert_refused(
        text,
        "rules[5].per_subject_cap",
        "per_subject_cap: 10",
        "a prometheus rule has no `per_subject_cap`",
        "Prometheus's samples carry none",
    )


@pytest.mark.parametrize("written", ["0", "-3"])
def test_a_cap_below_1_is_refused(written: str) -> None:
    assert_refused(
        with_ratio(f"per_subject_cap: {written}"),
        "rules[0].per_subject_cap",
        f"per_subject_cap: {written}",
        "a whole number of events, at least 1",
    )


@pytest.mark.parametrize("written", ["2.5", "true", "ten"])
def test_a_cap_that_is_not_a_whole_number_is_refused_on_its_line(written: str) -> None:
    error = assert_refused(
        with_ratio(f"per_subject_cap: {written}"), "rules[0].per_subject_cap", f"per_subject_cap: {written}"
    )
    assert "int" in error.reason, error.reason
