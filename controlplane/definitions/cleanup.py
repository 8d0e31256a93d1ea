"""Checks of a definition's `cleanup:` section, turning each policy as written into a ``CleanupPolicyDefinition``.

Called by the loader, which owns file positions: every refusal names the field path it is about.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import timedelta

from controlplane.cleanup.policies import (
    CleanupPolicyDefinition,
    ScheduledSelection,
    check_bucket_name,
    check_prefix,
)
from controlplane.cleanup.schedule import check_cron, longest_gap
from controlplane.cleanup.selection import DeleteAfterAge, ExpiredSignedUrls, KeepObject, OlderThan
from controlplane.definitions.document import FieldPath, Refuse
from controlplane.definitions.schemas import CleanupSelectSpec, CleanupSpec

__all__ = ["MAX_GRACE", "check_cleanup"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
#: A grace is a clock-skew margin; beyond a week it is a retention period, which `older_than` says better.
MAX_GRACE = timedelta(days=7)


def check_cleanup(
    pipeline: str,
    specs: Sequence[CleanupSpec],
    refuse: Refuse,
    parse_duration: Callable[[str | int], timedelta],
) -> tuple[CleanupPolicyDefinition, ...]:
    """Check a definition's cleanup policies: names, bucket, prefix, one selection, a cron that fires."""
    first: dict[str, int] = {}
    policies: list[CleanupPolicyDefinition] = []
    for index, spec in enumerate(specs):
        at: FieldPath = ("cleanup", index)
        if not _NAME.fullmatch(spec.name):
            raise refuse((*at, "name"), f"policy name `{spec.name}` must be lowercase words joined by dashes")
        if spec.name in first:
            raise refuse((*at, "name"), f"policy `{spec.name}` is already declared at cleanup[{first[spec.name]}]")
        first[spec.name] = index
        for field, check, value in (("bucket", check_bucket_name, spec.bucket), ("prefix", check_prefix, spec.prefix)):
            try:
                check(value)
            except ValueError as exc:
                raise refuse((*at, field), str(exc)) from exc
        selection = _selection(spec.select, (*at, "select"), refuse, parse_duration)
        alert_after = _schedule(spec, at, refuse, parse_duration)
        policies.append(
            CleanupPolicyDefinition(
                name=spec.name,
                pipeline=pipeline,
                description=spec.description,
                bucket=spec.bucket,
                prefix=spec.prefix,
                selection=selection,
                schedule=spec.schedule.strip() if spec.schedule is not None else None,
                alert_after=alert_after,
            )
        )
    return tuple(policies)


def _selection(
    spec: CleanupSelectSpec, at: FieldPath, refuse: Refuse, parse_duration: Callable[[str | int], timedelta]
) -> ScheduledSelection:
    given = [name for name in ("expired_signed_urls", "older_than") if getattr(spec, name) is not None]
    if len(given) != 1:
        raise refuse(
            at,
            "give exactly one selection: `expired_signed_urls` or `older_than`"
            + (f" (this one gives {' and '.join(f'`{name}`' for name in given)})" if given else ""),
        )
    if spec.older_than is not None:
        return OlderThan(spec.older_than.days)
    expired = spec.expired_signed_urls
    assert expired is not None
    try:
        grace = parse_duration(expired.grace)
    except ValueError as exc:
        raise refuse((*at, "expired_signed_urls", "grace"), str(exc).replace("bake", "grace")) from exc
    if grace > MAX_GRACE:
        raise refuse(
            (*at, "expired_signed_urls", "grace"),
            f"grace is a clock-skew margin, at most {MAX_GRACE.days}d; keep objects longer with `older_than`",
        )
    rule = expired.missing_metadata
    missing = KeepObject() if rule == "keep" else DeleteAfterAge(rule.delete_after_days)
    return ExpiredSignedUrls(grace=grace, missing_metadata=missing)


def _schedule(
    spec: CleanupSpec, at: FieldPath, refuse: Refuse, parse_duration: Callable[[str | int], timedelta]
) -> timedelta | None:
    """Check the cron and ``alert_after``; return ``alert_after`` as stated (None: the schedule's default)."""
    if spec.schedule is None:
        if spec.alert_after is not None:
            raise refuse((*at, "alert_after"), "`alert_after` needs a `schedule`: a policy run by hand is never late")
        return None
    try:
        check_cron(spec.schedule)
    except ValueError as exc:
        raise refuse(
            (*at, "schedule"), f"schedule `{spec.schedule}` is not a five-field cron expression (UTC): {exc}"
        ) from exc
    if spec.alert_after is None:
        return None
    try:
        alert_after = parse_duration(spec.alert_after)
    except ValueError as exc:
        raise refuse((*at, "alert_after"), str(exc).replace("bake", "alert_after")) from exc
    gap = longest_gap(spec.schedule.strip())
    if alert_after <= gap:
        raise refuse(
            (*at, "alert_after"),
            f"alert_after {alert_after} is not longer than the schedule's longest gap ({gap}): "
            "it would alert between two runs that both succeed",
        )
    return alert_after
