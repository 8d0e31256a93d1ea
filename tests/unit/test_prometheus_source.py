"""Unit tests for rules measured by Prometheus: reading the query API's answers, the decision at the threshold,
every way there is no measurement (never a pass, never a rollback), the per-tick query budget, the HTTP adapter
over a mock transport, and the definition syntax with its refusals."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controlplane.alerting.prometheus import (
    NOT_CONFIGURED,
    PrometheusClient,
    QueryAnswer,
    QueryReadings,
    QuerySeries,
    measure_answers,
    read_answer,
    read_prometheus_rules,
)
from controlplane.alerting.rules import AlertStatus, step
from controlplane.catalog.rules import (
    AlertState,
    Comparison,
    Rule,
    RuleKind,
    RuleSource,
    placeholders,
    rule_from_json,
    rule_to_json,
)
from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import parse_definition
from controlplane.settings import Settings, SettingsError

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
QUERY = (
    'sum(rate(errors_total{environment="{environment}"}[5m]))'
    ' / sum(rate(requests_total{environment="{environment}"}[5m]))'
)
SAMPLES = 'sum(increase(requests_total{environment="{environment}"}[5m]))'


def prometheus_rule(threshold: str = "0.03", op: Comparison = Comparison.GT, **changes: Any) -> Rule:
    values: dict[str, Any] = {
        "name": "error-ratio",
        "pipeline": "demo",
        "kind": RuleKind.QUERY,
        "event": "",
        "op": op,
        "threshold": threshold,
        "window": timedelta(0),
        "source": RuleSource.PROMETHEUS,
        "query": QUERY,
        **changes,
    }
    return Rule(**values)


def vector(*values: str, labels: Mapping[str, str] | None = None) -> QueryAnswer:
    return QueryAnswer(series=tuple(QuerySeries(dict(labels or {}), value) for value in values))


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


# --- reading the API's answers ----------------------------------------------------------------------------------


def test_an_instant_vector_is_read_with_its_labels_and_values_as_written() -> None:
    answer = read_answer(
        200,
        body(
            {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [{"metric": {"environment": "production"}, "value": [1762000000.0, "0.0312"]}],
                },
            }
        ),
    )
    assert answer == QueryAnswer(series=(QuerySeries({"environment": "production"}, "0.0312"),))


def test_a_scalar_is_one_series_without_labels() -> None:
    answer = read_answer(200, body({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "7"]}}))
    assert answer == QueryAnswer(series=(QuerySeries({}, "7"),))


def test_a_range_vector_is_no_answer_and_says_what_to_write() -> None:
    answer = read_answer(200, body({"status": "success", "data": {"resultType": "matrix", "result": []}}))
    assert answer.error is not None and "range vector" in answer.error and "rate()" in answer.error


def test_an_api_error_keeps_prometheus_own_words() -> None:
    answer = read_answer(
        400, body({"status": "error", "errorType": "bad_data", "error": 'parse error: unexpected "}"'})
    )
    assert answer.error == 'Prometheus refused the query (HTTP 400, bad_data): parse error: unexpected "}"'


def test_a_body_that_is_not_the_api_json_is_no_answer() -> None:
    answer = read_answer(502, b"<html>Bad Gateway</html>")
    assert answer.error is not None and "HTTP 502" in answer.error and "Bad Gateway" in answer.error


# --- the decision -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "written", "breached"),
    [
        (Comparison.GT, "0.03", False),  # exactly at a `>` threshold: no breach
        (Comparison.GE, "0.03", True),  # exactly at a `>=` threshold: breach
        (Comparison.GT, "0.030000000000000002", True),  # the next float up
        (Comparison.GE, "0.029999999999999999", False),
        (Comparison.GT, "+Inf", True),  # x/0 with x > 0: above any threshold
        (Comparison.GE, "-Inf", False),
    ],
)
def test_the_value_is_compared_exactly_as_prometheus_wrote_it(op: Comparison, written: str, breached: bool) -> None:
    measurement = measure_answers(prometheus_rule(op=op), vector(written))
    assert measurement.sufficient
    assert measurement.breached is breached
    assert written in measurement.detail


def test_a_finite_value_is_kept_and_infinities_are_not_stored() -> None:
    assert measure_answers(prometheus_rule(), vector("0.0312")).value == pytest.approx(0.0312)
    assert measure_answers(prometheus_rule(), vector("+Inf")).value is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (QueryAnswer(), "the query returned no series"),
        (vector("NaN"), "the query answered NaN"),
        (vector("0.5", "0.01"), "the query returned 2 series where one is needed"),
        (QueryAnswer(error="Prometheus at http://p:9090 did not answer within 2s"), "did not answer within 2s"),
        (QueryAnswer(error="Prometheus refused the query (HTTP 400, bad_data): x"), "bad_data"),
        (vector("many"), "which is not a number"),
    ],
)
def test_no_single_number_is_insufficient_data_with_the_reason(answer: QueryAnswer, reason: str) -> None:
    measurement = measure_answers(prometheus_rule(), answer)
    assert (measurement.sufficient, measurement.breached, measurement.value) == (False, False, None)
    assert reason in measurement.detail


def test_several_series_are_named_in_the_reason() -> None:
    answer = QueryAnswer(
        series=tuple(QuerySeries({"instance": f"pod-{index}", "job": "app"}, "0.5") for index in range(5))
    )
    detail = measure_answers(prometheus_rule(), answer).detail
    assert '{instance="pod-0", job="app"}' in detail and "and 2 more" in detail and "sum()" in detail


@pytest.mark.parametrize(
    ("samples", "sufficient", "counted", "reason"),
    [
        (vector("50"), True, 50, "50 samples"),
        (vector("49.7"), False, 49, "49 samples, fewer than 50 needed"),  # increase() extrapolates: floor
        (QueryAnswer(), False, 0, "0 samples, fewer than 50 needed"),  # nothing counted yet
        (vector("NaN"), False, 0, "the samples query answered NaN"),
        (vector("-1"), False, 0, "finite and not negative"),
        (vector("+Inf"), False, 0, "finite and not negative"),
        (vector("60", "70"), False, 0, "the samples query returned 2 series"),
        (QueryAnswer(error="Prometheus at http://p:9090 could not be reached: ConnectError"), False, 0, "reached"),
    ],
)
def test_the_samples_query_gates_the_value_with_min_samples(
    samples: QueryAnswer, sufficient: bool, counted: int, reason: str
) -> None:
    rule = prometheus_rule(samples_query=SAMPLES, min_samples=50)
    measurement = measure_answers(rule, vector("0.5"), samples)
    assert (measurement.sufficient, measurement.samples) == (sufficient, counted)
    assert measurement.breached is sufficient  # 0.5 > 0.03 counts only with enough samples
    assert reason in measurement.detail


def test_insufficient_prometheus_data_never_fires_and_a_firing_alert_holds_through_an_outage() -> None:
    rule = prometheus_rule()
    outage = measure_answers(rule, QueryAnswer(error="Prometheus at http://p:9090 did not answer within 2s"))
    first = step(rule, None, outage, NOW)
    assert first.state is AlertState.INSUFFICIENT_DATA and "did not answer" in first.detail

    firing = step(rule, first, measure_answers(rule, vector("0.2")), NOW + timedelta(seconds=2))
    assert firing.state is AlertState.FIRING
    held = step(rule, firing, outage, NOW + timedelta(seconds=4))
    assert held.state is AlertState.FIRING and held.since == firing.since and "did not answer" in held.detail
    resolved = step(rule, held, measure_answers(rule, vector("0.03")), NOW + timedelta(seconds=6))
    assert resolved.state is AlertState.INACTIVE


def test_for_and_keep_firing_for_apply_as_to_event_rules() -> None:
    rule = prometheus_rule(hold=timedelta(seconds=30), keep_firing_for=timedelta(minutes=1))
    status: AlertStatus | None = None
    states = []
    for offset, value in ((0, "0.5"), (20, "0.5"), (30, "0.5"), (40, "0.01"), (90, "0.01"), (100, "0.01")):
        status = step(rule, status, measure_answers(rule, vector(value)), NOW + timedelta(seconds=offset))
        states.append(status.state)
    assert states == [
        AlertState.PENDING,
        AlertState.PENDING,
        AlertState.FIRING,
        AlertState.FIRING,  # keep_firing_for: quiet since +40s
        AlertState.FIRING,
        AlertState.INACTIVE,  # a minute after the first quiet measurement
    ]


# --- one tick's queries -----------------------------------------------------------------------------------------


class FakePrometheus:
    """Answers instant queries from a table; records what it was asked; may stall on some queries."""

    def __init__(self, answers: Callable[[str], QueryAnswer], timeout: float = 1.0) -> None:
        self.answers = answers
        self.timeout = timeout
        self.asked: list[tuple[str, datetime]] = []
        self.lock = threading.Lock()

    def query(self, promql: str, at: datetime) -> QueryAnswer:
        with self.lock:
            self.asked.append((promql, at))
        return self.answers(promql)


def test_each_environment_gets_its_own_query_at_the_evaluation_time() -> None:
    fake = FakePrometheus(lambda promql: vector("0.5" if '"production"' in promql else "0.01"))
    rule = prometheus_rule(environments=("staging", "production"))
    readings = read_prometheus_rules([rule], ("dev", "qa", "staging", "production"), NOW, fake)

    assert sorted(query for query, _ in fake.asked) == sorted(
        [QUERY.replace("{environment}", "staging"), QUERY.replace("{environment}", "production")]
    )
    assert {at for _, at in fake.asked} == {NOW}
    assert readings.measurement(rule, "production").breached
    assert not readings.measurement(rule, "staging").breached
    assert readings.failures == 0


def test_the_same_query_text_is_asked_once_per_tick() -> None:
    fake = FakePrometheus(lambda promql: vector("10"))
    shared = 'sum(requests_total{environment="{environment}"})'
    rules = [
        prometheus_rule(name="a", query=shared, samples_query=shared, min_samples=1),
        prometheus_rule(name="b", query=shared),
    ]
    read_prometheus_rules(rules, ("production",), NOW, fake)
    assert len(fake.asked) == 1


def test_event_rules_are_not_sent_to_prometheus() -> None:
    fake = FakePrometheus(lambda promql: vector("1"))
    event_rule = Rule(name="e", pipeline="demo", kind=RuleKind.RATIO, event="x", op=Comparison.GT, threshold="0.1")
    assert read_prometheus_rules([event_rule], ("production",), NOW, fake) == QueryReadings()
    assert fake.asked == []


def test_without_a_configured_prometheus_every_reading_says_so() -> None:
    rule = prometheus_rule()
    readings = read_prometheus_rules([rule], ("qa", "production"), NOW, None)
    for environment in ("qa", "production"):
        measurement = readings.measurement(rule, environment)
        assert not measurement.sufficient and measurement.detail == NOT_CONFIGURED
    assert "CONTROLPLANE_PROMETHEUS_URL" in NOT_CONFIGURED


def test_a_stalled_query_costs_the_budget_not_the_other_rules() -> None:
    release = threading.Event()

    def answers(promql: str) -> QueryAnswer:
        if "slow" in promql:
            release.wait(5)  # a Prometheus that never answers this one (within the test)
        return vector("0.5")

    fake = FakePrometheus(answers, timeout=0.2)
    slow = prometheus_rule(name="slow", query='slow{environment="{environment}"}')
    quick = prometheus_rule(name="quick")
    started = time.monotonic()
    try:
        readings = read_prometheus_rules([slow, quick], ("production",), NOW, fake)
    finally:
        release.set()
    elapsed = time.monotonic() - started

    assert elapsed < 1.0  # the budget is 1.5 x 0.2 s
    assert readings.measurement(quick, "production").breached
    stalled = readings.measurement(slow, "production")
    assert not stalled.sufficient and "did not answer within this evaluation's 0.3s budget" in stalled.detail
    assert readings.failures == 1


def test_a_source_that_raises_leaves_its_rule_without_data() -> None:
    def answers(promql: str) -> QueryAnswer:
        raise RuntimeError("boom")

    readings = read_prometheus_rules([prometheus_rule()], ("production",), NOW, FakePrometheus(answers))
    measurement = readings.measurement(prometheus_rule(), "production")
    assert not measurement.sufficient and "RuntimeError: boom" in measurement.detail


def test_a_rule_changed_since_it_was_read_is_not_measured_with_the_old_query() -> None:
    readings = read_prometheus_rules([prometheus_rule()], ("production",), NOW, FakePrometheus(lambda q: vector("1")))
    changed = prometheus_rule(query='other{environment="{environment}"}')
    measurement = readings.measurement(changed, "production")
    assert not measurement.sufficient and "not queried yet" in measurement.detail


# --- the HTTP adapter -------------------------------------------------------------------------------------------


def client_answering(handler: Callable[[httpx.Request], httpx.Response], timeout: float = 2.0) -> PrometheusClient:
    return PrometheusClient(
        "http://prometheus.test:9090/", timeout=timeout, http=httpx.Client(transport=httpx.MockTransport(handler))
    )


def test_the_client_sends_an_instant_query_at_the_evaluation_time_with_its_timeout() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "1"]}]}},
        )

    answer = client_answering(handler).query('up{environment="production"}', NOW)
    assert answer == QueryAnswer(series=(QuerySeries({}, "1"),))
    (request,) = seen
    assert (request.method, request.url.path) == ("GET", "/api/v1/query")
    assert dict(request.url.params) == {
        "query": 'up{environment="production"}',
        "time": f"{NOW.timestamp():.3f}",
        "timeout": "2s",
    }


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (httpx.ReadTimeout("timed out"), "Prometheus at http://prometheus.test:9090 did not answer within 2s"),
        (httpx.ConnectError("connection refused"), "could not be reached: ConnectError: connection refused"),
    ],
)
def test_transport_failures_become_answers_with_a_reason(error: Exception, reason: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    answer = client_answering(handler).query("up", NOW)
    assert answer.error is not None and reason in answer.error


def test_an_error_status_is_read_from_the_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"status": "error", "errorType": "timeout", "error": "query timed out"})

    answer = client_answering(handler).query("up", NOW)
    assert answer.error == "Prometheus refused the query (HTTP 503, timeout): query timed out"


# --- the rule itself ---------------------------------------------------------------------------------------------


def test_placeholders_are_replaced_inside_each_kind_of_promql_string_with_escaping() -> None:
    query = "a{x=\"{environment}\", y='{environment}', z=`{environment}`}"
    assert [quote for _, quote in placeholders(query)] == ['"', "'", "`"]
    rule = prometheus_rule(query=query)
    assert rule.query_for("production") == "a{x=\"production\", y='production', z=`production`}"
    assert rule.query_for('o"k') == 'a{x="o\\"k", y=\'o"k\', z=`o"k`}'


def test_a_prometheus_rule_survives_storage_and_event_rules_are_stored_as_before() -> None:
    rule = prometheus_rule(samples_query=SAMPLES, min_samples=50, hold=timedelta(minutes=1), flag="demo-flag")
    assert rule_from_json("demo", rule_to_json(rule)) == rule
    event_rule = Rule(name="e", pipeline="demo", kind=RuleKind.RATIO, event="x", op=Comparison.GT, threshold="0.1")
    assert not {"source", "query", "samples_query"} & set(rule_to_json(event_rule))
    assert rule_from_json("demo", rule_to_json(event_rule)).source is RuleSource.EVENTS


def test_the_condition_states_the_query_threshold_and_sample_floor() -> None:
    rule = prometheus_rule(op=Comparison.GE, samples_query=SAMPLES, min_samples=50, hold=timedelta(minutes=1))
    assert rule.condition() == (
        f"prometheus `{QUERY}` >= 0.03 with at least 50 samples by prometheus `{SAMPLES}` for 1m"
    )


# --- settings ----------------------------------------------------------------------------------------------------


def test_prometheus_settings_are_read_and_checked() -> None:
    settings = Settings.from_env(
        {"CONTROLPLANE_PROMETHEUS_URL": "http://127.0.0.1:9090", "CONTROLPLANE_PROMETHEUS_QUERY_TIMEOUT_SECONDS": "0.5"}
    )
    assert (settings.prometheus_url, settings.prometheus_query_timeout_seconds) == ("http://127.0.0.1:9090", 0.5)
    assert Settings.from_env({}).prometheus_url == ""
    with pytest.raises(SettingsError, match="CONTROLPLANE_PROMETHEUS_URL must be an http"):
        Settings.from_env({"CONTROLPLANE_PROMETHEUS_URL": "127.0.0.1:9090"})
    with pytest.raises(SettingsError, match="CONTROLPLANE_PROMETHEUS_QUERY_TIMEOUT_SECONDS must be positive"):
        Settings.from_env({"CONTROLPLANE_PROMETHEUS_QUERY_TIMEOUT_SECONDS": "0"})


# --- the definition syntax ---------------------------------------------------------------------------------------

ENVIRONMENTS = ("dev", "qa", "staging", "production")
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
          environments:
            - environment: production
              stages:
                - {percentage: 10, guards: [prom-error-ratio]}
                - {percentage: 100}
    events:
      - name: demo_request
        outcomes: [ok, error]
    rules:
      - name: prom-error-ratio
        source: prometheus
        query: |
          sum(rate(http_requests_total{environment="{environment}", code=~"5.."}[5m]))
            / sum(rate(http_requests_total{environment="{environment}"}[5m]))
        samples_query: sum(increase(http_requests_total{environment="{environment}"}[5m]))
        min_samples: 50
        op: ">="
        threshold: 0.05
        for: 1m
        keep_firing_for: 2m
        flag: demo-flag
        environments: [staging, production]
      - name: error-streak
        kind: streak
        event: demo_request
        outcome: error
        op: ">="
        threshold: 3
        window: 0
    """
)


