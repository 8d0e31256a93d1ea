"""Writing PromQL text: string literals, label matchers, selectors, durations and the aggregations the rendered
rule files and dashboards use. The one place that escapes a PromQL string.

    string_literal('a"b')                         -> "a\\"b"
    matcher("status_class", ["5xx", "4xx"])       -> status_class=~"4xx|5xx"
    selector("x_total", 'pipeline="p"')           -> x_total{pipeline="p"}
    sum_rate("x_total", ["variant"])              -> sum by (variant) (rate(x_total[$__rate_interval]))
    duration(timedelta(minutes=90))               -> 90m

Reading PromQL back (which metrics an expression reads) is ``promql_names``' job.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from controlplane.catalog.rules import escape_string, format_duration

__all__ = [
    "RATE_INTERVAL",
    "LabelMatch",
    "by",
    "duration",
    "escape_string",
    "matcher",
    "matchers",
    "paren",
    "per_minute",
    "quantile",
    "selector",
    "string_literal",
    "sum_rate",
]

#: Grafana's range for rate(): at least four scrape intervals, whatever the dashboard's resolution.
RATE_INTERVAL = "$__rate_interval"
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def string_literal(text: str) -> str:
    """A PromQL double-quoted string literal."""
    return f'"{escape_string(text)}"'


def _regex_literal(value: str) -> str:
    # Prometheus anchors regex matchers (RE2) at both ends; a value must match itself, dots and pluses included.
    return "".join(f"\\{char}" if char in _REGEX_SPECIAL else char for char in value)


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """One label matcher: the label is one of ``values`` (or, with ``negate``, none of them)."""

    label: str
    values: frozenset[str]
    negate: bool = False

    def render(self) -> str:
        """``route="upload"``, ``status_class=~"4xx|5xx"``, ``environment!~"qa|staging"``."""
        ordered = sorted(self.values)
        if len(ordered) == 1:
            return f"{self.label}{'!=' if self.negate else '='}{string_literal(ordered[0])}"
        pattern = "|".join(_regex_literal(value) for value in ordered)
        return f"{self.label}{'!~' if self.negate else '=~'}{string_literal(pattern)}"


def matcher(label: str, values: Iterable[str]) -> str:
    """``label="x"`` for one value, ``label=~"x|y"`` (an exact alternation, sorted) for several."""
    return LabelMatch(label, frozenset(values)).render()


def matchers(matches: Iterable[LabelMatch]) -> str:
    """``{a="x", b=~"y|z"}``, or nothing when there are none."""
    rendered = [match.render() for match in matches]
    return "{" + ", ".join(rendered) + "}" if rendered else ""


def selector(metric: str, *written: str) -> str:
    """``metric{matcher, ...}`` from matchers already written (``matcher(...)``, ``'state="firing"'``)."""
    return f"{metric}{{{', '.join(written)}}}" if written else metric


def by(labels: Sequence[str]) -> str:
    """`` by (a, b)``, or nothing without labels."""
    return f" by ({', '.join(labels)})" if labels else ""


def sum_rate(series: str, labels: Sequence[str] = ()) -> str:
    """The per-second rate of a counter's ``series`` over ``$__rate_interval``, summed by ``labels``."""
    rate = f"rate({series}[{RATE_INTERVAL}])"
    return f"sum{by(labels)} ({rate})" if labels else f"sum({rate})"


def per_minute(series: str, labels: Sequence[str] = ()) -> str:
    """``sum_rate`` per minute."""
    return f"{sum_rate(series, labels)} * 60"


def quantile(q: float, buckets: str, labels: Sequence[str] = ()) -> str:
    """The ``q`` quantile of a histogram from its ``_bucket`` series, per ``labels``."""
    return f"histogram_quantile({q}, {sum_rate(buckets, ('le', *labels))})"


def paren(expr: str) -> str:
    """``expr`` in parentheses, on its own indented lines when it spans several."""
    if "\n" not in expr:
        return f"({expr})"
    return "(\n" + textwrap.indent(expr, "  ") + "\n)"


def duration(value: timedelta | int) -> str:
    """A Prometheus duration (of a timedelta, or of whole seconds) in its largest whole unit: ``90s``, ``5m``,
    ``1h``, ``3d``; refused when not a whole, positive number of seconds."""
    total = value.total_seconds() if isinstance(value, timedelta) else value
    if int(total) <= 0 or int(total) != total:
        raise ValueError(f"{value} is not a whole, positive number of seconds")
    return format_duration(timedelta(seconds=total))
