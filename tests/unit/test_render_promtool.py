"""Unit tests of what the generated promtool tests are written with: Prometheus' template functions as Python
(for expected annotations) and promtool's input-series notation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.render.promtool import (
    expand,
    humanize,
    humanize_duration,
    humanize_percentage,
    notation,
    series_name,
)


# Expected texts from prometheus/prometheus template/template_test.go (2.42).
@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0"), (1.0, "1"), (1234567.0, "1.235M"), (12345.0, "12.35k"), (0.00123, "1.23m"),
    (-1234567.0, "-1.235M"), (0.5, "500m"), (3.0, "3"), (float("inf"), "+Inf"), (float("nan"), "NaN"),
])  # fmt: skip
def test_humanize_writes_4_significant_digits_with_an_si_prefix(value: float, text: str) -> None:
    assert humanize(value) == text


@pytest.mark.parametrize(("value", "text"), [
    (0.0, "0s"), (0.1, "100ms"), (0.0001, "100us"), (1.0, "1s"), (5.99, "5.99s"), (60.0, "1m 0s"),
    (3600.0, "1h 0m 0s"), (86400.0, "1d 0h 0m 0s"), (90061.0, "1d 1h 1m 1s"), (-3.5, "-3.5s"),
])  # fmt: skip
def test_humanize_duration_writes_days_hours_minutes_and_seconds(value: float, text: str) -> None:
    assert humanize_duration(value) == text


@pytest.mark.parametrize(("value", "text"), [(0.0, "0%"), (0.03, "3%"), (0.1234567, "12.35%"), (1.0, "100%")])
def test_humanize_percentage_writes_a_share_as_a_percentage(value: float, text: str) -> None:
    assert humanize_percentage(value) == text


def test_annotations_expand_labels_values_and_escaped_braces() -> None:
    template = 'rule in {{ $labels.environment }}: {{ $value | humanizePercentage }} {{ "{{" }} x'

    assert expand(template, {"environment": "qa"}, 0.05) == "rule in qa: 5% {{ x"


def test_an_unknown_template_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown template action"):
        expand("{{ $value | printf }}", {}, 1.0)


def expanded(text: str) -> list[float | None]:
    """promtool's reading of the notation (promql/parser's series description), for the round trip."""
    values: list[float | None] = []
    for part in text.split():
        if match := re.fullmatch(r"_(?:x(\d+))?", part):
            values += [None] * (int(match[1] or 0) + 1)
        elif match := re.fullmatch(r"(-?[\d.e+-]+?)([+-])([\d.e+-]+)x(\d+)", part):
            start, step = float(match[1]), float(match[3]) * (1 if match[2] == "+" else -1)
            value = start
            values.append(value)
            for _ in range(int(match[4])):
                value += step
                values.append(value)
        else:
            values.append(float(part))
    return values


def test_runs_of_whole_numbers_are_written_short() -> None:
    assert notation([0.0, 5.0, 10.0, 15.0, 15.0, 15.0, 16.0]) == "0+5x3 15+0x1 16"
    assert notation([None, None, None, 1.0]) == "_x2 1"
    assert notation([0.5, 1.0, 1.5]) == "0.5 1 1.5"  # promtool would add 0.5 up in floats: written out instead
    assert notation([10.0, 7.0, 4.0]) == "10-3x2"


@given(
    st.lists(
        st.one_of(st.none(), st.integers(min_value=-(10**6), max_value=10**6).map(float), st.floats(-1e6, 1e6)),
        max_size=30,
    )
)
def test_the_notation_reads_back_as_the_very_same_floats(values: list[float | None]) -> None:
    assert expanded(notation(values)) == values


def test_series_names_keep_label_order() -> None:
    assert series_name("up", {"job": "a", "env": "b"}) == 'up{job="a", env="b"}'
