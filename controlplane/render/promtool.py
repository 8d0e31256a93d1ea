"""What promtool unit tests need besides the rules: input series in promtool's notation, a mirror of Prometheus'
alert states (``for``, ``keep_firing_for``) and of the template functions annotations use.

The mirror is what lets a generated test name the exact evaluation at which an alert starts or stops firing, and
the exact text of its annotations; promtool then checks the real rule files against it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from controlplane.render.promql_text import selector, string_literal

__all__ = [
    "AlertState",
    "InputSeries",
    "expand",
    "humanize",
    "humanize_duration",
    "humanize_percentage",
    "notation",
    "series_name",
    "simulate",
]


# --- Prometheus' template functions (template/template.go, 2.42), for expected annotations ----------------------


def _g4(value: float) -> str:
    """Go's ``%.4g``: Python's for finite numbers (shortest form, two-digit exponent); Go's words otherwise."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return "%.4g" % value  # noqa: UP031 - the format Go writes, said the same way


def humanize(value: float) -> str:
    """``humanize``: 4 significant digits with an SI prefix (1.5k, 72.16m)."""
    if value == 0 or math.isnan(value) or math.isinf(value):
        return _g4(value)
    if abs(value) >= 1:
        prefix = ""
        for candidate in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(value) < 1000:
                break
            prefix = candidate
            value /= 1000
        return _g4(value) + prefix
    prefix = ""
    for candidate in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix = candidate
        value *= 1000
    return _g4(value) + prefix


def humanize_percentage(value: float) -> str:
    """``humanizePercentage``: a share as a percentage with 4 significant digits."""
    return _g4(value * 100) + "%"


def humanize_duration(value: float) -> str:
    """``humanizeDuration``: seconds as ``1h 2m 3s``, or ``5.99s``, or ``500ms``."""
    if math.isnan(value) or math.isinf(value):
        return _g4(value)
    if value == 0:
        return _g4(value) + "s"
    if abs(value) >= 1:
        sign = "-" if value < 0 else ""
        value = abs(value)
        whole = int(value)
        seconds, minutes, hours, days = whole % 60, whole // 60 % 60, whole // 3600 % 24, whole // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(value)}s"
    prefix = ""
    for candidate in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1:
            break
        prefix = candidate
        value *= 1000
    return f"{_g4(value)}{prefix}s"


_FUNCTIONS: Mapping[str, Callable[[float], str]] = {
    "humanize": humanize,
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
}
_ACTION = re.compile(r"\{\{(?P<action>.*?)\}\}")
_LABEL = re.compile(r" \$labels\.(?P<label>\w+) ")
_VALUE = re.compile(r" \$value \| (?P<function>\w+) ")
_LITERAL = re.compile(r' "(?P<literal>[^"]*)" ')


def expand(template: str, labels: Mapping[str, str], value: float) -> str:
    """A rendered annotation as Prometheus expands it; only the actions the renderer writes are known."""

    def action(match: re.Match[str]) -> str:
        text = match["action"]
        if found := _LABEL.fullmatch(text):
            return labels.get(found["label"], "")
        if (found := _VALUE.fullmatch(text)) and found["function"] in _FUNCTIONS:
            return _FUNCTIONS[found["function"]](value)
        if found := _LITERAL.fullmatch(text):
            return found["literal"]
        raise ValueError(f"unknown template action {match[0]!r} in {template!r}")

    return _ACTION.sub(action, template)


# --- input series -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputSeries:
    """One input series of a test: a sample per step from time 0 (None: no sample then)."""

    metric: str
    labels: Mapping[str, str]
    values: Sequence[float | None]

    def written(self) -> dict[str, str]:
        """The series as a test file lists it."""
        return {"series": series_name(self.metric, self.labels), "values": notation(self.values)}


def series_name(metric: str, labels: Mapping[str, str]) -> str:
    """``metric{a="x", b="y"}`` with the labels in the order given (each value a PromQL string literal)."""
    return selector(metric, *(f"{name}={string_literal(value)}" for name, value in labels.items()))


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def notation(values: Sequence[float | None]) -> str:
    """promtool's expanding notation: ``0+20x10 201+1x9``, ``_x4``; runs only of whole numbers, which it adds
    up exactly (anything else is written sample by sample, so Prometheus reads the very floats the test expects)."""
    parts: list[str] = []
    index = 0
    while index < len(values):
        first = values[index]
        end = index + 1
        if first is None:
            while end < len(values) and values[end] is None:
                end += 1
            parts.append("_" if end - index == 1 else f"_x{end - index - 1}")
            index = end
            continue
        if first.is_integer() and end < len(values):
            following = values[end]
            if following is not None and following.is_integer():
                step = following - first
                while end < len(values):
                    current = values[end]
                    if current is None or current - values[end - 1] != step:  # type: ignore[operator]
                        break
                    end += 1
        count = end - index
        if count == 1:
            parts.append(_number(first))
        else:
            step = values[index + 1] - first  # type: ignore[operator]
            sign = "+" if step >= 0 else "-"
            parts.append(f"{_number(first)}{sign}{_number(abs(step))}x{count - 1}")
        index = end
    return " ".join(parts)


# --- alert states ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertState:
    """One alert (one label set) at one evaluation: firing, and the value its annotations show."""

    firing: bool
    value: float | None


def simulate(
    readings: Sequence[float | None], *, step_seconds: int, hold_seconds: int, keep_seconds: int
) -> list[AlertState]:
    """Prometheus' alert states (rules/alerting.go, 2.42) at each evaluation, given the alert expression's value
    there (None: no result). Pending counts as not firing, as in promtool; a kept alert shows its last value."""
    states: list[AlertState] = []
    state, active_at, keep_since, value = "inactive", 0, None, None
    for index, reading in enumerate(readings):
        now = index * step_seconds
        if reading is not None:
            if state == "inactive":
                state, active_at = "pending", now
            keep_since, value = None, reading
            if state == "pending" and now - active_at >= hold_seconds:
                state = "firing"
        elif state == "firing" and keep_seconds:
            keep_since = now if keep_since is None else keep_since
            if now - keep_since >= keep_seconds:
                state, keep_since = "inactive", None
        else:
            state, keep_since = "inactive", None
        states.append(AlertState(state == "firing", value if state == "firing" else None))
    return states
