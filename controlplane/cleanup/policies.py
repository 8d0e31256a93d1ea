"""A cleanup policy as the definitions declare it, and selections to and from their stored JSON form."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controlplane.cleanup.selection import (
    CleanupPolicy,
    DeleteAfterAge,
    ExpiredSignedUrls,
    KeepObject,
    OlderThan,
    UploadedBetween,
)

__all__ = [
    "CleanupPolicyDefinition",
    "ScheduledSelection",
    "check_bucket_name",
    "check_prefix",
    "selection_from_json",
    "selection_to_json",
]

#: What a declared policy may select; a purge window is only ever asked for by hand.
ScheduledSelection = ExpiredSignedUrls | OlderThan


@dataclass(frozen=True, slots=True)
class CleanupPolicyDefinition:
    """A checked policy: where to look, what to delete, and when (``schedule`` None: run by hand only)."""

    name: str
    pipeline: str
    description: str
    bucket: str
    prefix: str
    selection: ScheduledSelection
    schedule: str | None
    alert_after: timedelta | None


_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]*[a-z0-9]")


def check_bucket_name(name: str) -> None:
    """Refuse a name Cloud Storage would refuse as a bucket name, saying which of its rules it breaks."""
    if not 3 <= len(name) <= 222 or not _BUCKET.fullmatch(name):
        raise ValueError(
            f"bucket `{name}` is not a Cloud Storage bucket name: 3 to 222 lowercase letters, digits, dashes, "
            "underscores and dots, starting and ending with a letter or digit"
        )
    if any(not 1 <= len(part) <= 63 for part in name.split(".")):
        raise ValueError(f"bucket `{name}`: each dot-separated part must be 1 to 63 characters")
    if name.startswith("goog") or "google" in name:
        raise ValueError(f"bucket `{name}`: names may not start with `goog` or contain `google`")


def check_prefix(prefix: str) -> None:
    """Refuse a prefix no object name could start with."""
    if len(prefix.encode()) > 1024:
        raise ValueError("prefix is longer than an object name may be (1024 bytes)")
    if any(character in prefix for character in "\r\n\x00"):
        raise ValueError("prefix may not contain a line break or a NUL (object names cannot)")


def selection_to_json(selection: CleanupPolicy) -> dict[str, Any]:
    """The stored form of a selection (durations in seconds, instants in ISO 8601)."""
    if isinstance(selection, ExpiredSignedUrls):
        rule = selection.missing_metadata
        return {
            "expired_signed_urls": {
                "grace_seconds": selection.grace.total_seconds(),
                "missing_metadata": ("keep" if isinstance(rule, KeepObject) else {"delete_after_days": rule.days}),
            }
        }
    if isinstance(selection, OlderThan):
        return {"older_than": {"days": selection.days}}
    return {"uploaded_between": {"from": selection.start.isoformat(), "to": selection.end.isoformat()}}


def selection_from_json(stored: dict[str, Any]) -> CleanupPolicy:
    """Rebuild a selection from its stored form."""
    if "expired_signed_urls" in stored:
        spec = stored["expired_signed_urls"]
        rule = spec["missing_metadata"]
        missing = KeepObject() if rule == "keep" else DeleteAfterAge(int(rule["delete_after_days"]))
        return ExpiredSignedUrls(grace=timedelta(seconds=float(spec["grace_seconds"])), missing_metadata=missing)
    if "older_than" in stored:
        return OlderThan(int(stored["older_than"]["days"]))
    window = stored["uploaded_between"]
    return UploadedBetween(datetime.fromisoformat(window["from"]), datetime.fromisoformat(window["to"]))
