"""Unit tests for the `events:` and `rules:` sections of pipeline definitions: the shipped files declare what the
product needs, and every refusal names the field path and the line it is about."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from controlplane.alerting.rules import Series, measure
from controlplane.catalog.events import DEFAULT_BUCKETS, RESERVED_LABELS, LabelSpec
from controlplane.catalog.rules import Comparison, RuleKind, Selector, Severity
from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import load_definition, parse_definition
from controlplane.definitions.schemas import PipelineDefinition

ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"

# One rule of each kind over two events carried by two flags; the tests below edit it one field at a time.
VALID = textwrap.dedent(
    """\
    pipeline: demo
    flags:
      - key: demo-flag
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        plan:
          rollback_policy: "off"
          environments:
            - environment: production
              stages:
                - percentage: 10
                  guards: [error-rate, error-streak]
                - percentage: 100
      - key: other-flag
        type: string
        variants: {a: a, b: b, c: c}
        off_variant: a
        rollout_variant: b
    events:
      - name: demo_request
        outcomes: [ok, error]
        labels:
          route: {values: [upload, other], otherwise: other}
          status_class: {values: [2xx, 4xx, 5xx]}
        value: {name: duration, unit: seconds}
        totals: [tokens]
      - name: other_job
        flag: other-flag
        outcomes: [done, failed]
    rules:
      - name: error-rate
        kind: ratio
        event: demo_request
        where: {route: [upload]}
        numerator: {status_class: [4xx, 5xx]}
        op: ">"
        threshold: 0.03
        min_samples: 50
        keep_firing_for: 2m
      - name: error-streak
        kind: streak
        event: demo_request
        outcome: error
        op: ">="
        threshold: 3
        window: 0
      - name: latency
        kind: mean
        event: demo_request
        op: ">"
        threshold: 6
        window: 1m
        for: 5m
      - name: canary
        kind: cohort
        event: demo_request
        numerator: {outcome: [error]}
        flag: demo-flag
        op: ">"
        threshold: 0.02
      - name: failures
        kind: rate
        event: other_job
        where: {outcome: [failed]}
        per: 1m
        op: ">="
        threshold: 2
        environments: [staging, production]
    """
)


def parse(text: str) -> PipelineDefinition:
    return parse_definition(text, source="demo.yaml", environments=ENVIRONMENTS)


def edited(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    """The 1-based line holding ``needle``, which must occur exactly once."""
    assert text.count(needle) == 1, needle
    return text[: text.index(needle)].count("\n") + 1


def refusal(text: str) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    return caught.value


def assert_refused(text: str, path: str, line_text: str, *reason: str) -> DefinitionError:
    """Loading ``text`` fails on ``path``, on the line holding ``line_text``, with every ``reason`` in its reason."""
    error = refusal(text)
    assert (error.path, error.line) == (path, line_of(text, line_text)), error
    for part in reason:
        assert part in error.reason, error.reason
    assert error.source == "demo.yaml"
    return error


# --- the shipped definitions ---------------------------------------------------------------------------------


def test_reference_images_declares_the_events_the_upload_pipeline_sends() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    events = {event.name: event for event in definition.events}

    assert [event.name for event in definition.events] == [
        "reference_image_upload",
        "vision_analysis",
        "preflight_reference_images",
        "image_assets_generation",
        "http_request",
    ]
    for event in definition.events:
        assert event.pipeline == "reference-images"
        assert event.flag == "enable-reference-images"
        assert event.variants == ("on", "off")

    upload = events["reference_image_upload"]
    assert upload.outcomes == ("success", "failed", "rejected")
    assert upload.labels["content_type"] == LabelSpec(
        values=("image/png", "image/jpeg", "image/webp", "other"), otherwise="other"
    )
    rejection = upload.labels["rejection_reason"]
    assert {"none", "too_large", "unsupported_type", "corrupt", "unsafe", "flag_off"} < set(rejection.values)
    assert rejection.otherwise == "other"
    assert upload.value is not None
    assert (upload.value.name, upload.value.unit) == ("size", "bytes")
    assert upload.value.buckets == (1e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1e7)
    assert upload.histogram_name == "reference_image_upload_size_bytes"

    vision = events["vision_analysis"]
    assert vision.outcomes == ("ok", "error")
    assert vision.value is not None
    assert (vision.value.name, vision.value.unit) == ("duration", "seconds")
    assert vision.value.buckets == DEFAULT_BUCKETS["seconds"]

    assert events["preflight_reference_images"].outcomes == ("resolved", "ignored")
    assert events["preflight_reference_images"].value is None

    generation = events["image_assets_generation"]
    assert generation.outcomes == ("pass", "review_failed", "error")
    # Quoted in the file: label values stay strings, never YAML booleans.
    assert generation.labels["reference_images_present"].values == ("true", "false")

    http = events["http_request"]
    assert http.outcomes == ()
    assert set(http.labels) == {"route", "status_class"}
    assert http.labels["status_class"] == LabelSpec(values=("2xx", "3xx", "4xx", "5xx"))
    assert "upload_reference_image" in http.labels["route"].values
    assert http.counter_name == "http_request_events"


def test_reference_images_declares_the_rules_its_guards_name_with_exact_thresholds() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    rules = {rule.name: rule for rule in definition.rules}

    assert set(rules) == {
        "upload-error-rate",
        "upload-failure-rate",
        "upload-5xx-rate",
        "vision-error-streak",
        "upload-latency",
        "review-failed-rate",
        "generation-error-rate-on-vs-off",
    }
    (flag,) = definition.flags
    assert flag.plan is not None
    guards = {guard for step in flag.plan.environments for stage in step.stages for guard in stage.guards}
    assert guards <= set(rules)
    # What rolls back is what the service is to blame for: the 4xx of users' own files page, they guard nothing.
    assert "upload-error-rate" not in guards and "upload-failure-rate" in guards

    failure = rules["upload-failure-rate"]
    assert (failure.kind, failure.event, failure.op) == (RuleKind.RATIO, "http_request", Comparison.GT)
    assert (failure.limit, failure.confidence, failure.against) == (Fraction(3, 100), "0.99", "0.06")
    assert (failure.window, failure.min_samples, failure.per_subject_cap) == (timedelta(minutes=5), 50, 4)
    assert failure.where == Selector({"route": frozenset({"upload_reference_image"})})
    assert failure.numerator == Selector({"status_class": frozenset({"5xx"})})
    assert failure.severity is Severity.PAGE
    assert failure.runbook_url.endswith("#upload-failure-rate")

    error_rate = rules["upload-error-rate"]
    assert (error_rate.kind, error_rate.event, error_rate.op) == (RuleKind.RATIO, "http_request", Comparison.GT)
    assert error_rate.limit == Fraction(3, 100)
    assert error_rate.window == timedelta(minutes=5)
    assert (error_rate.min_samples, error_rate.keep_firing_for) == (50, timedelta(minutes=2))
    assert error_rate.per_subject_cap == 4
    assert error_rate.where == Selector({"route": frozenset({"upload_reference_image"})})
    assert error_rate.numerator == Selector({"status_class": frozenset({"4xx", "5xx"})})
    assert error_rate.severity is Severity.PAGE
    assert error_rate.runbook_url.endswith("#upload-error-rate")
    assert error_rate.condition() == (
        "ratio of http_request (status_class in {4xx, 5xx}) where route in {upload_reference_image} > 0.03 over 5m, "
        "each subject counted at most 4 times"
    )

    streak = rules["vision-error-streak"]
    assert (streak.kind, streak.event, streak.outcome, streak.op) == (
        RuleKind.STREAK,
        "vision_analysis",
        "error",
        Comparison.GE,
    )
    assert streak.limit == 3
    assert streak.window == timedelta(0)

    latency = rules["upload-latency"]
    assert (latency.kind, latency.op, latency.limit) == (RuleKind.MEAN, Comparison.GT, Fraction(6))
    assert (latency.window, latency.hold, latency.min_samples) == (timedelta(minutes=5), timedelta(0), 20)
    assert latency.confidence == "0.99"  # a sequential mean, decided on its e-values (no `for`)
    assert latency.severity is Severity.TICKET

    rate = rules["upload-5xx-rate"]
    assert (rate.kind, rate.per, rate.window, rate.limit) == (
        RuleKind.RATE,
        timedelta(minutes=1),
        timedelta(minutes=5),
        Fraction(2),
    )
    assert rate.where.matches == {
        "route": frozenset({"upload_reference_image"}),
        "status_class": frozenset({"5xx"}),
    }

    review = rules["review-failed-rate"]
    assert (review.event, review.limit, review.window, review.min_samples) == (
        "image_assets_generation",
        Fraction(5, 100),
        timedelta(hours=1),
        100,
    )
    assert review.numerator == Selector({"outcome": frozenset({"review_failed"})})

    # Generations, which both cohorts run (uploads exist only with the flag on): the baseline is never empty.
    canary = rules["generation-error-rate-on-vs-off"]
    assert canary.kind is RuleKind.COHORT
    assert (canary.flag, canary.canary_variant, canary.baseline_variant) == ("enable-reference-images", "on", "off")
    assert (canary.event, canary.where) == ("image_assets_generation", Selector({}))
    assert canary.numerator == Selector({"outcome": frozenset({"error"})})
    assert (canary.limit, canary.window, canary.min_samples) == (Fraction(2, 100), timedelta(hours=1), 100)
    # Decided by the two-sample sequential test, its cohorts' sizes checked against the rollout's split.
    assert (canary.severity, canary.confidence, canary.against) == (Severity.TICKET, "0.99", "0.04")
    assert canary.runbook_url.endswith("#generation-error-rate-on-vs-off")


def test_reference_images_upload_error_rate_does_not_fire_at_exactly_3_percent() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)
    (rule,) = [rule for rule in definition.rules if rule.name == "upload-error-rate"]
    now = datetime(2025, 3, 14, 12, 0, 5, tzinfo=UTC)
    start = now - timedelta(minutes=1)

    def uploads(count: int, status_class: str) -> Series:
        labels = {"route": "upload_reference_image", "status_class": status_class}
        return Series(start=start, outcome="", variant="on", labels=labels, count=count)

    at_threshold = measure(rule, [uploads(97, "2xx"), uploads(2, "4xx"), uploads(1, "5xx")], [], now)
    above = measure(rule, [uploads(96, "2xx"), uploads(4, "5xx")], [], now)
    too_few = measure(rule, [uploads(45, "2xx"), uploads(4, "5xx")], [], now)

    assert (at_threshold.sufficient, at_threshold.breached) == (True, False)
    assert (above.sufficient, above.breached) == (True, True)
    assert (too_few.sufficient, too_few.breached) == (False, False)


def test_ai_assistant_declares_runs_with_token_totals_and_http_requests() -> None:
    definition = load_definition(DEFINITIONS / "ai-assistant.yaml", environments=ENVIRONMENTS)
    events = {event.name: event for event in definition.events}

    assert list(events) == ["ai_run", "http_request"]
    run = events["ai_run"]
    assert run.flag == "ai.reply.streaming.enabled"
    assert run.variants == ("on", "off")
    assert run.outcomes == ("ok", "fallback", "error")
    assert run.labels["mode"] == LabelSpec(values=("HUMANO", "COPILOTO", "AUTONOMO"))
    assert run.labels["queue"].otherwise == "other"
    assert run.value is not None
    assert (run.value.name, run.value.unit) == ("latency", "seconds")
    assert run.value.buckets == (0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 20.0, 30.0)
    assert run.totals == ("tokens",)
    assert run.total_name("tokens") == "ai_run_tokens"

    http = events["http_request"]
    assert http.flag == "ai.reply.streaming.enabled"
    assert set(http.labels) == {"route", "status_class"}


def test_ai_assistant_declares_the_rules_its_guards_name() -> None:
    definition = load_definition(DEFINITIONS / "ai-assistant.yaml", environments=ENVIRONMENTS)
    rules = {rule.name: rule for rule in definition.rules}

    declared = {"ai-fallback-rate", "ai-latency", "ai-error-rate", "ai-5xx-rate"}
    # Production runs per queue: each guard is also derived scoped to each queue's runs.
    per_queue = {
        f"{guard}-queue-{queue}"
        for guard in ("ai-fallback-rate", "ai-latency", "ai-error-rate")
        for queue in ("support", "billing", "sales")
    }
    assert set(rules) == declared | per_queue
    guards = {
        guard
        for flag in definition.flags
        if flag.plan is not None
        for step in flag.plan.environments
        for stage in step.stages
        for guard in stage.guards
    }
    assert guards == {"ai-fallback-rate", "ai-latency", "ai-error-rate"}

    fallback = rules["ai-fallback-rate"]
    assert (fallback.kind, fallback.event, fallback.op, fallback.limit) == (
        RuleKind.RATIO,
        "ai_run",
        Comparison.GT,
        Fraction(35, 100),
    )
    assert fallback.numerator == Selector({"outcome": frozenset({"fallback"})})
    assert (fallback.window, fallback.min_samples) == (timedelta(minutes=15), 50)
    assert (fallback.confidence, fallback.against) == ("0.99", "0.5")

    latency = rules["ai-latency"]
    assert (latency.kind, latency.limit, latency.window, latency.hold) == (
        RuleKind.MEAN,
        Fraction(6),
        timedelta(minutes=5),
        timedelta(0),
    )
    assert latency.confidence == "0.99"

    errors = rules["ai-error-rate"]
    assert (errors.limit, errors.window, errors.min_samples) == (Fraction(3, 100), timedelta(minutes=5), 50)
    assert (errors.confidence, errors.against) == ("0.99", "0.06")
    assert errors.numerator == Selector({"outcome": frozenset({"error"})})

    server_errors = rules["ai-5xx-rate"]
    assert (server_errors.kind, server_errors.event, server_errors.severity) == (
        RuleKind.RATE,
        "http_request",
        Severity.TICKET,
    )
    assert server_errors.where == Selector({"status_class": frozenset({"5xx"})})


# --- what a valid definition becomes -------------------------------------------------------------------------


def test_an_event_without_a_flag_carries_the_first_flag_and_its_variants() -> None:
    events = {event.name: event for event in parse(VALID).events}

    assert (events["demo_request"].flag, events["demo_request"].variants) == ("demo-flag", ("on", "off"))
    assert (events["other_job"].flag, events["other_job"].variants) == ("other-flag", ("a", "b", "c"))


def test_a_value_without_buckets_gets_the_default_buckets_of_its_unit() -> None:
    (event, _) = parse(VALID).events

    assert event.value is not None
    assert event.value.buckets == DEFAULT_BUCKETS["seconds"]
    assert event.value.minimum == 0.0


def test_rules_are_built_with_their_defaults_and_what_is_written() -> None:
    rules = {rule.name: rule for rule in parse(VALID).rules}

    error_rate = rules["error-rate"]
    assert error_rate.pipeline == "demo"
    assert (error_rate.window, error_rate.hold, error_rate.severity) == (timedelta(minutes=5), timedelta(0), "page")
    assert error_rate.environments == ()
    assert error_rate.flag is None
    assert rules["error-streak"].window == timedelta(0)
    assert (rules["latency"].window, rules["latency"].hold) == (timedelta(minutes=1), timedelta(minutes=5))
    assert (rules["canary"].canary_variant, rules["canary"].baseline_variant) == ("on", "off")
    assert rules["failures"].environments == ("staging", "production")
    assert rules["failures"].where == Selector({"outcome": frozenset({"failed"})})


@pytest.mark.parametrize(
    ("written", "limit"), [("0.07", Fraction(7, 100)), ("0.1", Fraction(1, 10)), ("0", Fraction(0))]
)
def test_a_threshold_is_kept_as_the_decimal_written(written: str, limit: Fraction) -> None:
    rules = parse(edited("threshold: 0.03\n", f"threshold: {written}\n")).rules

    assert rules[0].limit == limit


def test_cohort_variants_may_be_named_explicitly() -> None:
    text = edited(
        "    flag: demo-flag\n    op",
        '    flag: demo-flag\n    canary_variant: "off"\n    baseline_variant: "on"\n    op',
    )

    canary = parse(text).rules[3]

    assert (canary.canary_variant, canary.baseline_variant) == ("off", "on")


# --- refusals in `events:` -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DemoRequest", "demo-request", "9demo", "controlplane_requests"])
def test_an_event_name_unfit_for_a_metric_name_is_refused(name: str) -> None:
    text = edited("  - name: demo_request\n", f"  - name: {name}\n")

    assert_refused(text, "events[0].name", f"name: {name}", "must be snake_case")


def test_a_duplicate_event_name_is_refused_on_the_second() -> None:
    text = edited("  - name: other_job\n", "  - name: demo_request\n")

    assert_refused(text, "events[1].name", "  - name: demo_request\n    flag:", "already declared at events[0]")


def test_an_event_naming_an_unknown_flag_is_refused() -> None:
    text = edited("    flag: other-flag\n", "    flag: nope\n")

    assert_refused(text, "events[1].flag", "flag: nope", "unknown flag `nope`")


def test_an_outcome_listed_twice_is_refused() -> None:
    text = edited("outcomes: [done, failed]", "outcomes: [done, failed, done]")

    assert_refused(text, "events[1].outcomes[2]", "outcomes: [done, failed, done]", "`done` is listed twice")


def test_an_outcome_with_unfit_characters_is_refused() -> None:
    text = edited("outcomes: [done, failed]", 'outcomes: [done, "not done"]')

    assert_refused(text, "events[1].outcomes[1]", "not done", "outcome `not done` must be 1-64 letters")


@pytest.mark.parametrize("label", sorted(RESERVED_LABELS))
def test_a_reserved_label_name_is_refused(label: str) -> None:
    text = edited("      route: {values:", f"      {label}: {{values:")

    assert_refused(text, f"events[0].labels.{label}", f"{label}: {{values:", "every event carries already")


def test_a_label_name_unfit_for_prometheus_is_refused() -> None:
    text = edited("      route: {values:", "      Route: {values:")

    assert_refused(text, "events[0].labels.Route", "Route:", "must be snake_case")


def test_a_label_value_listed_twice_is_refused() -> None:
    text = edited("status_class: {values: [2xx, 4xx, 5xx]}", "status_class: {values: [2xx, 4xx, 2xx]}")

    assert_refused(text, "events[0].labels.status_class.values[2]", "[2xx, 4xx, 2xx]", "listed twice")


def test_a_label_otherwise_outside_its_values_is_refused() -> None:
    text = edited("otherwise: other}", "otherwise: unknown}")

    assert_refused(text, "events[0].labels.route.otherwise", "otherwise: unknown", "must be one of the listed values")


@pytest.mark.parametrize("unit", ["milliseconds", "ms", "second", "bytes_per_second", ""])
def test_a_value_unit_that_is_not_a_base_unit_is_refused(unit: str) -> None:
    text = edited("unit: seconds}", f'unit: "{unit}"}}')

    assert_refused(text, "events[0].value.unit", "value: {name: duration", "is not a base unit", "seconds, bytes")


@pytest.mark.parametrize("buckets", ["[1, 2, 2]", "[2, 1]", "[0.5, 0.25, 1]", "[]", "[1, .inf]", "[.nan, 1]"])
def test_buckets_that_are_not_finite_and_strictly_increasing_are_refused(buckets: str) -> None:
    text = edited("unit: seconds}", f"unit: seconds, buckets: {buckets}}}")

    assert_refused(text, "events[0].value.buckets", "value: {name: duration", "finite and strictly increasing")


@pytest.mark.parametrize("minimum", [".nan", ".inf", "-.inf"])
def test_a_value_minimum_that_is_not_finite_is_refused(minimum: str) -> None:
    text = edited("unit: seconds}", f"unit: seconds, minimum: {minimum}}}")

    assert_refused(text, "events[0].value.minimum", "value: {name: duration", "finite number, or null")


def test_a_value_minimum_of_null_means_none() -> None:
    (event, _) = parse(edited("unit: seconds}", "unit: seconds, minimum: null}")).events

    assert event.value is not None
    assert event.value.minimum is None


def test_a_value_name_unfit_for_a_metric_name_is_refused() -> None:
    text = edited("value: {name: duration,", "value: {name: Duration,")

    assert_refused(text, "events[0].value.name", "value: {name: Duration", "must be snake_case")


@pytest.mark.parametrize(
    ("totals", "path", "reason"),
    [
        ("[tokens, tokens]", "events[0].totals[1]", "listed twice"),
        ("[Tokens]", "events[0].totals[0]", "must be snake_case"),
        ("[tokens, events]", "events[0].totals[1]", "`demo_request_events` is the counter of event `demo_request`"),
        ("[duration_seconds]", "events[0].totals[0]", "is the histogram of event `demo_request`"),
        ("[duration_seconds_count]", "events[0].totals[0]", "is the histogram of event `demo_request`"),
    ],
)
def test_a_total_that_is_unfit_or_clashes_with_another_metric_is_refused(totals: str, path: str, reason: str) -> None:
    text = edited("totals: [tokens]", f"totals: {totals}")

    assert_refused(text, path, f"totals: {totals}", reason)


def test_metric_names_that_clash_across_events_are_refused_on_the_later_event() -> None:
    # `demo` + total `request_events` would be the metric `demo_request_events`, the counter of `demo_request`.
    text = edited(
        "    outcomes: [done, failed]\n", "    outcomes: [done, failed]\n  - name: demo\n    totals: [request_events]\n"
    )

    assert_refused(text, "events[2].totals[0]", "totals: [request_events]", "is the counter of event `demo_request`")


# --- refusals in `rules:` ------------------------------------------------------------------------------------


def test_a_rule_over_an_unknown_event_is_refused() -> None:
    text = edited("    event: other_job\n", "    event: nope\n")

    assert_refused(text, "rules[4].event", "event: nope", "unknown event `nope`", "declares demo_request, other_job")


def test_a_where_key_the_event_has_not_is_refused() -> None:
    text = edited("where: {route: [upload]}", "where: {method: [GET]}")

    assert_refused(
        text,
        "rules[0].where.method",
        "where: {method",
        "has no label `method`",
        "outcome, variant, route, status_class",
    )


def test_a_numerator_key_the_event_has_not_is_refused() -> None:
    text = edited("numerator: {status_class: [4xx, 5xx]}", "numerator: {status: [4xx, 5xx]}")

    assert_refused(text, "rules[0].numerator.status", "numerator: {status:", "has no label `status`")


@pytest.mark.parametrize(
    ("old", "new", "path", "value"),
    [
        ("where: {route: [upload]}", "where: {route: [download]}", "rules[0].where.route", "download"),
        (
            "numerator: {status_class: [4xx, 5xx]}",
            "numerator: {status_class: [5xx, 6xx]}",
            "rules[0].numerator.status_class",
            "6xx",
        ),
        ("numerator: {outcome: [error]}", "numerator: {outcome: [timeout]}", "rules[3].numerator.outcome", "timeout"),
        ("where: {outcome: [failed]}", "where: {outcome: [error]}", "rules[4].where.outcome", "error"),
        ("where: {outcome: [failed]}", "where: {variant: [z]}", "rules[4].where.variant", "z"),
    ],
)
def test_a_selector_value_the_event_does_not_declare_is_refused(old: str, new: str, path: str, value: str) -> None:
    text = edited(old, new)

    assert_refused(text, path, new, f"`{value}` is not a declared value")


def test_a_selector_listing_no_values_is_refused() -> None:
    text = edited("where: {route: [upload]}", "where: {route: []}")

    assert_refused(text, "rules[0].where.route", "where: {route: []}", "lists no values")


def test_a_selector_may_name_the_event_variants() -> None:
    rule = parse(edited("where: {outcome: [failed]}", "where: {outcome: [failed], variant: [b, c]}")).rules[4]

    assert rule.where.matches["variant"] == frozenset({"b", "c"})


@pytest.mark.parametrize("op", ["<", "<=", "==", "=>", "gt", "> "])
def test_an_op_other_than_greater_than_or_greater_or_equal_is_refused(op: str) -> None:
    text = edited('    op: ">"\n    threshold: 0.03\n', f'    op: "{op}"\n    threshold: 0.03\n')

    assert_refused(text, "rules[0].op", f'op: "{op}"', "op must be `>` or `>=`")


@pytest.mark.parametrize("threshold", [".nan", ".inf", "-.inf"])
def test_a_threshold_that_is_not_finite_is_refused(threshold: str) -> None:
    text = edited("    threshold: 6\n", f"    threshold: {threshold}\n")

    assert_refused(text, "rules[2].threshold", f"threshold: {threshold}", "finite number")


@pytest.mark.parametrize("threshold", ["3", "1.01", "-0.01"])
def test_a_ratio_threshold_outside_0_to_1_is_refused(threshold: str) -> None:
    text = edited("    threshold: 0.03\n", f"    threshold: {threshold}\n")

    assert_refused(text, "rules[0].threshold", f"threshold: {threshold}\n    min_samples", "write 3% as 0.03")


@pytest.mark.parametrize("threshold", ["1.5", "-2"])
def test_a_cohort_margin_outside_minus_1_to_1_is_refused(threshold: str) -> None:
    text = edited("    threshold: 0.02\n", f"    threshold: {threshold}\n")

    assert_refused(text, "rules[3].threshold", f"threshold: {threshold}", "from -1 to 1")


def test_an_unknown_rule_kind_is_refused() -> None:
    text = edited("    kind: rate\n", "    kind: percentile\n")

    assert_refused(text, "rules[4].kind", "kind: percentile", "ratio, rate, mean, streak, cohort")


def test_an_unknown_severity_is_refused() -> None:
    text = edited("    min_samples: 50\n", "    min_samples: 50\n    severity: critical\n")

    assert_refused(text, "rules[0].severity", "severity: critical", "page, ticket, info")


def test_a_streak_outcome_the_event_does_not_declare_is_refused() -> None:
    text = edited("    outcome: error\n", "    outcome: timeout\n")

    assert_refused(text, "rules[1].outcome", "outcome: timeout", "one of the event's outcomes (ok, error)")


def test_a_streak_without_an_outcome_is_refused_on_the_rule() -> None:
    text = edited("    outcome: error\n", "")

    assert_refused(text, "rules[1].outcome", "  - name: error-streak", "a streak rule needs `outcome`")


def test_a_streak_whose_where_leaves_out_its_outcome_is_refused() -> None:
    text = edited("    outcome: error\n", "    outcome: error\n    where: {outcome: [ok]}\n")

    assert_refused(text, "rules[1].where.outcome", "where: {outcome: [ok]}", "leaves out `error`")


def test_an_outcome_on_a_rule_other_than_a_streak_is_refused() -> None:
    text = edited("    threshold: 6\n", "    threshold: 6\n    outcome: error\n")

    assert_refused(text, "rules[2].outcome", "    outcome: error\n    window: 1m", "applies to streak rules")


def test_a_mean_over_an_event_without_a_value_is_refused() -> None:
    text = edited("    kind: mean\n    event: demo_request\n", "    kind: mean\n    event: other_job\n")

    assert_refused(text, "rules[2].event", "event: other_job\n    op", "declares no value to average")


def test_a_ratio_without_a_numerator_is_refused_on_the_rule() -> None:
    text = edited("    numerator: {status_class: [4xx, 5xx]}\n", "")

    assert_refused(text, "rules[0].numerator", "  - name: error-rate", "a ratio rule needs a `numerator`")


def test_a_cohort_without_a_numerator_is_refused_on_the_rule() -> None:
    text = edited("    numerator: {outcome: [error]}\n", "")

    assert_refused(text, "rules[3].numerator", "  - name: canary", "a cohort rule needs a `numerator`")


@pytest.mark.parametrize(
    ("rule", "anchor", "outcome"),
    [(1, "    outcome: error\n", "error"), (2, "    threshold: 6\n", "error"), (4, "    per: 1m\n", "failed")],
)
def test_a_numerator_on_a_rule_without_a_ratio_is_refused(rule: int, anchor: str, outcome: str) -> None:
    text = edited(anchor, anchor + f"    numerator: {{outcome: [{outcome}]}}  # here\n")

    assert_refused(text, f"rules[{rule}].numerator", "# here", "has no numerator; use `where`")


def test_a_numerator_selecting_nothing_that_where_admits_is_refused() -> None:
    text = edited("where: {route: [upload]}", "where: {route: [upload], status_class: [2xx]}")

    assert_refused(text, "rules[0].numerator.status_class", "numerator: {status_class", "the ratio is always 0")


def test_a_cohort_without_a_flag_is_refused_on_the_rule() -> None:
    text = edited("    flag: demo-flag\n    op", "    op")

    assert_refused(text, "rules[3].flag", "  - name: canary", "name it in `flag`")


def test_a_cohort_flag_other_than_the_flag_its_event_carries_is_refused() -> None:
    text = edited("    flag: demo-flag\n    op", "    flag: other-flag\n    op")

    assert_refused(
        text, "rules[3].flag", "    flag: other-flag\n    op", "carries the variant of `demo-flag`, not `other-flag`"
    )


def test_a_rule_naming_an_unknown_flag_is_refused() -> None:
    text = edited("    flag: demo-flag\n    op", "    flag: nope\n    op")

    assert_refused(text, "rules[3].flag", "flag: nope", "unknown flag `nope`")


@pytest.mark.parametrize("field", ["canary_variant", "baseline_variant"])
def test_a_cohort_variant_the_flag_does_not_declare_is_refused(field: str) -> None:
    text = edited("    flag: demo-flag\n    op", f"    flag: demo-flag\n    {field}: maybe\n    op")

    assert_refused(text, f"rules[3].{field}", f"{field}: maybe", "`maybe` is not a variant of flag `demo-flag`")


def test_a_cohort_comparing_a_variant_with_itself_is_refused() -> None:
    text = edited("    flag: demo-flag\n    op", '    flag: demo-flag\n    baseline_variant: "on"\n    op')

    assert_refused(text, "rules[3].baseline_variant", 'baseline_variant: "on"', "must differ")


@pytest.mark.parametrize(
    ("selectors", "path"),
    [
        ('    where: {variant: ["on"]}  # here\n    numerator: {outcome: [error]}\n', "rules[3].where.variant"),
        ('    numerator: {outcome: [error], variant: ["on"]}  # here\n', "rules[3].numerator.variant"),
    ],
)
def test_a_cohort_selecting_variants_itself_is_refused(selectors: str, path: str) -> None:
    text = edited("    numerator: {outcome: [error]}\n", selectors)

    assert_refused(text, path, "# here", "picks its variants with `canary_variant` and `baseline_variant`")


@pytest.mark.parametrize("field", ["canary_variant", "baseline_variant"])
def test_cohort_variants_on_another_kind_are_refused_on_the_field_written(field: str) -> None:
    text = edited("    min_samples: 50\n", f'    min_samples: 50\n    {field}: "on"\n')

    assert_refused(text, f"rules[0].{field}", f"{field}:", "apply to cohort rules only")


@pytest.mark.parametrize("name", ["Error-Rate", "error_rate", "error--rate", "-error"])
def test_a_rule_name_that_is_not_lowercase_words_joined_by_dashes_is_refused(name: str) -> None:
    text = edited("  - name: error-rate\n", f"  - name: {name}\n")

    assert_refused(text, "rules[0].name", f"name: {name}", "lowercase words joined by dashes")


def test_a_duplicate_rule_name_is_refused_on_the_second() -> None:
    text = edited("  - name: latency\n", "  - name: error-rate\n")

    assert_refused(text, "rules[2].name", "  - name: error-rate\n    kind: mean", "already declared at rules[0]")


def test_a_guard_naming_an_undeclared_rule_is_refused() -> None:
    text = edited("guards: [error-rate, error-streak]", "guards: [error-rate, error-streaks]")

    assert_refused(
        text,
        "flags[0].plan.environments[0].stages[0].guards[1]",
        "guards: [",
        "guard `error-streaks` names no rule",
        "`canary`, `error-rate`, `error-streak`, `failures`, `latency`",
    )


def test_a_guard_is_refused_when_the_definition_has_no_rules() -> None:
    text = VALID[: VALID.index("rules:\n")]

    assert_refused(text, "flags[0].plan.environments[0].stages[0].guards[0]", "guards: [", "its rules are none")


def test_a_rule_in_an_unknown_environment_is_refused() -> None:
    text = edited("environments: [staging, production]", "environments: [staging, prod]")

    assert_refused(text, "rules[4].environments[1]", "environments: [staging, prod]", "unknown environment `prod`")


@pytest.mark.parametrize(
    ("field", "written", "reason"),
    [
        ("window", "5x", "window `5x` is not a duration"),
        ("window", "2d", "window must be at most 1d"),
        ("window", "0", "window must be longer than 0s"),
        ("for", "1d1s", "for must be at most 1d"),
        ("keep_firing_for", "soon", "keep_firing_for `soon` is not a duration"),
    ],
)
def test_a_rule_duration_that_is_unreadable_too_long_or_empty_is_refused(field: str, written: str, reason: str) -> None:
    text = edited("    window: 1m\n    for: 5m\n", f"    {field}: {written}  # here\n")

    assert_refused(text, f"rules[2].{field}", "# here", reason)


def test_a_rate_per_of_zero_is_refused() -> None:
    text = edited("    per: 1m\n", "    per: 0\n")

    assert_refused(text, "rules[4].per", "per: 0", "per must be longer than 0s")


def test_a_rule_field_spelled_hold_rather_than_for_is_refused_as_unknown() -> None:
    text = edited("    for: 5m\n", "    hold: 5m\n")

    assert_refused(text, "rules[2].hold", "hold: 5m", "unknown field `hold`")
