"""When a cleanup policy runs and how long it may go without a success: pure functions of a cron expression.

Cron expressions are the five-field crontab form, read in UTC by APScheduler's ``CronTrigger`` (no parser of
our own). Missed slots are coalesced: after an outage a policy runs once, for its latest missed slot.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache

from apscheduler.triggers.cron import CronTrigger

__all__ = ["allowed_gap", "check_cron", "is_overdue", "longest_gap", "next_slot", "success_deadline"]

#: Fires looked at to find a schedule's longest gap: covers a year of a weekly schedule, eight of a monthly one.
_GAP_SAMPLE = 100
#: The reference instant gaps are measured from: fixed, so the answer never depends on when it is asked.
_GAP_FROM = datetime(2026, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=256)
def _trigger(expression: str) -> CronTrigger:
    return CronTrigger.from_crontab(expression, timezone=UTC)


def check_cron(expression: str) -> None:
    """Refuse an expression that is not five crontab fields APScheduler can read, or that never fires."""
    trigger = _trigger(expression.strip())
    if trigger.get_next_fire_time(None, _GAP_FROM) is None:
        raise ValueError(f"cron `{expression}` never fires")


def next_slot(expression: str, after: datetime) -> datetime:
    """The first time the schedule fires strictly after ``after``."""
    trigger = _trigger(expression.strip())
    fire: datetime | None = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    if fire is None:
        raise ValueError(f"cron `{expression}` never fires after {after.isoformat()}")
    return fire.astimezone(UTC)


@lru_cache(maxsize=256)
def longest_gap(expression: str) -> timedelta:
    """The longest time between two consecutive fires (over the next hundred, from a fixed instant)."""
    fire = next_slot(expression, _GAP_FROM)
    longest = timedelta(0)
    for _ in range(_GAP_SAMPLE):
        following = next_slot(expression, fire)
        longest = max(longest, following - fire)
        fire = following
    return longest


def allowed_gap(expression: str, alert_after: timedelta | None) -> timedelta:
    """How long the policy may go without a successful run before that is an alert.

    ``alert_after`` when the policy states it; otherwise two of its longest gaps, so one failed or skipped run
    is tolerated and the second is not.
    """
    return alert_after if alert_after is not None else 2 * longest_gap(expression)


def success_deadline(
    schedule: str | None, alert_after: timedelta | None, *, created_at: datetime, last_success: datetime | None
) -> datetime | None:
    """When a policy's next success is due at the latest; None for a policy run by hand only.

    Counted from the later of its last success and its creation: a new policy is not late at once.
    """
    if schedule is None:
        return None
    since = max(last_success, created_at) if last_success is not None else created_at
    return since + allowed_gap(schedule, alert_after)


def is_overdue(deadline: datetime | None, now: datetime) -> bool:
    """True once ``now`` is past the deadline (never for a policy without one)."""
    return deadline is not None and now > deadline
