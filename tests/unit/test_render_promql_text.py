"""Unit tests of the PromQL text the rendered rule files and dashboards are written with
(controlplane.render.promql_text): string literals, matchers, selectors, aggregations and durations."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.render.promql_names import vector_selectors
from controlplane.render.promql_text import (
    duration,
    escape_string,
    matcher,
    per_minute,
    quantile,
    selector,
    string_literal,
    sum_rate,
)
from controlplane.render.promtool import series_name


@pytest.mark.parametrize(("text", "literal"), [
    ("plain", '"plain"'), ('a"b', '"a\\"b"'), ("back\\slash", '"back\\\\slash"'), ("it's", '"it\'s"'),
])  # fmt: skip
def test_string_literals_escape_backslashes_and_double_quotes(text: str, literal: str) -> None:
    assert string_literal(text) == literal
    (read,) = vector_selectors(f"x{{label={literal}}}")
    assert read.matchers[0].value == text  # the tokenizer reads the value back unchanged


def test_a_single_quoted_string_escapes_its_own_quote() -> None:
    assert escape_string('it\'s \\ "this"', quote="'") == 'it\\\'s \\\\ "this"'


def test_a_matcher_is_exact_for_one_value_and_an_anchored_alternation_for_several() -> None:
    assert matcher("outcome", ["error"]) == 'outcome="error"'
    assert matcher("status_class", ["5xx", "4xx", "4xx"]) == 'status_class=~"4xx|5xx"'
    assert matcher("content_type", ["image/x.y+z", "a"]) == 'content_type=~"a|image/x\\\\.y\\\\+z"'


def test_selectors_and_aggregations() -> None:
    counter = selector("x_total", matcher("pipeline", ["p"]), 'environment=~"$environment"')

    assert selector("x_total") == "x_total"
    assert counter == 'x_total{pipeline="p", environment=~"$environment"}'
    assert sum_rate("x_total") == "sum(rate(x_total[$__rate_interval]))"
    assert per_minute("x_total", ["a", "b"]) == "sum by (a, b) (rate(x_total[$__rate_interval])) * 60"
    assert quantile(0.95, "x_bucket", ["variant"]) == (
        "histogram_quantile(0.95, sum by (le, variant) (rate(x_bucket[$__rate_interval])))"
    )


@pytest.mark.parametrize(("value", "written"), [
    (90, "90s"), (300, "5m"), (5400, "90m"), (7200, "2h"), (86400, "1d"), (timedelta(hours=36), "36h"),
])  # fmt: skip
def test_durations_of_whole_seconds_or_timedeltas(value: int | timedelta, written: str) -> None:
    assert duration(value) == written


@pytest.mark.parametrize("value", [0, -60, timedelta(seconds=1.5), timedelta(0)])
def test_durations_that_are_not_whole_positive_seconds_are_refused(value: int | timedelta) -> None:
    with pytest.raises(ValueError, match="positive"):
        duration(value)


def test_promtool_input_series_write_their_values_as_string_literals() -> None:
    assert series_name("x_total", {"route": "upload", "odd": 'a"b'}) == 'x_total{route="upload", odd="a\\"b"}'
