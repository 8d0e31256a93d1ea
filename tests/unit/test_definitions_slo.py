"""Unit tests for the `slo:` section of pipeline definitions: what the shipped files declare, and every refusal
naming the field path and the line it is about."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from controlplane.catalog.objectives import BURN_RATE_ALERTS
from controlplane.catalog.rules import Selector, Severity
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
          status_class: {values: [2xx, 4xx, 5xx]}
    slo:
      - name: upload-availability
        description: Uploads answered without a server error.
        event: demo_request
        where: {route: [upload]}
        bad: {status_class: [5xx]}
        objective: 0.995
        period: 30d
        runbook_url: https://runbooks.example.com/demo#upload-availability
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


def test_an_objective_is_built_with_the_decimal_written_and_its_budget() -> None:
    (objective,) = parse(VALID).objectives

    assert objective.name == "upload-availability"
    assert objective.pipeline == "demo"
    assert objective.event == "demo_request"
    assert objective.flag == "demo-flag"  # the flag the event carries
    assert objective.objective == "0.995"
    assert objective.budget == Decimal("0.005")
    assert objective.period == timedelta(days=30)
    assert objective.where == Selector({"route": frozenset({"upload"})})
    assert objective.bad == Selector({"status_class": frozenset({"5xx"})})


def test_a_definition_without_slo_has_no_objectives() -> None:
    text = VALID[: VALID.index("slo:")]

    assert parse(text).objectives == ()


def test_the_period_defaults_to_30_days() -> None:
    (objective,) = parse(edited("    period: 30d\n", "")).objectives

    assert objective.period == timedelta(days=30)


def test_reference_images_declares_upload_availability_of_99_5_percent() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)

    (objective,) = definition.objectives
    assert (objective.name, objective.event, objective.objective) == ("upload-availability", "http_request", "0.995")
    assert objective.where == Selector({"route": frozenset({"upload_reference_image"})})
    assert objective.bad == Selector({"status_class": frozenset({"5xx"})})
    assert objective.flag == "enable-reference-images"


def test_ai_assistant_declares_reply_availability_of_99_percent() -> None:
    definition = load_definition(DEFINITIONS / "ai-assistant.yaml", environments=ENVIRONMENTS)

    (objective,) = definition.objectives
    assert (objective.name, objective.event, objective.objective) == ("reply-availability", "ai_run", "0.99")
    assert objective.bad == Selector({"outcome": frozenset({"error"})})
    assert objective.flag == "ai.reply.streaming.enabled"


def test_the_burn_rate_table_is_the_sre_workbook_one() -> None:
    rows = [(row.severity, row.long_window, row.short_window, row.burn_rate) for row in BURN_RATE_ALERTS]

    assert rows == [
        (Severity.PAGE, timedelta(hours=1), timedelta(minutes=5), Decimal("14.4")),
        (Severity.PAGE, timedelta(hours=6), timedelta(minutes=30), Decimal("6")),
        (Severity.TICKET, timedelta(days=3), timedelta(hours=6), Decimal("1")),
    ]


# --- refusals ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["1", "1.5", "0", "-0.5", ".nan", ".inf"])
def test_an_objective_outside_0_to_1_is_refused(objective: str) -> None:
    text = edited("objective: 0.995", f"objective: {objective}")

    assert_refused(text, "slo[0].objective", f"objective: {objective}", "above 0 and below 1", "0.995")


def test_an_objective_whose_budget_no_burn_could_exceed_is_refused() -> None:
    # A 10% budget: the fast page needs more than 144% of events bad.
    text = edited("objective: 0.995", "objective: 0.9")

    assert_refused(text, "slo[0].objective", "objective: 0.9", "14.4x burn could never exceed", "above 0.9306")


def test_an_objective_as_a_percentage_is_refused_with_the_way_to_write_it() -> None:
    text = edited("objective: 0.995", "objective: 99.5")

    assert_refused(text, "slo[0].objective", "objective: 99.5", "write 99.5% as 0.995")


def test_an_objective_of_text_is_refused_by_type() -> None:
    text = edited("objective: 0.995", "objective: high")

    assert_refused(text, "slo[0].objective", "objective: high", "Expected `float`")


def test_an_unknown_event_is_refused_with_the_declared_ones() -> None:
    text = edited("    event: demo_request\n", "    event: nope\n")

    assert_refused(text, "slo[0].event", "event: nope", "unknown event `nope`", "`demo_request`")


def test_a_where_key_the_event_has_not_is_refused() -> None:
    text = edited("where: {route: [upload]}", "where: {method: [GET]}")

    assert_refused(text, "slo[0].where.method", "where: {method", "has no label `method`")


def test_a_bad_value_the_event_does_not_declare_is_refused() -> None:
    text = edited("bad: {status_class: [5xx]}", "bad: {status_class: [1xx]}")

    assert_refused(text, "slo[0].bad.status_class", "bad: {status_class", "`1xx` is not a declared value")


def test_an_objective_without_bad_is_refused_on_the_objective() -> None:
    text = edited("    bad: {status_class: [5xx]}\n", "")

    assert_refused(text, "slo[0].bad", "- name: upload-availability", "required field `bad`")


def test_an_empty_bad_is_refused() -> None:
    text = edited("bad: {status_class: [5xx]}", "bad: {}")

    assert_refused(text, "slo[0].bad", "bad: {}", "which events spend the error budget")


def test_bad_selecting_nothing_where_admits_is_refused() -> None:
    text = edited("where: {route: [upload]}", "where: {route: [upload], status_class: [2xx]}")

    assert_refused(text, "slo[0].bad.status_class", "bad: {status_class", "nothing is ever bad")


@pytest.mark.parametrize("period", ["3d", "1h", "366d", "soon"])
def test_a_period_not_longer_than_the_slowest_window_or_unreadable_is_refused(period: str) -> None:
    text = edited("period: 30d", f"period: {period}")

    error = assert_refused(text, "slo[0].period", f"period: {period}")
    assert "longer than 3d" in error.reason or "is not a duration" in error.reason


def test_a_duplicate_objective_name_is_refused_on_the_second() -> None:
    second = VALID[VALID.index("  - name: upload-availability") :]
    text = VALID + second.replace("runbook_url", "# again\n    runbook_url")

    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert caught.value.path == "slo[1].name"
    assert "already declared at slo[0]" in caught.value.reason


@pytest.mark.parametrize("name", ["Upload", "5xx-free", "upload_availability"])
def test_an_objective_name_unfit_for_an_alert_name_is_refused(name: str) -> None:
    text = edited("- name: upload-availability", f"- name: {name}")

    assert_refused(text, "slo[0].name", f"- name: {name}", "lowercase words joined by dashes")


def test_an_unknown_field_is_refused() -> None:
    text = edited("    period: 30d\n", "    period: 30d\n    window: 1h\n")

    assert_refused(text, "slo[0].window", "window: 1h", "unknown field `window`")