def parse(text: str) -> Any:
    return parse_definition(text, source="demo.yaml", environments=ENVIRONMENTS)


def edited(old: str, new: str, text: str = VALID) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_a_prometheus_rule_is_loaded_with_its_queries_and_no_window() -> None:
    rule = parse(VALID).rules[0]
    assert (rule.source, rule.kind, rule.event, rule.window) == (
        RuleSource.PROMETHEUS,
        RuleKind.QUERY,
        "",
        timedelta(0),
    )
    assert rule.query.startswith("sum(rate(") and rule.query.endswith("[5m]))")  # the block's newline dropped
    assert rule.samples_query == 'sum(increase(http_requests_total{environment="{environment}"}[5m]))'
    assert (rule.op, rule.threshold, rule.min_samples) == (Comparison.GE, "0.05", 50)
    assert (rule.hold, rule.keep_firing_for) == (timedelta(minutes=1), timedelta(minutes=2))
    assert (rule.flag, rule.environments) == ("demo-flag", ("staging", "production"))
    assert parse(VALID).rules[1].source is RuleSource.EVENTS


def line_of(text: str, needle: str) -> int:
    assert text.count(needle) == 1, needle
    return text[: text.index(needle)].count("\n") + 1


@pytest.mark.parametrize(
    ("old", "new", "path", "line_text", "reason"),
    [
        ("source: prometheus", "source: promql", "rules[0].source", "source: promql", "`events` (the default"),
        (
            "    source: prometheus\n",
            "    source: prometheus\n    kind: ratio\n",
            "rules[0].kind",
            "kind: ratio",
            "has no `kind`",
        ),
        (
            "    source: prometheus\n",
            "    source: prometheus\n    event: demo_request\n",
            "rules[0].event",
            "event: demo_request\n    query",
            "has no `event`",
        ),
        ("    for: 1m\n", "    window: 5m\n", "rules[0].window", "window: 5m", "put the range in the query"),
        ("    for: 1m\n", "    where: {outcome: [error]}\n", "rules[0].where", "where:", "label matchers"),
        (
            "    for: 1m\n",
            "    numerator: {outcome: [error]}\n",
            "rules[0].numerator",
            "numerator:",
            "ratio in the query",
        ),
        ("    for: 1m\n", "    per: 1m\n", "rules[0].per", "per: 1m", "rate in the query"),
        (
            "    for: 1m\n",
            "    outcome: error\n    for: 1m\n",
            "rules[0].outcome",
            "outcome: error\n    for",
            "has no `outcome`",
        ),
        (
            "    for: 1m\n",
            "    canary_variant: 'on'\n",
            "rules[0].canary_variant",
            "canary_variant",
            "compare variants",
        ),
        ("    flag: demo-flag\n", "    flag: nope\n", "rules[0].flag", "flag: nope", "unknown flag `nope`"),
        (
            "[staging, production]",
            "[staging, prod]",
            "rules[0].environments[1]",
            "[staging, prod]",
            "unknown environment `prod`",
        ),
    ],
)
def test_event_fields_on_a_prometheus_rule_are_refused_on_their_line(
    old: str, new: str, path: str, line_text: str, reason: str
) -> None:
    text = edited(old, new)
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert (caught.value.path, caught.value.line) == (path, line_of(text, line_text)), caught.value
    assert reason in caught.value.reason


