"""How much of each series a promtool test sends for each level of a rule's measured value, per rule kind:
healthy, just below, exactly at and just above the threshold, breaching, too few samples and just enough.

    levels["below"] == {"bad": 29, "good": 971}   a ratio of 0.03 one event below, per step
    None                                          no data gives that level exactly for this threshold

Rates are per step (``scenarios.cumulative`` sums them into counters); a role missing from a level has no series.
"""

from __future__ import annotations

import math
from fractions import Fraction

from controlplane.catalog.rules import Rule

__all__ = [
    "Levels",
    "cohort_levels",
    "mean_levels",
    "rate_levels",
    "ratio_levels",
    "sample_floor",
    "streak_levels",
]

#: Per level, each role's rate per step; None: no such level for this rule.
Levels = dict[str, dict[str, Fraction | None] | None]
#: Events per step in scope when a level is a share: fine enough to sit one event below a threshold.
_VOLUME = 1000


def sample_floor(rule: Rule) -> int:
    """The fewest samples the alert reads as a measurement: min_samples, and at least one."""
    return max(rule.min_samples, 1)


def _volume(rule: Rule, window_steps: int, grid: int) -> int:
    """Events per step: at least _VOLUME, plenty above min_samples over a window, on the threshold's grid."""
    wanted = max(_VOLUME, math.ceil(4 * sample_floor(rule) / window_steps))
    return grid * math.ceil(wanted / grid)


