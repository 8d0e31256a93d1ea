"""What the cleanup API reads and answers."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec

__all__ = [
    "CleanupPolicyRead",
    "CleanupRunRead",
    "PurgeRequest",
    "RunKind",
    "RunRequest",
    "RunStatus",
]

Reason = Annotated[str, msgspec.Meta(max_length=1000)]


class RunKind(StrEnum):
    """How a run came about."""

    SCHEDULED = "scheduled"
    MANUAL = "manual"
    PURGE = "purge"


class RunStatus(StrEnum):
    """Where a run stands: queued -> running -> succeeded | failed."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Run a policy now."""

    dry_run: bool = False
    reason: Reason = ""


class PurgeRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Delete what was uploaded to a bucket in ``[from, to)``: the rollback purge. ``reason`` is required."""

    bucket: str
    start: Annotated[datetime, msgspec.Meta(tz=True)] = msgspec.field(name="from")
    end: Annotated[datetime, msgspec.Meta(tz=True)] = msgspec.field(name="to")
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]
    prefix: str = ""
    dry_run: bool = False
    #: The rollback's incident this purge finishes, when its own purge could not be queued (``purge-not-queued``
    #: gives the command): recorded in the purge's audit record as the rollback's purges are.
    incident: Annotated[str, msgspec.Meta(pattern=r"^incident-[0-9a-f]{16}$")] | None = None


class CleanupRunRead(msgspec.Struct, kw_only=True):
    """One run as the API shows it."""

    id: int
    kind: RunKind
    policy: str | None
    bucket: str
    prefix: str
    selection: dict[str, Any]
    dry_run: bool
    status: RunStatus
    requested_by: str
    reason: str
    scheduled_for: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    runner: str | None
    attempts: int
    pages: int
    scanned: int
    matched: int
    matched_bytes: int
    deleted: int
    already_gone: int
    skipped: dict[str, int]
    failed: int
    bytes_freed: int
    matched_by_reason: dict[str, int]
    details: list[str]
    duration_seconds: float
    error: str


class CleanupPolicyRead(msgspec.Struct, kw_only=True):
    """A policy with its schedule and how its runs have gone; ``overdue`` once no success within ``allowed``."""

    name: str
    pipeline: str
    description: str
    bucket: str
    prefix: str
    selection: dict[str, Any]
    schedule: str | None
    next_run_at: datetime | None
    alert_after_seconds: float | None
    last_run: CleanupRunRead | None
    last_success_at: datetime | None
    success_deadline: datetime | None
    overdue: bool