QUERY_LINES = """    query: |
      sum(rate(http_requests_total{environment="{environment}", code=~"5.."}[5m]))
        / sum(rate(http_requests_total{environment="{environment}"}[5m]))
"""


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ('""', "`query` is empty"),
        ("'   '", "`query` is empty"),
        (
            "sum(up)",
            'must select its environment with `{environment}` in a label value, e.g. `environment="{environment}"`',
        ),
        (
            "'up{environment=\"{{environment}}\"}'",
            "`{{environment}}` is not a placeholder here: the only one is `{environment}`",
        ),
        ("'up{environment=\"{{ .Values.env }}\"}'", "`{{ .Values.env }}` is not a placeholder here"),
        ("'up{environment=\"${environment}\"}'", "`${environment}` is not a placeholder here"),
        ("'up{environment=\"$environment\"}'", "`$environment` is not a placeholder here"),
        ("'up{environment=\"{env}\"}'", "`{env}` is not a placeholder here"),
        ("'up{environment=\"{ environment }\"}'", "`{ environment }` is not a placeholder here"),
        ("'up_{environment}'", "must be inside a quoted label value"),
        ("'sum(rate(x[$__rate_interval]))'", "`$__rate_interval` is not a placeholder here"),
    ],
)
def test_a_query_must_select_its_environment_with_the_one_placeholder(query: str, reason: str) -> None:
    text = edited(QUERY_LINES, f"    query: {query}\n")
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert (caught.value.path, caught.value.line) == ("rules[0].query", line_of(text, f"query: {query}"))
    assert reason in caught.value.reason, caught.value.reason


