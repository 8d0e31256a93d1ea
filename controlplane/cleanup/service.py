"""Cleanup in the database: policies from the definitions, run requests, and the claim that lets one runner run.

A run is a row before it is work. Whoever wants one run (the schedule, an operator, a purge) inserts it
``queued``; a runner takes it with a compare-and-set (``claim_run``) and reports after every page
(``save_progress``), which fails once someone else has taken the run over. So a run is executed by one runner at a
time whatever the number of replicas, and a runner that dies leaves a resumable row behind.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.cleanup.models import CleanupPolicyRow, CleanupRun
from controlplane.cleanup.policies import (
    CleanupPolicyDefinition,
    check_bucket_name,
    check_prefix,
    selection_from_json,
    selection_to_json,
)
from controlplane.cleanup.runner import CleanupReport
from controlplane.cleanup.schedule import is_overdue, next_slot, success_deadline
from controlplane.cleanup.schemas import (
    CleanupPolicyRead,
    CleanupRunRead,
    PurgeRequest,
    RunKind,
    RunRequest,
    RunStatus,
)
from controlplane.cleanup.selection import CleanupPolicy, UploadedBetween
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.notifications.messages import AlertEvent

__all__ = [
    "ClaimedRun",
    "PolicyChange",
    "PolicyHealth",
    "claim_run",
    "cleanup_alerts",
    "enqueue_due_runs",
    "finish_run",
    "get_run",
    "list_policies",
    "list_runs",
    "policy_health",
    "release_run",
    "request_purge",
    "request_run",
    "save_progress",
    "store_policies",
]

logger = logging.getLogger(__name__)
_ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
#: Clock skew allowed between an operator's `--to` and the server's clock.
_FUTURE_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """What applying a definition did to one cleanup policy: created, updated (which fields) or removed."""

    name: str
    action: str
    fields: tuple[str, ...] = ()


def _policy_document(policy: CleanupPolicyDefinition) -> dict[str, Any]:
    return {
        "description": policy.description,
        "bucket": policy.bucket,
        "prefix": policy.prefix,
        "selection": selection_to_json(policy.selection),
        "schedule": policy.schedule,
        "alert_after_seconds": policy.alert_after.total_seconds() if policy.alert_after is not None else None,
    }


def _row_document(row: CleanupPolicyRow) -> dict[str, Any]:
    return {
        "description": row.description,
        "bucket": row.bucket,
        "prefix": row.prefix,
        "selection": row.selection,
        "schedule": row.schedule,
        "alert_after_seconds": row.alert_after_seconds,
    }


def store_policies(
    session: Session,
    *,
    pipeline: str,
    policies: Sequence[CleanupPolicyDefinition],
    actor: str,
    source: str,
    now: datetime,
) -> list[PolicyChange]:
    """Make the pipeline's stored policies match its definition; audit every change. Runs are never deleted."""
    stored = {row.name: row for row in session.scalars(select(CleanupPolicyRow))}
    changes: list[PolicyChange] = []
    reason = f"definitions apply {source}"
    wanted = {policy.name for policy in policies}
    for policy in policies:
        document = _policy_document(policy)
        row = stored.get(policy.name)
        if row is not None and row.pipeline != pipeline:
            raise InvalidInput(
                "cleanup-policy-name-taken",
                f"cleanup policy `{policy.name}` belongs to pipeline `{row.pipeline}`; "
                "policy names are global: choose another",
                policy=policy.name,
                pipeline=row.pipeline,
            )
        if row is None:
            session.add(
                CleanupPolicyRow(
                    name=policy.name,
                    pipeline=pipeline,
                    **document,
                    next_run_at=next_slot(policy.schedule, now) if policy.schedule else None,
                    created_at=now,
                    updated_at=now,
                )
            )
            changes.append(PolicyChange(policy.name, "cleanup_policy_created"))
            _audit_policy(session, policy.name, None, document, actor, now, reason)
            continue
        before = _row_document(row)
        differing = tuple(sorted(name for name in document if before[name] != document[name]))
        if not differing:
            continue
        if before["schedule"] != document["schedule"]:
            row.next_run_at = next_slot(policy.schedule, now) if policy.schedule else None
        for name in differing:
            setattr(row, name, document[name])
        row.updated_at = now
        changes.append(PolicyChange(policy.name, "cleanup_policy_updated", differing))
        _audit_policy(session, policy.name, before, document, actor, now, reason)
    for name, row in stored.items():
        if row.pipeline == pipeline and name not in wanted:
            before = _row_document(row)
            session.delete(row)
            changes.append(PolicyChange(name, "cleanup_policy_removed"))
            _audit_policy(session, name, before, None, actor, now, reason)
    session.flush()
    return changes


