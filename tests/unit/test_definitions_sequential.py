"""Unit tests for `confidence:` and `alternative:` in a definition's rules: what a sequential rule is loaded as, and
every refusal on the line of the field it is about (the definition is `test_definitions_telemetry.VALID`)."""

from __future__ import annotations

import pytest

from controlplane.catalog.rules import RuleKind, rule_to_json
from tests.unit.test_definitions_telemetry import VALID, assert_refused, edited, parse

# The ratio rule of VALID (rules[0]) and its rate rule (rules[4]), as written there.
RATIO_THRESHOLD = "    threshold: 0.03\n"
RATE_THRESHOLD = '    op: ">="\n    threshold: 2\n    environments'

PROMETHEUS_RULE = """\
  - name: prom-ratio
    source: prometheus
    query: sum(rate(errors_total{environment="{environment}"}[5m]))
    op: ">"
    threshold: 0.05
    confidence: 0.99
"""


def with_ratio(*lines: str) -> str:
    """VALID with ``lines`` added to its ratio rule, after the threshold."""
    return edited(RATIO_THRESHOLD, RATIO_THRESHOLD + "".join(f"    {line}\n" for line in lines))


def with_rate(threshold: str, *lines: str) -> str:
    """VALID with its rate rule's threshold written as ``threshold`` and ``lines`` added after it."""
    added = "".join(f"    {line}\n" for line in lines)
    return edited(RATE_THRESHOLD, f'    op: ">="\n    threshold: {threshold}\n{added}    environments')


def test_a_ratio_rule_with_confidence_is_decided_sequentially_against_twice_its_threshold() -> None:
    rule = parse(with_ratio("confidence: 0.99")).rules[0]

    assert (rule.kind, rule.confidence, rule.alternative, rule.against) == (RuleKind.RATIO, "0.99", None, "0.06")
    assert rule.condition().endswith("> 0.03 over 5m at 99% confidence (sequential: CUSUM against 0.06)")
    assert rule_to_json(rule)["confidence"] == "0.99" and "alternative" not in rule_to_json(rule)


def test_a_rate_rule_may_name_its_alternative() -> None:
    text = edited(
        RATE_THRESHOLD, '    op: ">="\n    threshold: 2\n    confidence: 0.95\n    alternative: 5\n    environments'
    )

    rule = parse(text).rules[4]

    assert (rule.kind, rule.confidence, rule.alternative, rule.against) == (RuleKind.RATE, "0.95", "5.0", "5.0")
    assert "at 95% confidence (sequential: CUSUM against 5.0)" in rule.condition()


def test_rules_without_confidence_load_and_store_as_before() -> None:
    for rule in parse(VALID).rules:
        assert (rule.confidence, rule.alternative) == (None, None)
        assert not {"confidence", "alternative"} & set(rule_to_json(rule))
        assert "confidence" not in rule.condition()


def test_confidence_on_a_streak_is_refused_as_not_supported_yet() -> None:
    text = edited("    window: 0\n", "    window: 0\n    confidence: 0.99\n")

    assert_refused(
        text, "rules[1].confidence", "confidence: 0.99", "not supported on streak rules yet", "ratio, rate, mean and"
    )


def test_a_mean_rule_with_confidence_weighs_its_threshold_against_twice_it() -> None:
    rule = parse(edited("    for: 5m\n", "    confidence: 0.99\n")).rules[2]

    assert (rule.kind, rule.confidence, rule.against) == (RuleKind.MEAN, "0.99", "12.0")
    assert "at 99% confidence (sequential: CUSUM of e-values against 12.0, breach only)" in rule.condition()


def test_for_with_confidence_is_refused_on_the_line_of_for() -> None:
    # One window without bad events takes the statistic below its limit and would restart `for`: it rarely fires.
    text = edited("    for: 5m\n", "    for: 5m\n    confidence: 0.99\n")

    assert_refused(text, "rules[2].for", "for: 5m", "`for` does not combine with `confidence`", "Drop `for`")
    assert_refused(with_ratio("confidence: 0.99", "for: 30s"), "rules[0].for", "for: 30s", "rarely fire")


COHORT_THRESHOLD = '    op: ">"\n    threshold: 0.02\n  - name: failures'


def with_cohort(threshold: str, *lines: str, op: str = ">") -> str:
    """VALID with its cohort rule's op and threshold written so and ``lines`` added after them."""
    added = "".join(f"    {line}\n" for line in lines)
    return edited(COHORT_THRESHOLD, f'    op: "{op}"\n    threshold: {threshold}\n{added}  - name: failures')