def test_the_samples_query_is_checked_like_the_query() -> None:
    text = edited("[5m]))\n    min_samples", "[5m]))  # {env}\n    min_samples")  # a YAML comment: not the query
    assert parse(text).rules[0].samples_query.endswith("[5m]))")
    text = edited(
        'samples_query: sum(increase(http_requests_total{environment="{environment}"}[5m]))', "samples_query: sum(up)"
    )
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert (caught.value.path, caught.value.line) == ("rules[0].samples_query", line_of(text, "samples_query:"))
    assert "`samples_query` must select its environment" in caught.value.reason


def test_a_missing_query_is_refused_on_the_rule() -> None:
    text = edited(QUERY_LINES, "")
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert caught.value.path == "rules[0].query"
    assert caught.value.line == line_of(text, "- name: prom-error-ratio")
    assert "a prometheus rule needs `query`" in caught.value.reason


def test_min_samples_and_the_samples_query_go_together() -> None:
    text = edited("    min_samples: 50\n", "")
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert (caught.value.path, caught.value.line) == ("rules[0].samples_query", line_of(text, "samples_query:"))
    assert "set min_samples (at least 1)" in caught.value.reason

    text = edited('    samples_query: sum(increase(http_requests_total{environment="{environment}"}[5m]))\n', "")
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert (caught.value.path, caught.value.line) == ("rules[0].min_samples", line_of(text, "min_samples: 50"))
    assert "counts its samples with `samples_query`" in caught.value.reason


