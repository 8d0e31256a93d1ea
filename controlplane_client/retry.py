"""Retrying with backoff: the one delay arithmetic and the one ``Retry-After`` reader of the code base.

    backoff_delay(n, base, cap) = jitter * min(cap, base * 2 ** (n - 1))      jitter in [0, 1]

Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the delay after the n-th failure in a row is
uniform below a ceiling that doubles from ``base`` up to ``cap``, which spreads out clients that failed together.
A caller that wants the plain exponential delay (no jitter) passes a jitter of 1: the ceiling itself.
"""

from __future__ import annotations

import math
import random as random_module
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["backoff_delay", "retry_after_seconds"]

# 2.0 ** 62 is still exact and far past any cap: larger failure counts change nothing but risk overflow.
_MAX_EXPONENT = 62


def backoff_delay(
    failures: int, *, base: float, cap: float, random: Callable[[], float] = random_module.random
) -> float:
    """Seconds to wait after ``failures`` failures in a row: ``random()`` (clamped to [0, 1]) times the ceiling.

    The ceiling is ``min(cap, base * 2 ** (failures - 1))``: ``base`` after the first failure, doubling after each
    further one, never above ``cap``.
    """
    ceiling: float = min(cap, base * 2.0 ** min(max(failures - 1, 0), _MAX_EXPONENT))
    return min(max(random(), 0.0), 1.0) * ceiling


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds; None when absent or unreadable.

    Either delay-seconds (a non-negative finite number) or an HTTP date, read against ``now`` (the current time when
    not given; a date already past is 0 seconds). A negative, infinite or NaN number, or a date without a zone, is
    unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, now)
    return seconds if seconds >= 0 and math.isfinite(seconds) else None


def _seconds_until(text: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now if now is not None else datetime.now(UTC))).total_seconds())
