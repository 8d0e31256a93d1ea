"""A guard's values over its stage, drawn as a small inline SVG: no chart library, nothing loaded by the browser.

The chart is plain data (coordinates as strings) that the template writes into ``<svg>``; the scale always includes
the threshold, so a value far below it still shows how far below.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

__all__ = ["HEIGHT", "WIDTH", "GuardChart", "GuardPoint", "draw_guard_chart"]

WIDTH = 320
HEIGHT = 80
_PAD = 4


@dataclass(frozen=True, slots=True)
class GuardPoint:
    """One evaluation of a guard: when, the value measured (None without data) and whether it breached."""

    at: datetime
    value: float | None
    breached: bool = False


@dataclass(frozen=True, slots=True)
class GuardChart:
    """What the template draws: the value line (``points``, "x,y x,y"), breached points, the threshold line."""

    points: str
    breaches: tuple[tuple[float, float], ...]
    threshold_y: float | None
    top: float
    count: int

    @property
    def empty(self) -> bool:
        """True when no evaluation had a value to draw."""
        return not self.points


def draw_guard_chart(
    points: Sequence[GuardPoint], *, start: datetime, end: datetime, threshold: float | None
) -> GuardChart:
    """Scale ``points`` between ``start`` and ``end`` (x) and 0 and the largest of values and threshold (y)."""
    valued = [point for point in points if point.value is not None]
    highest = max([point.value for point in valued if point.value is not None] + [threshold or 0.0, 0.0])
    top = highest * 1.15 if highest > 0 else 1.0
    span = max((end - start).total_seconds(), 1e-9)

    def x(at: datetime) -> float:
        share = min(max((at - start).total_seconds() / span, 0.0), 1.0)
        return round(_PAD + share * (WIDTH - 2 * _PAD), 1)

    def y(value: float) -> float:
        return round(HEIGHT - _PAD - (value / top) * (HEIGHT - 2 * _PAD), 1)

    coordinates = [(x(point.at), y(point.value)) for point in valued if point.value is not None]
    breaches = tuple((x(point.at), y(point.value)) for point in valued if point.breached and point.value is not None)
    return GuardChart(
        points=" ".join(f"{cx},{cy}" for cx, cy in coordinates),
        breaches=breaches,
        threshold_y=y(threshold) if threshold is not None else None,
        top=top,
        count=len(valued),
    )