@pytest.mark.parametrize(
    ("old", "new", "path", "line_text", "reason"),
    [
        (
            "    kind: streak\n",
            "    kind: streak\n    query: up\n",
            "rules[1].query",
            "query: up",
            "applies to `source: prometheus` rules",
        ),
        (
            "    kind: streak\n",
            "    kind: streak\n    samples_query: up\n",
            "rules[1].samples_query",
            "samples_query: up",
            "add `source: prometheus`",
        ),
        ("    kind: streak\n", "", "rules[1].kind", "- name: error-streak", "required field `kind` is missing"),
        (
            "    event: demo_request\n    outcome",
            "    outcome",
            "rules[1].event",
            "- name: error-streak",
            "required field `event` is missing",
        ),
        (
            "    kind: streak\n",
            "    kind: query\n",
            "rules[1].kind",
            "kind: query",
            "is written `source: prometheus` with a `query`",
        ),
        (
            "    kind: streak\n",
            "    kind: gauge\n",
            "rules[1].kind",
            "kind: gauge",
            "kind must be one of ratio, rate, mean, streak, cohort",
        ),
    ],
)
def test_an_event_rule_is_refused_prometheus_fields_and_needs_kind_and_event(
    old: str, new: str, path: str, line_text: str, reason: str
) -> None:
    text = edited(old, new)
    with pytest.raises(DefinitionError) as caught:
        parse(text)
    assert (caught.value.path, caught.value.line) == (path, line_of(text, line_text)), caught.value
    assert reason in caught.value.reason
