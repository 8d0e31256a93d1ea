"""Cleanup selection: from one listed object, a policy and the clock, decide delete or keep, and why.

Pure: no storage, no clock of its own. Edges, stated once and tested at the microsecond:

- ``ExpiredSignedUrls(grace)``: delete when ``now > expires_at + grace`` (strictly past). At exactly
  ``expires_at + grace`` the object is kept: a URL is valid up to and including its expiry instant.
- ``OlderThan(days)``: delete when ``now - time_created > days`` (strictly older). Exactly N days old is kept.
- ``UploadedBetween(start, end)``: the half-open window ``start <= time_created < end``. The start is
  inclusive and the end exclusive, so adjacent windows neither overlap nor leave a gap.
- Missing or unreadable ``signed_url_expires_at`` (absent, not ISO 8601, or without a UTC offset, since a
  naive time cannot be placed on the clock) never falls through to a default: the policy's
  ``missing_metadata`` rule says ``KeepObject()`` or ``DeleteAfterAge(days)`` (strictly older, as above).

The expiry's key, its reader and the reasons are the client's contract (``controlplane_client.objects``): the
application that writes the expiry and this cleanup read it with the same ``read_expiry``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controlplane_client.objects import EXPIRY_METADATA_KEY, Reason, read_expiry

__all__ = [
    "EXPIRY_METADATA_KEY",
    "CleanupPolicy",
    "Decision",
    "DeleteAfterAge",
    "ExpiredSignedUrls",
    "KeepObject",
    "MissingMetadataRule",
    "ObjectInfo",
    "OlderThan",
    "Reason",
    "UploadedBetween",
    "decide_object",
    "decide_objects",
    "read_expiry",
]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object: what selection needs, nothing of the storage client."""

    name: str
    generation: int
    size: int
    time_created: datetime
    updated: datetime
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeepObject:
    """Missing-metadata rule: an object without a readable expiry is kept."""


@dataclass(frozen=True, slots=True)
class DeleteAfterAge:
    """Missing-metadata rule: an object without a readable expiry is deleted once strictly older than ``days``."""

    days: int

    def __post_init__(self) -> None:
        if self.days < 0:
            raise ValueError(f"days must be >= 0, got {self.days}")


MissingMetadataRule = KeepObject | DeleteAfterAge


@dataclass(frozen=True, slots=True)
class ExpiredSignedUrls:
    """Delete objects whose last signed URL expired more than ``grace`` ago (grace covers clock skew)."""

    grace: timedelta
    # No default on purpose: every policy states what happens to objects it cannot read.
    missing_metadata: MissingMetadataRule

    def __post_init__(self) -> None:
        if self.grace < timedelta(0):
            raise ValueError(f"grace must be >= 0, got {self.grace}")


@dataclass(frozen=True, slots=True)
class OlderThan:
    """Delete objects strictly older than ``days`` (by upload time)."""

    days: int

    def __post_init__(self) -> None:
        if self.days < 0:
            raise ValueError(f"days must be >= 0, got {self.days}")


@dataclass(frozen=True, slots=True)
class UploadedBetween:
    """Rollback purge: delete objects uploaded in ``[start, end)``; both ends timezone-aware."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.utcoffset() is None or self.end.utcoffset() is None:
            raise ValueError("the purge window needs timezone-aware start and end")
        if self.start >= self.end:
            raise ValueError(f"the purge window is empty: start {self.start} is not before end {self.end}")


CleanupPolicy = ExpiredSignedUrls | OlderThan | UploadedBetween


@dataclass(frozen=True, slots=True)
class Decision:
    """Delete or keep one object, with the reason."""

    delete: bool
    reason: Reason


def _older_than(obj: ObjectInfo, days: int, now: datetime) -> bool:
    return now - obj.time_created > timedelta(days=days)


def _decide_without_expiry(rule: MissingMetadataRule, missing: bool, obj: ObjectInfo, now: datetime) -> Decision:
    if isinstance(rule, DeleteAfterAge) and _older_than(obj, rule.days, now):
        return Decision(True, Reason.EXPIRY_MISSING_PAST_AGE if missing else Reason.EXPIRY_UNREADABLE_PAST_AGE)
    return Decision(False, Reason.EXPIRY_MISSING if missing else Reason.EXPIRY_UNREADABLE)


def decide_object(policy: CleanupPolicy, obj: ObjectInfo, now: datetime) -> Decision:
    """Decide one object under one policy at ``now`` (timezone-aware)."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if isinstance(policy, ExpiredSignedUrls):
        expiry = read_expiry(obj.metadata)
        if expiry is None or isinstance(expiry, Reason):
            return _decide_without_expiry(policy.missing_metadata, expiry is None, obj, now)
        if now > expiry + policy.grace:
            return Decision(True, Reason.SIGNED_URL_EXPIRED)
        return Decision(False, Reason.SIGNED_URL_NOT_EXPIRED)
    if isinstance(policy, OlderThan):
        if _older_than(obj, policy.days, now):
            return Decision(True, Reason.OLDER_THAN_LIMIT)
        return Decision(False, Reason.NOT_OLD_ENOUGH)
    if policy.start <= obj.time_created < policy.end:
        return Decision(True, Reason.UPLOADED_IN_WINDOW)
    return Decision(False, Reason.OUTSIDE_WINDOW)


def decide_objects(
    policy: CleanupPolicy, objects: Iterable[ObjectInfo], now: datetime
) -> list[tuple[ObjectInfo, Decision]]:
    """Every object with its decision, in listing order."""
    return [(obj, decide_object(policy, obj, now)) for obj in objects]