def _audit_policy(session: Session, name: str, before: Any, after: Any, actor: str, now: datetime, why: str) -> None:
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="cleanup_policy.apply",
        target_type="cleanup_policy",
        target=name,
        reason=why,
        before=before,
        after=after,
    )


# --- reading -------------------------------------------------------------------------------------------------


def _run_read(row: CleanupRun) -> CleanupRunRead:
    return msgspec.convert(row, CleanupRunRead, from_attributes=True)


def get_run(session: Session, *, run_id: int) -> CleanupRunRead:
    """One run; 404 ``cleanup-run-not-found`` when there is none."""
    row = session.get(CleanupRun, run_id)
    if row is None:
        raise NotFound("cleanup-run-not-found", f"no cleanup run {run_id}", run=run_id)
    return _run_read(row)


def list_runs(session: Session, *, policy: str | None = None, limit: int = 50) -> list[CleanupRunRead]:
    """Runs, newest first; of one policy when ``policy`` is given."""
    query = select(CleanupRun).order_by(CleanupRun.id.desc()).limit(limit)
    if policy is not None:
        query = query.where(CleanupRun.policy == policy)
    return [_run_read(row) for row in session.scalars(query)]


@dataclass(frozen=True, slots=True)
class PolicyHealth:
    """A scheduled policy's last success and the time by which it needs the next one."""

    name: str
    bucket: str
    last_success_at: datetime | None
    deadline: datetime


def _last_successes(session: Session) -> dict[str, datetime]:
    rows = session.execute(
        select(CleanupRun.policy, CleanupRun.finished_at)
        .where(CleanupRun.status == RunStatus.SUCCEEDED.value, CleanupRun.dry_run.is_(False))
        .where(CleanupRun.policy.is_not(None), CleanupRun.finished_at.is_not(None))
    )
    latest: dict[str, datetime] = {}
    for name, finished in rows:
        if name is None or finished is None:
            continue
        if name not in latest or finished > latest[name]:
            latest[name] = finished
    return latest


def _deadline(row: CleanupPolicyRow, last_success: datetime | None) -> datetime | None:
    alert_after = timedelta(seconds=row.alert_after_seconds) if row.alert_after_seconds is not None else None
    return success_deadline(row.schedule, alert_after, created_at=row.created_at, last_success=last_success)


def policy_health(session: Session) -> list[PolicyHealth]:
    """Every scheduled policy's last success and success deadline (what `/metrics` exports)."""
    successes = _last_successes(session)
    health = []
    for row in session.scalars(select(CleanupPolicyRow).order_by(CleanupPolicyRow.name)):
        deadline = _deadline(row, successes.get(row.name))
        if deadline is not None:
            health.append(PolicyHealth(row.name, row.bucket, successes.get(row.name), deadline))
    return health


#: The alert's name, as the rendered Prometheus rule calls it.
CLEANUP_ALERT_RULE = "CleanupNotSucceeding"


def cleanup_alerts(session: Session, *, now: datetime) -> list[AlertEvent]:
    """For every scheduled policy, a trigger while it is past its success deadline and a resolve otherwise.

    Sent every tick: de-duplication turns a trigger already notified, and a resolve of nothing, into no message.
    """
    policies = {row.name: row for row in session.scalars(select(CleanupPolicyRow))}
    events = []
    for health in policy_health(session):
        row = policies[health.name]
        overdue = is_overdue(health.deadline, now)
        last = health.last_success_at.isoformat() if health.last_success_at is not None else "never"
        events.append(
            AlertEvent(
                kind="trigger" if overdue else "resolve",
                rule=f"cleanup-{health.name}",
                pipeline=row.pipeline,
                environment="all",
                severity="ticket",
                summary=f"Cleanup {health.name} of bucket {health.bucket} has not succeeded in time",
                description=(
                    f"Cleanup policy {health.name} (schedule `{row.schedule}`) last succeeded {last}; its next "
                    f"success was due by {health.deadline.isoformat()}. See `controlplane cleanup runs --policy "
                    f"{health.name}` for the failing runs and their errors."
                ),
                at=now,
                runbook_url="https://runbooks.example.com/controlplane#cleanup-not-succeeding",
                details={"alert": CLEANUP_ALERT_RULE, "policy": health.name, "bucket": health.bucket},
            )
        )
    return events


