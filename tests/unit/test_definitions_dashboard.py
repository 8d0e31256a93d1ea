"""Unit tests for the `dashboard:` section of pipeline definitions: what the shipped files declare, a section kept
as written, and every refusal naming the field path and the line it is about."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import load_definition, parse_definition
from controlplane.definitions.schemas import PipelineDefinition

ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"

VALID = textwrap.dedent(
    """\
    pipeline: demo
    flags:
      - key: demo-flag
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
    events:
      - name: demo_request
        outcomes: [ok, error]
        labels:
          route: {values: [upload, other], otherwise: other}
        value: {name: duration, unit: seconds}
        totals: [bytes]
      - name: demo_job
        outcomes: [done, failed]
    rules:
      - name: error-rate
        kind: ratio
        event: demo_request
        numerator: {outcome: [error]}
        op: ">"
        threshold: 0.05
      - name: job-failures
        kind: rate
        event: demo_job
        where: {outcome: [failed]}
        op: ">"
        threshold: 3
    dashboard:
      title: Demo
      variables:
        - {name: price, label: Price per byte, default: "0.5"}
      rows:
        - title: Requests
          panels:
            - title: Requests by route
              description: Requests per minute by route. Counter {counter}; values in {histogram}.
              unit: opm
              event: demo_request
              targets:
                - {measure: per_minute, where: {outcome: [ok]}, by: [route], legend: "{{route}}"}
                - {measure: quantile, q: 0.95, by: [variant], legend: "p95 {{variant}}"}
                - {measure: per_second, total: bytes, times: [60, $price], legend: cost}
            - title: Errors
              description: The `{rule}` rule ({condition}).
              unit: percentunit
              event: demo_request
              rule: error-rate
              threshold_line: true
              targets:
                - {measure: rule, by: [route], legend: "{{route}}"}
                - {measure: share, part: {outcome: [error]}, by: [variant], legend: "{{variant}}"}
            - {guard: error-rate, title: Error rate, what: Share of requests that errored}
    """
)


def parse(text: str) -> PipelineDefinition:
    return parse_definition(text, source="demo.yaml", environments=ENVIRONMENTS)


def edited(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def assert_refused(text: str, path: str, line_text: str, *reason: str) -> DefinitionError:
    """Loading ``text`` fails on ``path``, on the line holding ``line_text``, with every ``reason`` in its reason."""
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    error = caught.value
    assert text.count(line_text) == 1, line_text
    line = text[: text.index(line_text)].count("\n") + 1
    assert (error.source, error.path, error.line) == ("demo.yaml", path, line), error
    for part in reason:
        assert part in error.reason, error.reason
    return error


def test_a_dashboard_section_is_kept_as_written() -> None:
    dashboard = parse(VALID).dashboard

    assert dashboard is not None
    assert dashboard.title == "Demo"
    assert [variable.name for variable in dashboard.variables] == ["price"]
    ((row),) = dashboard.rows
    assert [panel.title for panel in row.panels] == ["Requests by route", "Errors", "Error rate"]
    assert [target.measure for target in row.panels[0].targets] == ["per_minute", "quantile", "per_second"]
    assert row.panels[0].targets[2].times == [60, "$price"]
    assert row.panels[2].guard == "error-rate"


def test_a_definition_without_a_dashboard_section_has_none() -> None:
    assert parse(VALID[: VALID.index("dashboard:")]).dashboard is None


@pytest.mark.parametrize(
    ("file", "title"), [("reference-images.yaml", "Reference images"), ("ai-assistant.yaml", "AI assistant")]
)
def test_the_shipped_definitions_declare_their_dashboards(file: str, title: str) -> None:
    definition = load_definition(DEFINITIONS / file, environments=ENVIRONMENTS)

    assert definition.dashboard is not None
    assert definition.dashboard.title == title
    assert all(row.panels for row in definition.dashboard.rows)


# --- refusals ------------------------------------------------------------------------------------------------------

PANEL = "dashboard.rows[0].panels"


def test_an_unknown_event_is_refused_with_the_declared_ones() -> None:
    text = edited(
        "          event: demo_request\n          targets:\n            - {measure: per_minute",
        "          event: nope\n          targets:\n            - {measure: per_minute",
    )

    assert_refused(text, f"{PANEL}[0].event", "event: nope", "unknown event `nope`", "`demo_request`, `demo_job`")


def test_an_unknown_rule_is_refused() -> None:
    text = edited("{guard: error-rate,", "{guard: latency,")

    assert_refused(text, f"{PANEL}[2].guard", "{guard: latency", "unknown rule `latency`", "`error-rate`")


def test_a_guard_panel_of_a_rule_prometheus_cannot_draw_is_refused() -> None:
    text = edited("{guard: error-rate,", "{guard: job-failures,")

    assert_refused(text, f"{PANEL}[2].guard", "{guard: job-failures", "is a rate rule", "only ratio and mean")


def test_a_guard_panel_with_targets_is_refused() -> None:
    text = edited("what: Share of requests that errored}", "what: Share of requests that errored, targets: []}")
    text = edited("targets: []}", "unit: s, description: x}", text)

    assert_refused(text, f"{PANEL}[2].description", "{guard: error-rate", "a guard's panel takes no `description`")


def test_a_where_label_the_event_has_not_is_refused() -> None:
    text = edited("where: {outcome: [ok]}", "where: {method: [GET]}")

    assert_refused(text, f"{PANEL}[0].targets[0].where.method", "where: {method", "has no label `method`")


def test_a_where_value_the_event_does_not_declare_is_refused() -> None:
    text = edited("where: {outcome: [ok]}", "where: {outcome: [timeout]}")

    assert_refused(
        text, f"{PANEL}[0].targets[0].where.outcome", "where: {outcome: [timeout", "`timeout` is not a declared value"
    )


def test_splitting_by_a_label_the_event_has_not_is_refused() -> None:
    text = edited(
        'by: [route], legend: "{{route}}"}\n            - {measure: quantile',
        'by: [tenant], legend: "{{tenant}}"}\n            - {measure: quantile',
    )

    assert_refused(text, f"{PANEL}[0].targets[0].by[0]", "by: [tenant]", "has no label `tenant` to split by")


def test_a_quantile_of_an_event_without_a_value_is_refused() -> None:
    text = edited("    value: {name: duration, unit: seconds}\n", "")
    text = edited("; values in {histogram}", "", text)

    assert_refused(text, f"{PANEL}[0].targets[1].measure", "{measure: quantile", "declares no value")


def test_a_total_the_event_does_not_declare_is_refused() -> None:
    text = edited("total: bytes", "total: tokens")

    assert_refused(text, f"{PANEL}[0].targets[2].total", "total: tokens", "declares no total `tokens`; it has `bytes`")


def test_a_factor_naming_no_variable_is_refused() -> None:
    text = edited("times: [60, $price]", "times: [60, $cost]")

    assert_refused(
        text, f"{PANEL}[0].targets[2].times[1]", "times: [60, $cost]", "`$cost` is not a number or a `$variable`"
    )


def test_a_rule_measure_without_a_rule_is_refused() -> None:
    text = edited("          rule: error-rate\n          threshold_line: true\n", "")
    text = edited("The `{rule}` rule ({condition}).", "Errors.", text)

    assert_refused(text, f"{PANEL}[1].targets[0].measure", "{measure: rule", "draws the panel's `rule`")


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("{rule.name}", "is not something a description can name"),
        ("{totals}", "is not something a description can name"),
        ("{counter!r}", "is not something a description can name"),
        ("{lone", "write a literal brace twice"),
    ],
)
def test_a_description_naming_what_it_cannot_is_refused(written: str, reason: str) -> None:
    text = edited("The `{rule}` rule ({condition}).", f"The {written} rule.")

    assert_refused(text, f"{PANEL}[1].description", f"The {written} rule.", reason)


def test_a_description_naming_a_rule_of_a_panel_without_one_is_refused() -> None:
    text = edited("Counter {counter}; values in {histogram}.", "Counter {counter}, watched by {rule}.")

    assert_refused(text, f"{PANEL}[0].description", "watched by {rule}", "the panel names no `rule`")


def test_an_unknown_field_is_refused() -> None:
    text = edited("          threshold_line: true\n", "          threshold_line: true\n          colour: red\n")

    assert_refused(text, f"{PANEL}[1].colour", "colour: red", "unknown field `colour`")


def test_a_reserved_variable_name_is_refused() -> None:
    text = edited("{name: price,", "{name: environment,")
    text = edited("$price]", "$environment]", text)

    assert_refused(text, "dashboard.variables[0].name", "{name: environment", "not `datasource` or `environment`")
