"""Open-loop pacing: when each request of a run is due, and a pacer that keeps to that schedule.

The schedule is fixed by the rate alone (request ``i`` at ``i / rate`` seconds), so a slow server never slows it:
requests are handed off to workers and the pacer moves on. Time is injected (``clock``, ``sleep``), so tests
drive a run on a fake clock.
"""

from __future__ import annotations

import heapq
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

__all__ = ["due_times", "merge_schedules", "pace", "request_count"]

T = TypeVar("T")
#: A wait this close to its end is over: sleeping a few ulps of a large clock value might never move it.
_EARLY_ENOUGH = 1e-6


def request_count(rate: float, duration: float) -> int:
    """How many requests a run of ``duration`` seconds at ``rate`` per second sends: those due before its end."""
    if rate <= 0 or duration <= 0:
        return 0
    # Due times i / rate for i = 0.. while i / rate < duration; the epsilon keeps 20/s for 1 s at 20, not 21.
    return max(0, math.ceil(rate * duration - 1e-9))


def due_times(rate: float, duration: float) -> Iterator[float]:
    """Seconds from the start at which each request is due: 0, 1/rate, 2/rate, ... before ``duration``."""
    for index in range(request_count(rate, duration)):
        yield index / rate


def merge_schedules(*schedules: Iterable[tuple[float, T]]) -> Iterator[tuple[float, T]]:
    """Several (due, item) schedules, each in time order, as one in time order (ties keep the argument order)."""
    keyed = [_tagged(position, schedule) for position, schedule in enumerate(schedules)]
    for due, _, item in heapq.merge(*keyed, key=lambda entry: (entry[0], entry[1])):
        yield due, item


def _tagged(position: int, schedule: Iterable[tuple[float, T]]) -> Iterator[tuple[float, int, T]]:
    for due, item in schedule:
        yield due, position, item


def pace(
    schedule: Iterable[tuple[float, T]],
    dispatch: Callable[[float, T], None],
    *,
    duration: float,
    clock: Callable[[], float],
    sleep: Callable[[float], object],
    stop: threading.Event,
    tick: Callable[[float], None] | None = None,
    tick_every: float = 1.0,
) -> float:
    """Dispatch each item when it is due, then wait out the run; return the seconds the run took (stopped or not).

    ``dispatch(due, item)`` must not block (hand the work to a pool). ``tick(elapsed)`` is called about every
    ``tick_every`` seconds (progress), from this thread. ``stop`` ends the run early.
    """
    start = clock()
    next_tick = tick_every

    def wait_until(offset: float) -> bool:
        """Sleep until ``offset`` seconds after the start (ticking on the way); False when stopped."""
        nonlocal next_tick
        while True:
            elapsed = clock() - start
            if tick is not None and elapsed >= next_tick - _EARLY_ENOUGH:
                tick(elapsed)
                next_tick = (round(elapsed / tick_every) + 1) * tick_every
            if stop.is_set():
                return False
            if elapsed >= offset - _EARLY_ENOUGH:
                return True
            target = min(offset, next_tick) if tick is not None else offset
            sleep(max(0.0, target - elapsed))

    for due, item in schedule:
        if due >= duration or not wait_until(due):
            break
        dispatch(due, item)
    wait_until(duration)
    return clock() - start