def list_policies(session: Session, *, now: datetime) -> list[CleanupPolicyRead]:
    """Every policy with its next slot, last run, last success and whether it is overdue."""
    successes = _last_successes(session)
    policies = []
    for row in session.scalars(select(CleanupPolicyRow).order_by(CleanupPolicyRow.name)):
        last = session.scalar(
            select(CleanupRun).where(CleanupRun.policy == row.name).order_by(CleanupRun.id.desc()).limit(1)
        )
        deadline = _deadline(row, successes.get(row.name))
        policies.append(
            CleanupPolicyRead(
                name=row.name,
                pipeline=row.pipeline,
                description=row.description,
                bucket=row.bucket,
                prefix=row.prefix,
                selection=row.selection,
                schedule=row.schedule,
                next_run_at=row.next_run_at,
                alert_after_seconds=row.alert_after_seconds,
                last_run=_run_read(last) if last is not None else None,
                last_success_at=successes.get(row.name),
                success_deadline=deadline,
                overdue=is_overdue(deadline, now),
            )
        )
    return policies


# --- asking for runs -----------------------------------------------------------------------------------------


def _new_run(
    *,
    kind: RunKind,
    policy: str | None,
    bucket: str,
    prefix: str,
    selection: CleanupPolicy,
    dry_run: bool,
    actor: str,
    reason: str,
    now: datetime,
    scheduled_for: datetime | None = None,
) -> CleanupRun:
    return CleanupRun(
        kind=kind.value,
        policy=policy,
        bucket=bucket,
        prefix=prefix,
        selection=selection_to_json(selection),
        dry_run=dry_run,
        status=RunStatus.QUEUED.value,
        requested_by=actor,
        reason=reason,
        scheduled_for=scheduled_for,
        created_at=now,
        attempts=0,
        pages=0,
        scanned=0,
        matched=0,
        matched_bytes=0,
        deleted=0,
        already_gone=0,
        failed=0,
        bytes_freed=0,
        skipped={},
        matched_by_reason={},
        details=[],
        duration_seconds=0.0,
        error="",
    )


def _queue(session: Session, run: CleanupRun, *, audit: tuple[str, str, str], now: datetime) -> CleanupRunRead:
    """Store a run asked for by hand; unless it is a dry run (which changes nothing), audit who asked and why."""
    session.add(run)
    session.flush()
    if not run.dry_run:
        action, target_type, target = audit
        append_audit_record(
            session,
            now=now,
            actor=run.requested_by,
            action=action,
            target_type=target_type,
            target=target,
            reason=run.reason or None,
            after={"run": run.id, "bucket": run.bucket, "prefix": run.prefix, "selection": run.selection},
        )
    return _run_read(run)


def _active_run_of(session: Session, policy: str) -> CleanupRun | None:
    return session.scalar(
        select(CleanupRun).where(CleanupRun.policy == policy, CleanupRun.status.in_(_ACTIVE)).limit(1)
    )


def request_run(session: Session, *, name: str, body: RunRequest, actor: str, now: datetime) -> CleanupRunRead:
    """Queue a run of policy ``name`` now; 409 while one of it is queued or running. Audited unless a dry run."""
    row = session.get(CleanupPolicyRow, name)
    if row is None:
        known = ", ".join(f"`{policy}`" for policy in session.scalars(select(CleanupPolicyRow.name))) or "none"
        raise NotFound("cleanup-policy-not-found", f"no cleanup policy `{name}`; the policies are {known}", policy=name)
    active = _active_run_of(session, name)
    if active is not None:
        raise Conflict(
            "cleanup-run-in-progress",
            f"run {active.id} of `{name}` is {active.status}; wait for it (`controlplane cleanup show {active.id}`)",
            run=active.id,
        )
    run = _new_run(
        kind=RunKind.MANUAL,
        policy=name,
        bucket=row.bucket,
        prefix=row.prefix,
        selection=selection_from_json(row.selection),
        dry_run=body.dry_run,
        actor=actor,
        reason=body.reason,
        now=now,
    )
    return _queue(session, run, audit=("cleanup.run", "cleanup_policy", name), now=now)


