"""Per-subject caps: one client must not move a guard. Pure functions from a rule, the windows' series and the
subjects' counts over the rule's window to the series the rule measures, each subject counted at most its cap.

An event may carry a subject, a hash of who it is about (the emitter hashes the user id it is given; ingest stores
how many events of each window's series carried each subject, ``telemetry_subjects``). A rule with
``per_subject_cap: N`` (ratio, rate and cohort kinds) counts, over its window, each subject's events in time order
until it reaches N; the events after that count neither in the numerator nor in the denominator (nor in a rate).
Only the events the rule selects (``where``) use up a subject's allowance. Within one 10-second window, when a
subject's allowance runs out part-way, what is left of it is split across the subject's series (outcomes, variants,
labels) by largest remainder, so every count stays an integer and the series keep their proportions; a tie goes
the same way at every evaluation (a hash of the subject, window and series). Events without a subject count as
before.

    capped(rule, summed, windows, subjects, now) -> (summed, windows)   what the evaluator calls before ``assess``

The cap is the same for both shapes the evaluator reads: ``summed`` (one series per outcome, variant and labels,
summed over the rule's window, as plain rules read) loses every event the cap drops in the window, and ``windows``
(one series per aggregation window, as sequential rules fold) loses in each window what the cap drops there, so
``measure``, ``assess`` and the sequential statistics run unchanged on capped series. A sequential rule folds a
window once, when it has closed, capped as the rule's window ending then counts it.

Only counts are capped: the values (``value_count``, ``value_sum``, ``value_sumsq``) are left as they were, and a
mean rule, which reads them, cannot declare a cap. A client that sends a new subject with each event is not
stopped, and the cap is per rule window, not per stage.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from controlplane.alerting.rules import Series, window_cutoff
from controlplane.catalog.rules import WINDOW_SIZE, Rule

__all__ = ["SubjectCount", "cap_summed", "cap_windows", "capped", "dropped"]

#: (variant, outcome, labels as sorted pairs): what tells one series of a window from another.
Identity = tuple[str, str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True, slots=True)
class SubjectCount:
    """How many events of one window's series (outcome, variant, labels) carried one subject."""

    start: datetime
    subject: str
    outcome: str
    variant: str
    labels: Mapping[str, str]
    count: int


def _identity(outcome: str, variant: str, labels: Mapping[str, str]) -> Identity:
    return variant, outcome, tuple(sorted(labels.items()))


def _split(allowance: int, rows: Sequence[tuple[Identity, int]], subject: str, start: datetime) -> list[int]:
    """``allowance`` (less than the rows' total) split over ``rows`` in proportion to their counts, by largest
    remainder: the floors, then one more to the rows with the largest remainders (ties by a stable hash)."""
    total = sum(count for _, count in rows)
    floors = [allowance * count // total for _, count in rows]
    left = allowance - sum(floors)
    if left:
        stamp = start.isoformat()

        def order(position: int) -> tuple[int, int]:
            identity, count = rows[position]
            tie = zlib.crc32(f"{subject}|{stamp}|{identity!r}".encode())
            return -(allowance * count % total), tie

        for position in sorted(range(len(rows)), key=order)[:left]:
            floors[position] += 1
    return floors


def dropped(
    rule: Rule, subjects: Iterable[SubjectCount], since: datetime, now: datetime
) -> dict[tuple[datetime, Identity], int]:
    """Per (window start, series), how many events ``rule``'s cap drops over the windows from ``since`` to ``now``:
    each subject's selected events count in time order up to the cap, none after. Empty for a rule without a cap."""
    cap = rule.per_subject_cap
    if cap is None:
        return {}
    # subject -> window start -> series -> events
    counted: dict[str, dict[datetime, dict[Identity, int]]] = {}
    totals: dict[str, int] = {}
    for item in subjects:
        if not since <= item.start <= now or not rule.where.admits(item.outcome, item.variant, item.labels):
            continue
        series = counted.setdefault(item.subject, {}).setdefault(item.start, {})
        identity = _identity(item.outcome, item.variant, item.labels)
        series[identity] = series.get(identity, 0) + item.count
        totals[item.subject] = totals.get(item.subject, 0) + item.count
    found: dict[tuple[datetime, Identity], int] = {}
    for subject, windows in counted.items():
        if totals[subject] <= cap:
            continue  # within its allowance: nothing to drop
        used = 0
        for start in sorted(windows):
            rows = sorted(windows[start].items())
            events = sum(count for _, count in rows)
            allowance = cap - used
            if events <= allowance:
                used += events
                continue
            kept = _split(allowance, rows, subject, start) if allowance > 0 else [0] * len(rows)
            used = cap
            for (identity, count), keep in zip(rows, kept, strict=True):
                if count > keep:
                    found[(start, identity)] = found.get((start, identity), 0) + count - keep
    return found


def _per_window(item: Series) -> Hashable:
    return item.start, _identity(item.outcome, item.variant, item.labels)


def _per_series(item: Series) -> Hashable:
    return _identity(item.outcome, item.variant, item.labels)


def _minus(series: Sequence[Series], drops: Mapping[Any, int], key: Callable[[Series], Hashable]) -> list[Series]:
    """``series`` less ``drops`` (keyed as ``key`` keys a series); a series left with no events goes."""
    left = dict(drops)
    result: list[Series] = []
    for item in series:
        found = key(item)
        drop = left.get(found, 0)
        if not drop:
            result.append(item)
            continue
        taken = min(drop, item.count)
        left[found] = drop - taken
        if item.count > taken:
            result.append(replace(item, count=item.count - taken))
    return result


def _summed(drops: Mapping[tuple[datetime, Identity], int]) -> dict[Identity, int]:
    summed: dict[Identity, int] = {}
    for (_, identity), count in drops.items():
        summed[identity] = summed.get(identity, 0) + count
    return summed


def cap_windows(
    rule: Rule,
    windows: Sequence[Series],
    subjects: Sequence[SubjectCount],
    now: datetime,
    *,
    window_size: timedelta = WINDOW_SIZE,
) -> Sequence[Series]:
    """``windows`` (one series per aggregation window) capped as ``capped`` caps them; the same object when nothing
    drops."""
    return capped(rule, (), windows, subjects, now, window_size=window_size)[1]


def cap_summed(
    rule: Rule,
    series: Sequence[Series],
    subjects: Sequence[SubjectCount],
    now: datetime,
    *,
    window_size: timedelta = WINDOW_SIZE,
) -> Sequence[Series]:
    """``series`` summed over ``rule``'s window capped as ``capped`` caps them; the same object when nothing drops."""
    return capped(rule, series, (), subjects, now, window_size=window_size)[0]


def capped(
    rule: Rule,
    summed: Sequence[Series],
    windows: Sequence[Series],
    subjects: Sequence[SubjectCount],
    now: datetime,
    *,
    window_size: timedelta = WINDOW_SIZE,
) -> tuple[Sequence[Series], Sequence[Series]]:
    """What ``rule`` measures at ``now``: ``summed`` and ``windows`` capped alike (see the module), or both as they
    are for a rule without a cap or when no subject is past it."""
    if rule.per_subject_cap is None or not subjects:
        return summed, windows
    since = window_cutoff(now, rule.window, window_size)
    drops = dropped(rule, subjects, since, now)
    if not drops:
        return summed, windows
    return _minus(summed, _summed(drops), _per_series), _minus(windows, drops, _per_window)