def test_a_cohort_rule_with_confidence_is_a_two_sample_test_against_twice_its_threshold() -> None:
    rule = parse(with_cohort("0.02", "confidence: 0.99")).rules[3]

    assert (rule.kind, rule.confidence, rule.alternative, rule.against) == (RuleKind.COHORT, "0.99", None, "0.04")
    assert rule.condition().endswith(
        "at 99% confidence (sequential: two-sample mixture test against 0.04, cohort sizes checked against the "
        "rollout's split)"
    )


def test_a_cohort_rule_may_test_any_worsening_with_an_alternative() -> None:
    rule = parse(with_cohort("0", "confidence: 0.99", "alternative: 0.01")).rules[3]

    assert (rule.threshold, rule.against) == ("0.0", "0.01")


@pytest.mark.parametrize(
    ("threshold", "lines", "path", "line", "reason"),
    [
        ("0", ("confidence: 0.99",), "alternative", "name: canary", "threshold 0 needs an `alternative`"),
        ("1", ("confidence: 0.99",), "threshold", "threshold: 1", "a threshold from 0 up to 1"),
        ("0.02", ("confidence: 0.99", "alternative: 0.01"), "alternative", "alternative: 0.01", "above the threshold"),
        ("0.02", ("confidence: 0.99", "alternative: 1"), "alternative", "alternative: 1", "and below 1"),
    ],
)
def test_a_sequential_cohort_rules_difference_and_alternative_are_checked(
    threshold: str, lines: tuple[str, ...], path: str, line: str, reason: str
) -> None:
    assert_refused(with_cohort(threshold, *lines), f"rules[3].{path}", line, reason)


def test_a_sequential_rule_must_breach_above_its_threshold() -> None:
    assert_refused(with_cohort("0.02", "confidence: 0.99", op="<"), "rules[3].op", 'op: "<"', "`>` or `>=`")


def test_confidence_on_a_prometheus_rule_is_refused_as_not_supported_yet() -> None:
    text = VALID + PROMETHEUS_RULE

    assert_refused(
        text, "rules[5].confidence", "confidence: 0.99", "a prometheus rule has no `confidence`", "not supported"
    )


@pytest.mark.parametrize("written", ["0.4", "1", "1.5", "0", "-0.99", ".nan", ".inf"])
def test_a_confidence_outside_one_half_to_1_is_refused(written: str) -> None:
    assert_refused(
        with_ratio(f"confidence: {written}"),
        "rules[0].confidence",
        f"confidence: {written}",
        "from 0.5 up to, not including, 1",
        "0.99",
    )


def test_one_half_is_the_least_confidence() -> None:
    assert parse(with_ratio("confidence: 0.5")).rules[0].confidence == "0.5"


def test_an_alternative_without_confidence_is_refused() -> None:
    assert_refused(with_ratio("alternative: 0.06"), "rules[0].alternative", "alternative: 0.06", "with `confidence`")


@pytest.mark.parametrize("written", ["0.03", "0.02", "-1"])
def test_an_alternative_not_beyond_the_threshold_is_refused(written: str) -> None:
    assert_refused(
        with_ratio("confidence: 0.99", f"alternative: {written}"),
        "rules[0].alternative",
        f"alternative: {written}",
        "must be above the threshold (0.03)",
    )


@pytest.mark.parametrize("written", ["1", "1.2"])
def test_a_ratios_alternative_of_1_or_more_is_refused(written: str) -> None:
    assert_refused(
        with_ratio("confidence: 0.99", f"alternative: {written}"),
        "rules[0].alternative",
        f"alternative: {written}",
        "a share below 1",
    )


def test_an_infinite_alternative_is_refused() -> None:
    text = edited(
        RATE_THRESHOLD, '    op: ">="\n    threshold: 2\n    confidence: 0.99\n    alternative: .inf\n    environments'
    )

    assert_refused(text, "rules[4].alternative", "alternative: .inf", "finite number")


@pytest.mark.parametrize(("threshold", "reason"), [("0", "a threshold above 0"), ("1", "a threshold below 1")])
def test_a_sequential_ratio_needs_a_threshold_strictly_between_0_and_1(threshold: str, reason: str) -> None:
    text = edited(RATIO_THRESHOLD, f"    threshold: {threshold}\n    confidence: 0.99\n")

    assert_refused(text, "rules[0].threshold", f"threshold: {threshold}\n    confidence", reason)


def test_a_sequential_rate_needs_a_threshold_above_0() -> None:
    text = with_rate("0", "confidence: 0.99")

    assert_refused(text, "rules[4].threshold", "threshold: 0\n    confidence", "a threshold above 0")
