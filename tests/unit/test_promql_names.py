"""Metric names and vector selectors read out of PromQL by the small tokenizer in controlplane.render.promql_names."""

from __future__ import annotations

import pytest

from controlplane.render.promql_names import Matcher, PromQLSyntaxError, VectorSelector, metric_names, vector_selectors


def test_a_bare_metric_is_its_own_name() -> None:
    assert metric_names("up") == ["up"]
    assert vector_selectors("up") == [VectorSelector("up")]


def test_functions_are_not_metrics_and_the_innermost_call_is_recorded() -> None:
    selectors = vector_selectors('rate(http_request_events_total{route="upload"}[$__rate_interval])')

    assert selectors == [
        VectorSelector(
            "http_request_events_total", (Matcher("route", "=", "upload"),), call="rate", range="$__rate_interval"
        )
    ]


def test_aggregations_with_grouping_before_or_after_the_parentheses() -> None:
    before = vector_selectors("sum by (le, variant) (rate(x_bucket[5m]))")
    after = vector_selectors("sum(rate(x_bucket[5m])) by (le)")
    bare = vector_selectors("max without (instance) (controlplane_rollout_stage)")

    assert [(s.metric, s.call) for s in before] == [("x_bucket", "rate")]
    assert [(s.metric, s.call) for s in after] == [("x_bucket", "rate")]
    assert [(s.metric, s.call) for s in bare] == [("controlplane_rollout_stage", "max")]


def test_label_names_in_matchers_and_grouping_lists_are_not_metrics() -> None:
    expr = (
        'sum by (environment) (rate(a_total{environment=~"$environment", outcome!="ok"}[1m]))'
        " / on (environment) group_left (flag) sum by (environment) (rate(b_total[1m]))"
    )

    assert metric_names(expr) == ["a_total", "b_total"]


def test_keywords_numbers_and_variables_are_not_metrics() -> None:
    expr = (
        "sum(rate(a_total[$__rate_interval])) * 60 * $price_per_token > bool 0.5 and on () vector(1)"
        " or b offset 5m unless c @ start() + Inf - NaN + 0x1f + 1e-3 + ${var:regex}"
    )

    assert metric_names(expr) == ["a_total", "b", "c"]


def test_histogram_quantile_reads_the_bucket_series() -> None:
    expr = 'histogram_quantile(0.95, sum by (le) (rate(ai_run_latency_seconds_bucket{pipeline="ai"}[5m])))'

    (selector,) = vector_selectors(expr)

    assert (selector.metric, selector.call, selector.range) == ("ai_run_latency_seconds_bucket", "rate", "5m")
    assert selector.matcher("pipeline") == Matcher("pipeline", "=", "ai")
    assert selector.matcher("environment") is None


def test_strings_with_escapes_and_names_inside_them_are_skipped() -> None:
    expr = 'label_replace(up{job="a\\"b}"}, "dst", "not_a_metric $1", "src", "(.*)")'

    (selector,) = vector_selectors(expr)

    assert selector.metric == "up"
    assert selector.matchers == (Matcher("job", "=", 'a"b}'),)


def test_a_selector_by_name_matcher_and_metric_names_with_colons() -> None:
    assert metric_names('{__name__="controlplane_alert_state", state="firing"}') == ["controlplane_alert_state"]
    assert metric_names("job:http_requests:rate5m > 3") == ["job:http_requests:rate5m"]


def test_a_counter_outside_rate_is_seen_with_its_real_enclosing_call() -> None:
    (selector,) = vector_selectors("sum(controlplane_rollbacks_total)")

    assert (selector.call, selector.range) == ("sum", None)
    assert vector_selectors("(x_total)")[0].call is None


def test_a_subquery_range_belongs_to_no_selector() -> None:
    (selector,) = vector_selectors("max_over_time(rate(x_total[1m])[10m:1m])")

    assert (selector.call, selector.range) == ("rate", "1m")


def test_each_name_is_listed_once_in_order_of_appearance() -> None:
    assert metric_names("b / a + b * (c - a)") == ["b", "a", "c"]


def test_comments_are_skipped() -> None:
    assert metric_names("a # b\n + c") == ["a", "c"]


@pytest.mark.parametrize(
    "expr",
    ["rate(x[5m]", "x)", 'x{job="a}', "x{job}", "x[5m", "a $ b"],
    ids=["open-paren", "close-paren", "string", "matcher", "range", "dollar"],
)
def test_unreadable_expressions_are_refused(expr: str) -> None:
    with pytest.raises(PromQLSyntaxError):
        vector_selectors(expr)