def request_purge(
    session: Session, *, body: PurgeRequest, actor: str, now: datetime, max_window: timedelta
) -> CleanupRunRead:
    """Queue the rollback purge of ``[from, to)`` in a bucket some policy manages; an audit record (unless dry)."""
    for field, check, value in (("bucket", check_bucket_name, body.bucket), ("prefix", check_prefix, body.prefix)):
        try:
            check(value)
        except ValueError as exc:
            raise InvalidInput(f"invalid-{field}", str(exc), field=field) from exc
    managed = sorted(set(session.scalars(select(CleanupPolicyRow.bucket))))
    if body.bucket not in managed:
        allowed = ", ".join(f"`{bucket}`" for bucket in managed) if managed else "buckets a policy names (none yet)"
        raise InvalidInput(
            "bucket-not-managed",
            f"no cleanup policy covers bucket `{body.bucket}`; purges are limited to {allowed}",
            bucket=body.bucket,
        )
    if body.start >= body.end:
        raise InvalidInput(
            "purge-window-empty", f"`from` {body.start.isoformat()} is not before `to` {body.end.isoformat()}"
        )
    if body.end - body.start > max_window:
        raise InvalidInput(
            "purge-window-too-wide",
            f"the window is {body.end - body.start}, wider than the {max_window.days} days one purge may delete; "
            "split it if you mean it",
        )
    if body.end > now + _FUTURE_SKEW:
        raise InvalidInput(
            "purge-window-in-future",
            f"`to` {body.end.isoformat()} is after now ({now.isoformat()}): uploads still to come would be deleted",
        )
    window = UploadedBetween(body.start, body.end)
    run = _new_run(
        kind=RunKind.PURGE,
        policy=None,
        bucket=body.bucket,
        prefix=body.prefix,
        selection=window,
        dry_run=body.dry_run,
        actor=actor,
        reason=body.reason,
        now=now,
    )
    return _queue(session, run, audit=("cleanup.purge", "bucket", body.bucket), now=now)


def enqueue_due_runs(session: Session, *, now: datetime) -> list[int]:
    """Queue one run for each policy whose slot has come, and move its slot on (missed slots coalesce).

    The slot moves with a compare-and-set and the run is unique per (policy, slot): two replicas that both see
    a slot due create one run between them. A policy whose previous run is still active skips the slot (logged).
    """
    queued: list[int] = []
    due = session.scalars(
        select(CleanupPolicyRow).where(CleanupPolicyRow.next_run_at.is_not(None), CleanupPolicyRow.next_run_at <= now)
    ).all()
    for row in due:
        slot = row.next_run_at
        assert slot is not None and row.schedule is not None
        moved = session.execute(
            update(CleanupPolicyRow)
            .where(CleanupPolicyRow.name == row.name, CleanupPolicyRow.next_run_at == slot)
            .values(next_run_at=next_slot(row.schedule, now))
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another replica took this slot
        active = _active_run_of(session, row.name)
        if active is not None:
            logger.warning("cleanup %s: slot %s skipped, run %s is still %s", row.name, slot, active.id, active.status)
            continue
        run = _new_run(
            kind=RunKind.SCHEDULED,
            policy=row.name,
            bucket=row.bucket,
            prefix=row.prefix,
            selection=selection_from_json(row.selection),
            dry_run=False,
            actor="scheduler",
            reason=f"schedule `{row.schedule}`",
            now=now,
            scheduled_for=slot,
        )
        try:
            with session.begin_nested():
                session.add(run)
        except IntegrityError:
            continue
        queued.append(run.id)
    return queued


# --- running -------------------------------------------------------------------------------------------------


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
    return _run_read(row)