def ratio_levels(rule: Rule, window_steps: int) -> Levels:
    """The levels of a ratio rule: ``bad`` and ``good`` events per step."""
    limit = Fraction(rule.threshold)
    volume = _volume(rule, window_steps, limit.denominator)
    at = limit * volume
    breach = min(Fraction(volume), 3 * at + volume // 10)
    levels: Levels = {
        "healthy": _split(Fraction(math.floor(at / 2)), volume),
        "below": _split(at - 1, volume) if at >= 1 else None,
        "above": _split(at + 1, volume) if at + 1 <= volume else None,
        "at": _split(at, volume),
        "breach": _split(breach, volume) if rule.op.holds(breach / volume, limit) else None,
        "few": None,
    }
    if rule.min_samples > 1:
        few = _few(rule, window_steps)
        levels["few"] = _split(few, few)  # every event bad, but too few of them
    if (enough := _just_enough(rule, window_steps)) is not None:
        levels["enough"] = _split(enough, enough)
    return levels


def _few(rule: Rule, window_steps: int) -> Fraction:
    """Events per step that make one fewer than min_samples over a window."""
    return Fraction(rule.min_samples - 1, window_steps)


def _just_enough(rule: Rule, window_steps: int) -> Fraction | None:
    """Events per step that make exactly min_samples over a window, when that is a whole number per step (so
    Prometheus counts exactly min_samples, not one rounding away)."""
    rate = Fraction(rule.min_samples, window_steps)
    return rate if rule.min_samples > 1 and rate.denominator == 1 else None


def _split(bad: Fraction, volume: Fraction | int) -> dict[str, Fraction | None]:
    return {"bad": Fraction(bad), "good": Fraction(volume) - bad}


def cohort_levels(rule: Rule, window_steps: int) -> Levels:
    """The levels of a cohort rule: bad and good events of the canary and baseline cohorts per step."""
    limit = Fraction(rule.threshold)
    volume = _volume(rule, window_steps, limit.denominator)
    margin = max(abs(limit) / 2, Fraction(1, 100))

    def level(difference: Fraction, *, baseline_errors: bool = True) -> dict[str, Fraction | None] | None:
        baseline = max(Fraction(0), -difference) + (Fraction(1, 100) if baseline_errors else 0)
        canary = baseline + difference
        if not 0 <= canary <= 1 or not 0 <= baseline <= 1:
            return None
        canary_bad, baseline_bad = math.floor(canary * volume), math.floor(baseline * volume)
        rates: dict[str, Fraction | None] = {
            "canary_bad": Fraction(canary_bad),
            "canary_good": Fraction(volume - canary_bad),
            "baseline_good": Fraction(volume - baseline_bad),
        }
        if baseline_bad:
            rates["baseline_bad"] = Fraction(baseline_bad)
        return rates

    breach = min(limit + max(2 * margin, Fraction(1, 10)), Fraction(1))
    levels = {
        # No bad baseline event at all, in the breach test: its share reads as 0, not as missing.
        "healthy": level(limit - margin, baseline_errors=False),
        "below": level(limit - Fraction(1, volume)),
        "above": level(limit + Fraction(1, volume)),
        "at": None,  # a difference of two shares is never exact in floats
        "breach": level(breach, baseline_errors=False) if rule.op.holds(breach, limit) else None,
        "few": None,
    }
    if rule.min_samples > 1 and rule.op.holds(Fraction(1), limit):
        # Every canary event bad, none of the baseline's: only the number of samples holds the alert back.
        few = _few(rule, window_steps)
        levels["few"] = {"canary_bad": few, "canary_good": Fraction(0), "baseline_good": Fraction(volume)}
        levels["few_baseline"] = {"canary_bad": Fraction(volume), "canary_good": Fraction(0), "baseline_good": few}
        if (enough := _just_enough(rule, window_steps)) is not None:
            levels["enough"] = {"canary_bad": enough, "canary_good": Fraction(0), "baseline_good": enough}
    return levels


def rate_levels(rule: Rule, window_steps: int) -> Levels:
    """The levels of a rate rule: events in scope (``hit``) per step."""
    limit = Fraction(rule.threshold)
    # Events in a window at exactly the threshold, then per step.
    at = limit * Fraction(int(rule.window.total_seconds()), int(rule.per.total_seconds()))

    def per_step(count: Fraction) -> dict[str, Fraction | None]:
        return {"hit": count / window_steps}

    levels: Levels = {
        "healthy": per_step(at / 2) if at > 0 else None,
        "below": per_step(at - 1 if at >= 2 else at / 2) if at > 0 else None,
        "above": per_step(max(at, Fraction(0)) + 1),
        "at": per_step(at) if (at / window_steps).denominator == 1 else None,
        "breach": per_step(3 * at + 3),
        "few": None,
    }
    if rule.min_samples and rule.min_samples - 1 > at:
        # Enough events in a window to breach the rate, yet one fewer than min_samples.
        levels["few"] = per_step(Fraction(rule.min_samples - 1))
        if (enough := _just_enough(rule, window_steps)) is not None:
            levels["enough"] = per_step(enough * window_steps)
    return levels


def mean_levels(rule: Rule, window_steps: int) -> Levels:
    """The levels of a mean rule: the value histogram's ``count`` and ``sum`` per step."""
    limit = Fraction(rule.threshold)
    count = _volume(rule, window_steps, limit.denominator) // 10

    def mean(value: Fraction, events: Fraction | int = count) -> dict[str, Fraction | None]:
        return {"count": Fraction(events), "sum": value * events}

    margin = max(abs(limit) / 2, Fraction(1))
    levels: Levels = {
        "healthy": mean(limit - margin),
        "below": mean(limit - Fraction(1, count)),
        "above": mean(limit + Fraction(1, count)),
        "at": mean(limit),
        "breach": mean(limit + 2 * margin),
        "few": None,
    }
    if rule.min_samples > 1:
        levels["few"] = mean(limit + 2 * margin, _few(rule, window_steps))
        if (enough := _just_enough(rule, window_steps)) is not None:
            levels["enough"] = mean(limit + 2 * margin, enough)
    return levels


def streak_levels(rule: Rule) -> Levels:
    """The levels of a streak rule: the streak gauge's value (held, not summed)."""
    limit = Fraction(rule.threshold)
    below = math.ceil(limit) - 1
    breach = next(
        run for run in range(max(0, math.floor(limit)), math.floor(limit) + 3) if rule.op.holds(Fraction(run), limit)
    )

    def run(length: int) -> dict[str, Fraction | None] | None:
        return {"gauge": Fraction(length)} if length >= 0 else None

    return {
        "healthy": run(0) if not rule.op.holds(Fraction(0), limit) else None,
        "below": run(below),
        "above": run(below + 1 if rule.op.holds(Fraction(below + 1), limit) else below + 2),
        "at": run(int(limit)) if limit.denominator == 1 and limit >= 0 else None,
        "breach": run(breach + 2),
        # The control plane leaves the gauge out while the tail holds fewer events than min_samples.
        "few": {"gauge": None} if rule.min_samples else None,
    }
