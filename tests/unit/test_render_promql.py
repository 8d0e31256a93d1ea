"""Unit tests of the PromQL built from definition rules (controlplane.render.promql) and of the alerting rules
around it (controlplane.render.alerts): same scope, threshold, op and window as the evaluator, read through
recording rules, one alert per environment, and a guard label only where the rule guards an auto-rollback plan."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from controlplane.catalog.events import EventType, LabelSpec, ValueSpec
from controlplane.catalog.rules import Comparison, Rule, RuleKind, Selector, rule_from_json, rule_to_json
from controlplane.definitions.loader import load_definition, parse_definition
from controlplane.definitions.schemas import PipelineDefinition
from controlplane.render.alerts import GUARD_LABEL, definition_alerts, guard_environments, render_rules
from controlplane.render.names import alert_name, template_literal
from controlplane.render.promql import rule_query
from controlplane.render.promql_names import Matcher, metric_names, vector_selectors
from controlplane.render.promql_text import LabelMatch, duration, paren

ENVIRONMENTS = ("dev", "qa", "staging", "production")
DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"
REQUEST = EventType(
    pipeline="shop",
    name="http_request",
    flag="new-checkout",
    variants=("on", "off"),
    labels={"route": LabelSpec(("pay", "browse")), "status_class": LabelSpec(("2xx", "4xx", "5xx"))},
    value=ValueSpec(name="duration", unit="seconds", buckets=(1.0,)),
)


def rule(kind: RuleKind, **fields: object) -> Rule:
    base: dict[str, object] = {
        "name": "checkout-errors",
        "pipeline": "shop",
        "kind": kind,
        "event": "http_request",
        "op": Comparison.GT,
        "threshold": "0.03",
        "window": timedelta(minutes=5),
    }
    return Rule(**(base | fields))  # type: ignore[arg-type]


def matchers_of(expr: str, metric: str) -> set[tuple[Matcher, ...]]:
    return {selector.matchers for selector in vector_selectors(expr) if selector.metric == metric}


RECORD = "pipeline_environment_route_status_class:http_request_events:increase5m"
PAY = Matcher("route", "=", "pay")
ERRORS = Matcher("status_class", "=~", "4xx|5xx")


def test_a_ratio_is_bad_over_all_in_scope_per_environment_through_a_recording_rule() -> None:
    ratio = rule(
        RuleKind.RATIO,
        where=Selector({"route": frozenset({"pay"})}),
        numerator=Selector({"status_class": frozenset({"4xx", "5xx"})}),
        min_samples=50,
    )

    query = rule_query(ratio, REQUEST)

    (recording,) = query.recordings
    assert recording.record == RECORD
    assert recording.expr == (
        'sum by (pipeline, environment, route, status_class) (increase(http_request_events_total{pipeline="shop"}[5m]))'
    )
    # Numerator: where AND numerator; denominator (and the samples floor): where alone.
    assert matchers_of(query.alert, RECORD) == {(PAY, ERRORS), (PAY,)}
    assert query.alert.count("sum by (pipeline, environment)") == 4
    assert "\n    or\n    0 * sum by (pipeline, environment)" in query.alert  # no bad series yet reads as 0
    assert "\n> 0.03\nand on (pipeline, environment)\n" in query.alert
    assert query.alert.endswith(") >= 50")
    assert query.alert.startswith(paren(query.value))


def test_a_numerator_key_also_in_where_selects_the_values_both_admit() -> None:
    ratio = rule(
        RuleKind.RATIO,
        where=Selector({"status_class": frozenset({"4xx", "5xx"})}),
        numerator=Selector({"status_class": frozenset({"5xx", "2xx"})}),
    )

    found = matchers_of(
        rule_query(ratio, REQUEST).alert, "pipeline_environment_status_class:http_request_events:increase5m"
    )

    assert found == {(Matcher("status_class", "=", "5xx"),), (ERRORS,)}


@pytest.mark.parametrize(("kind", "min_samples", "clauses"), [
    (RuleKind.RATIO, 0, 0), (RuleKind.RATIO, 1, 0), (RuleKind.RATIO, 2, 1),
    (RuleKind.MEAN, 1, 0), (RuleKind.MEAN, 20, 1),
    (RuleKind.RATE, 0, 0), (RuleKind.RATE, 1, 1),
])  # fmt: skip
def test_a_samples_floor_is_added_only_where_no_data_would_not_already_stay_silent(
    kind: RuleKind, min_samples: int, clauses: int
) -> None:
    numerator = Selector({"status_class": frozenset({"5xx"})}) if kind is RuleKind.RATIO else Selector()

    alert = rule_query(rule(kind, numerator=numerator, min_samples=min_samples), REQUEST).alert

    # Ratios and means of no events are 0/0 = NaN, which never compares true; a rate of no events is 0.
    assert alert.count("and on (pipeline, environment)") == clauses
    if clauses:
        assert alert.endswith(f">= {max(min_samples, 1)}")


def test_a_rate_is_the_count_in_scope_times_per_over_the_window_multiplied_first() -> None:
    rate = rule(
        RuleKind.RATE,
        where=Selector({"status_class": frozenset({"5xx"})}),
        threshold="2.0",
        per=timedelta(minutes=1),
        op=Comparison.GE,
    )

    query = rule_query(rate, REQUEST)

    record = "pipeline_environment_status_class:http_request_events:increase5m"
    assert query.value == f'sum by (pipeline, environment) ({record}{{status_class="5xx"}}) * 60 / 300'
    assert query.alert.endswith("\n>= 2")


def test_a_mean_divides_the_histogram_sum_by_its_count() -> None:
    mean = rule(RuleKind.MEAN, threshold="6.0", window=timedelta(minutes=1), min_samples=20)

    query = rule_query(mean, REQUEST)

    assert [recording.record for recording in query.recordings] == [
        "pipeline_environment:http_request_duration_seconds_sum:increase1m",
        "pipeline_environment:http_request_duration_seconds_count:increase1m",
    ]
    assert metric_names(query.value) == [recording.record for recording in query.recordings]
    assert query.value.index("_sum:") < query.value.index("\n/\n") < query.value.index("_count:")
    assert query.alert.endswith("_count:increase1m) >= 20")
    assert query.value_template == "{{ $value | humanizeDuration }}"
    assert query.threshold_words == "6s"


def test_a_cohort_subtracts_the_baseline_share_from_the_canary_share_each_with_its_floor() -> None:
    cohort = rule(
        RuleKind.COHORT,
        numerator=Selector({"status_class": frozenset({"5xx"})}),
        canary_variant="on",
        baseline_variant="off",
        threshold="0.02",
        window=timedelta(minutes=15),
        min_samples=200,
    )

    query = rule_query(cohort, REQUEST)

    record = "pipeline_environment_status_class_variant:http_request_events:increase15m"
    variants = {selector.matcher("variant") for selector in vector_selectors(query.value)}
    assert variants == {Matcher("variant", "=", "on"), Matcher("variant", "=", "off")}
    assert query.value.index('variant="on"') < query.value.index("\n-\n") < query.value.index('variant="off"')
    floors = query.alert.split("and on (pipeline, environment)")[1:]
    assert [matchers_of(floor, record) for floor in floors] == [
        {(Matcher("variant", "=", "on"),)},
        {(Matcher("variant", "=", "off"),)},
    ]


def test_a_streak_reads_the_control_planes_gauge_once_for_all_replicas() -> None:
    streak = rule(RuleKind.STREAK, outcome="error", threshold="3.0", op=Comparison.GE, window=timedelta(0))

    query = rule_query(streak, REQUEST)

    assert query.recordings == ()
    assert query.alert == (
        'max by (pipeline, environment) (controlplane_event_streak{pipeline="shop", rule="checkout-errors"})\n>= 3'
    )


def test_a_rule_limited_to_environments_is_measured_only_there() -> None:
    limited = rule(RuleKind.RATE, environments=("staging", "production"))

    (selector, *_) = vector_selectors(rule_query(limited, REQUEST).alert)

    assert selector.matcher("environment") == Matcher("environment", "=~", "production|staging")


def test_a_callers_environment_matcher_replaces_the_rules_own() -> None:
    limited = rule(RuleKind.RATE, environments=("staging", "production"))
    only = LabelMatch("environment", frozenset({"production"}))

    selectors = vector_selectors(rule_query(limited, REQUEST, (only,)).alert)

    assert {selector.matcher("environment") for selector in selectors} == {Matcher("environment", "=", "production")}


def test_label_values_are_escaped_for_regexes_and_strings() -> None:
    assert LabelMatch("content_type", frozenset({"image/png", "image/x.y+z"})).render() == (
        'content_type=~"image/png|image/x\\\\.y\\\\+z"'
    )
    assert LabelMatch("environment", frozenset({"qa", "dev"}), negate=True).render() == 'environment!~"dev|qa"'
    assert LabelMatch("route", frozenset({'a"b'})).render() == 'route="a\\"b"'


def test_a_query_rule_is_not_rendered_from_events() -> None:
    with pytest.raises(ValueError, match="not measured from events"):
        rule_query(rule(RuleKind.QUERY, event=""), REQUEST)


@pytest.mark.parametrize(("value", "written"), [
    (timedelta(seconds=90), "90s"), (timedelta(minutes=5), "5m"), (timedelta(hours=1), "1h"),
    (timedelta(days=3), "3d"), (timedelta(minutes=90), "90m"),
])  # fmt: skip
def test_durations_are_written_in_one_prometheus_unit(value: timedelta, written: str) -> None:
    assert duration(value) == written


def test_a_zero_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        duration(timedelta(0))


@pytest.mark.parametrize(("name", "alert"), [
    ("upload-error-rate", "UploadErrorRate"), ("ai-5xx-rate", "Ai5xxRate"), ("5xx-rate", "Rule5xxRate"),
])  # fmt: skip
def test_alert_names_are_the_rule_name_in_camel_case(name: str, alert: str) -> None:
    assert alert_name(name) == alert


def test_template_text_cannot_open_a_go_template_action() -> None:
    assert template_literal("a {{ b }}") == 'a {{ "{{" }} b }}'


# --- alerting rules of the shipped definitions ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> PipelineDefinition:
    return load_definition(DEFINITIONS / "reference-images.yaml", environments=ENVIRONMENTS)


def test_every_event_rule_gets_an_alert_with_its_threshold_for_and_keep_firing_for(images: PipelineDefinition) -> None:
    alerts = definition_alerts(images)

    assert {alert.rule.name for alert in alerts} == {rule.name for rule in images.rules}
    for alert in alerts:
        written = alert.to_rule()
        assert written["alert"] == alert_name(alert.rule.name)
        assert written.get("for") == (duration(alert.rule.hold) if alert.rule.hold else None)
        assert written.get("keep_firing_for") == (
            duration(alert.rule.keep_firing_for) if alert.rule.keep_firing_for else None
        )
        assert f"\n{alert.rule.op.value} " in written["expr"]
        assert "$value" not in str(written["labels"])
        assert set(written["annotations"]) == {"summary", "description", "runbook_url"}
        assert written["labels"]["severity"] == alert.rule.severity.value


def test_a_guard_rule_is_split_into_its_guarded_environments_and_the_rest(images: PipelineDefinition) -> None:
    latency = [alert for alert in definition_alerts(images) if alert.rule.name == "upload-latency"]

    assert guard_environments(images, latency[0].rule, "enable-reference-images") == {"staging", "production"}
    guarded, rest = latency
    assert guarded.labels == {
        "severity": "ticket",
        "pipeline": "reference-images",
        "flag": "enable-reference-images",
        "rule": "upload-latency",
        GUARD_LABEL: "true",
    }
    assert GUARD_LABEL not in rest.labels
    assert [env for env in ENVIRONMENTS if guarded.covers(env)] == ["staging", "production"]
    assert [env for env in ENVIRONMENTS if rest.covers(env)] == ["dev", "qa"]
    assert 'environment=~"production|staging"' in guarded.query.alert
    assert 'environment!~"production|staging"' in rest.query.alert
    assert "rolls it back" in guarded.annotations["description"]


def test_a_rule_guarding_nothing_is_one_alert_over_every_environment(images: PipelineDefinition) -> None:
    (rate,) = [alert for alert in definition_alerts(images) if alert.rule.name == "upload-5xx-rate"]

    assert rate.environments is None
    assert GUARD_LABEL not in rate.labels
    assert all(selector.matcher("environment") is None for selector in vector_selectors(rate.query.alert))


def test_guards_of_a_plan_without_auto_rollback_are_not_marked() -> None:
    text = (DEFINITIONS / "reference-images.yaml").read_text().replace("auto_rollback: true", "auto_rollback: false")
    definition = parse_definition(text, source="reference-images.yaml", environments=ENVIRONMENTS)

    assert not any(GUARD_LABEL in alert.labels for alert in definition_alerts(definition))


def test_the_rule_file_has_recording_rules_first_each_once(images: PipelineDefinition) -> None:
    import yaml

    groups = yaml.safe_load(render_rules(images))["groups"]

    rules = groups[0]["rules"]
    records = [item["record"] for item in rules if "record" in item]
    assert len(records) == len(set(records))
    assert all("record" in item for item in rules[: len(records)])
    assert all(record.count(":") == 2 and record.startswith("pipeline_environment") for record in records)
    assert [group["name"] for group in groups] == ["reference-images.rules", "reference-images.slo"]


def test_a_definition_with_a_query_rule_names_it_as_not_rendered() -> None:
    text = textwrap.dedent(
        """\
        pipeline: demo
        flags:
          - key: demo-flag
            type: boolean
            variants: {"on": true, "off": false}
            off_variant: "off"
        rules:
          - name: upstream-latency
            source: prometheus
            query: 'histogram_quantile(0.99, sum by (le) (rate(x_bucket{env="{environment}"}[5m])))'
            op: ">"
            threshold: 2
        """
    )
    definition = parse_definition(text, source="demo.yaml", environments=ENVIRONMENTS)

    rendered = render_rules(definition)

    assert "Not rendered (the control plane already reads their queries from Prometheus): upstream-latency" in rendered
    assert definition_alerts(definition) == []


def test_in_an_environment_run_per_segment_the_guards_are_the_rules_scoped_to_each_segment() -> None:
    assistant = load_definition(DEFINITIONS / "ai-assistant.yaml", environments=ENVIRONMENTS)
    rules = {rule.name: rule for rule in assistant.rules}
    flag = "ai.reply.streaming.enabled"
    scoped = rules["ai-fallback-rate-queue-sales"]
    assert scoped.segment is not None
    assert (scoped.segment.flag, scoped.segment.environment, str(scoped.segment), scoped.segment.guard) == (
        flag,
        "production",
        "queue=sales",
        "ai-fallback-rate",
    )
    assert rule_from_json(scoped.pipeline, rule_to_json(scoped)) == scoped
    # The plan's own rule guards the environments run once; production is guarded per queue.
    assert guard_environments(assistant, rules["ai-fallback-rate"], flag) == {"qa", "staging"}
    assert guard_environments(assistant, scoped, flag) == {"production"}
    (alert,) = [alert for alert in definition_alerts(assistant) if alert.rule.name == scoped.name]
    assert alert.labels == {
        "severity": "page",
        "pipeline": "ai-assistant",
        "flag": flag,
        "rule": "ai-fallback-rate-queue-sales",
        GUARD_LABEL: "true",
    }
    assert f"A guard of {flag} (segment queue=sales)" in alert.annotations["description"]
