"""The claim that lets one runner run: take a queued run, report after every page, hand it back or finish it.

A runner takes a queued run (or one whose runner went quiet) with a compare-and-set (``claim_run``) and reports
after every page (``save_progress``), which fails once someone else has taken the run over. So a run is executed
by one runner at a time whatever the number of replicas, and a runner that dies leaves a resumable row behind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.cleanup.models import CleanupRun
from controlplane.cleanup.policies import selection_from_json
from controlplane.cleanup.runner import CleanupReport
from controlplane.cleanup.runs import run_read
from controlplane.cleanup.schemas import CleanupRunRead, RunKind, RunStatus
from controlplane.cleanup.selection import CleanupPolicy

__all__ = ["ClaimedRun", "claim_run", "finish_run", "release_run", "save_progress"]


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run this runner now holds: what to do, and how far earlier attempts got."""

    id: int
    kind: RunKind
    policy: str | None
    bucket: str
    prefix: str
    selection: CleanupPolicy
    dry_run: bool
    progress: CleanupReport


def _progress(row: CleanupRun) -> CleanupReport:
    return CleanupReport(
        dry_run=row.dry_run,
        scanned=row.scanned,
        matched=row.matched,
        matched_bytes=row.matched_bytes,
        deleted=row.deleted,
        already_gone=row.already_gone,
        skipped=Counter(row.skipped),
        failed=row.failed,
        bytes_freed=row.bytes_freed,
        matched_by_reason=Counter(row.matched_by_reason),
        details=list(row.details),
        pages=row.pages,
        duration=timedelta(seconds=row.duration_seconds),
        resume_page_token=row.resume_page_token,
    )


def claim_run(
    session: Session, *, runner: str, now: datetime, stale_after: timedelta, run_id: int | None = None
) -> ClaimedRun | None:
    """Take a queued run, or a running one whose runner went quiet for ``stale_after``; None when there is none.

    ``run_id`` asks for that run only. The take is a compare-and-set on what was read, so of two runners reading
    the same row at most one gets it.
    """
    stale = and_(CleanupRun.status == RunStatus.RUNNING.value, CleanupRun.heartbeat_at < now - stale_after)
    query = select(CleanupRun).where(or_(CleanupRun.status == RunStatus.QUEUED.value, stale)).order_by(CleanupRun.id)
    if run_id is not None:
        query = query.where(CleanupRun.id == run_id)
    for row in session.scalars(query.limit(5)).all():
        seen = [CleanupRun.id == row.id, CleanupRun.status == row.status]
        seen.append(
            CleanupRun.heartbeat_at.is_(None)
            if row.heartbeat_at is None
            else CleanupRun.heartbeat_at == row.heartbeat_at
        )
        taken = session.execute(
            update(CleanupRun)
            .where(*seen)
            .values(
                status=RunStatus.RUNNING.value,
                runner=runner,
                heartbeat_at=now,
                started_at=row.started_at or now,
                attempts=row.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            session.refresh(row)
            return ClaimedRun(
                id=row.id,
                kind=RunKind(row.kind),
                policy=row.policy,
                bucket=row.bucket,
                prefix=row.prefix,
                selection=selection_from_json(row.selection),
                dry_run=row.dry_run,
                progress=_progress(row),
            )
    return None


def _totals(report: CleanupReport) -> dict[str, Any]:
    return {
        "pages": report.pages,
        "scanned": report.scanned,
        "matched": report.matched,
        "matched_bytes": report.matched_bytes,
        "deleted": report.deleted,
        "already_gone": report.already_gone,
        "failed": report.failed,
        "bytes_freed": report.bytes_freed,
        "skipped": dict(report.skipped),
        "matched_by_reason": dict(report.matched_by_reason),
        "details": list(report.details),
        "duration_seconds": report.duration.total_seconds(),
        "resume_page_token": report.resume_page_token,
    }


def _held(run_id: int, runner: str) -> list[Any]:
    return [CleanupRun.id == run_id, CleanupRun.runner == runner, CleanupRun.status == RunStatus.RUNNING.value]


def save_progress(session: Session, *, run_id: int, runner: str, report: CleanupReport, now: datetime) -> bool:
    """Record the totals so far and the page to resume from; False when this runner no longer holds the run."""
    saved = session.execute(
        update(CleanupRun)
        .where(*_held(run_id, runner))
        .values(**_totals(report), heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(saved.rowcount == 1)  # type: ignore[attr-defined]


def release_run(session: Session, *, run_id: int, runner: str, report: CleanupReport, now: datetime) -> bool:
    """Hand a run back, queued, with its progress (a runner shutting down): the next runner resumes it."""
    released = session.execute(
        update(CleanupRun)
        .where(*_held(run_id, runner))
        .values(**_totals(report), status=RunStatus.QUEUED.value, runner=None, heartbeat_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(released.rowcount == 1)  # type: ignore[attr-defined]


def finish_run(
    session: Session, *, run_id: int, runner: str, report: CleanupReport, error: str, now: datetime
) -> CleanupRunRead | None:
    """Record the outcome: succeeded when the whole listing was covered and no delete failed. A finished purge
    that deleted for real is also an audit record. None when this runner no longer holds the run."""
    succeeded = report.completed and report.failed == 0 and not error
    if not error and not report.completed:
        error = report.details[-1] if report.details else "the listing did not complete"
    finished = session.execute(
        update(CleanupRun)
        .where(*_held(run_id, runner))
        .values(
            **_totals(report),
            status=(RunStatus.SUCCEEDED if succeeded else RunStatus.FAILED).value,
            finished_at=now,
            heartbeat_at=now,
            error=error,
        )
        .execution_options(synchronize_session=False)
    )
    if finished.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = session.get(CleanupRun, run_id, populate_existing=True)
    assert row is not None
    if row.kind == RunKind.PURGE.value and not row.dry_run:
        append_audit_record(
            session,
            now=now,
            actor=f"cleanup:{runner}",
            action="cleanup.purge.finished",
            target_type="bucket",
            target=row.bucket,
            reason=row.reason,
            after={
                "run": row.id,
                "status": row.status,
                "deleted": row.deleted,
                "bytes_freed": row.bytes_freed,
                "skipped": row.skipped,
                "failed": row.failed,
            },
        )
    return run_read(row)
