"""Cleanup policies in the database: stored from the definitions, listed, and watched against their deadlines.

``store_policies`` makes a pipeline's stored policies match its definition (audited). ``list_policies`` and
``policy_health`` say, per policy, its next slot, last run, last success and success deadline; ``cleanup_alerts``
turns a missed deadline into an on-call alert. Asking for runs is in ``runs``, running them in ``claims``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.cleanup.models import CleanupPolicyRow, CleanupRun
from controlplane.cleanup.policies import CleanupPolicyDefinition, selection_to_json
from controlplane.cleanup.runs import run_read
from controlplane.cleanup.schedule import is_overdue, next_slot, success_deadline
from controlplane.cleanup.schemas import CleanupPolicyRead, RunStatus
from controlplane.errors import InvalidInput
from controlplane.notifications.messages import AlertEvent

__all__ = [
    "PolicyChange",
    "PolicyHealth",
    "cleanup_alerts",
    "list_policies",
    "policy_health",
    "store_policies",
]


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
                last_run=run_read(last) if last is not None else None,
                last_success_at=successes.get(row.name),
                success_deadline=deadline,
                overdue=is_overdue(deadline, now),
            )
        )
    return policies
