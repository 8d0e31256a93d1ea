"""Asking for cleanup runs and reading them: an operator's run of a policy, a rollback purge, the schedule's due runs.

A run is a row before it is work. Whoever wants one run (the schedule, an operator, a purge) inserts it
``queued``; a runner then takes it through the claim protocol (``claims``). A policy has at most one run queued or
running at a time: an operator's request is refused meanwhile, and the schedule skips the slot.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import msgspec
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.cleanup.models import CleanupPolicyRow, CleanupRun
from controlplane.cleanup.policies import check_bucket_name, check_prefix, selection_from_json, selection_to_json
from controlplane.cleanup.schedule import next_slot
from controlplane.cleanup.schemas import CleanupRunRead, PurgeRequest, RunKind, RunRequest, RunStatus
from controlplane.cleanup.selection import CleanupPolicy, UploadedBetween
from controlplane.errors import Conflict, InvalidInput, NotFound

__all__ = ["check_purge", "enqueue_due_runs", "get_run", "list_runs", "request_purge", "request_run", "run_read"]

logger = logging.getLogger(__name__)
_ACTIVE = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
#: Clock skew allowed between an operator's `--to` and the server's clock.
_FUTURE_SKEW = timedelta(minutes=5)


# --- reading -------------------------------------------------------------------------------------------------


def run_read(row: CleanupRun) -> CleanupRunRead:
    """A run's wire form."""
    return msgspec.convert(row, CleanupRunRead, from_attributes=True)


def get_run(session: Session, *, run_id: int) -> CleanupRunRead:
    """One run; 404 ``cleanup-run-not-found`` when there is none."""
    row = session.get(CleanupRun, run_id)
    if row is None:
        raise NotFound("cleanup-run-not-found", f"no cleanup run {run_id}", run=run_id)
    return run_read(row)


def list_runs(session: Session, *, policy: str | None = None, limit: int = 50) -> list[CleanupRunRead]:
    """Runs, newest first; of one policy when ``policy`` is given."""
    query = select(CleanupRun).order_by(CleanupRun.id.desc()).limit(limit)
    if policy is not None:
        query = query.where(CleanupRun.policy == policy)
    return [run_read(row) for row in session.scalars(query)]


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


def _queue(
    session: Session, run: CleanupRun, *, audit: tuple[str, str, str], now: datetime, incident: str | None = None
) -> CleanupRunRead:
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
            after={"run": run.id, "bucket": run.bucket, "prefix": run.prefix, "selection": run.selection}
            | ({"incident": incident} if incident is not None else {}),
        )
    return run_read(run)


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


def check_purge(session: Session, *, body: PurgeRequest, now: datetime, max_window: timedelta) -> None:
    """Refuse (``InvalidInput``) a purge that may not be queued: a bad bucket or prefix, a bucket no policy manages,
    an empty, too wide or future window. Reads only."""
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


def request_purge(
    session: Session,
    *,
    body: PurgeRequest,
    actor: str,
    now: datetime,
    max_window: timedelta,
    incident: str | None = None,
) -> CleanupRunRead:
    """Queue the rollback purge of ``[from, to)`` in a bucket some policy manages; an audit record (unless dry),
    carrying ``incident`` when the purge is part of one (a rollback's)."""
    check_purge(session, body=body, now=now, max_window=max_window)
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
    return _queue(session, run, audit=("cleanup.purge", "bucket", body.bucket), now=now, incident=incident)


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
