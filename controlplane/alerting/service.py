"""Use cases of alerting outside the evaluation: alert states and their history as operators list them, and the
retention of that history. Takes a session, never commits.

The evaluation itself (measure, step, write) is ``alerting.evaluation``; what it reads, ``alerting.queries``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from controlplane.alerting.models import AlertStateRow, AlertTransition
from controlplane.catalog.rules import AlertState

__all__ = ["delete_old_transitions", "list_alert_states", "list_transitions"]


def list_alert_states(session: Session, *, state: str | None = None) -> list[AlertStateRow]:
    """Every alert's current state, firing first."""
    query = select(AlertStateRow).order_by(AlertStateRow.rule, AlertStateRow.environment)
    if state is not None:
        query = query.where(AlertStateRow.state == state)
    rows = list(session.scalars(query))
    order = {
        AlertState.FIRING.value: 0,
        AlertState.PENDING.value: 1,
        AlertState.INSUFFICIENT_DATA.value: 2,
        AlertState.SAMPLE_RATIO_MISMATCH.value: 2,
    }
    return sorted(rows, key=lambda row: order.get(row.state, 3))


def delete_old_transitions(session: Session, *, before: datetime) -> int:
    """Delete alert transitions older than ``before``, except each alert's newest one (how it came to its current
    state stays readable however long it has been in it). The audit log is never touched here."""
    newest = (
        select(func.max(AlertTransition.id))
        .group_by(AlertTransition.rule, AlertTransition.pipeline, AlertTransition.environment)
        .scalar_subquery()
    )
    result = session.execute(
        delete(AlertTransition).where(AlertTransition.at < before, AlertTransition.id.not_in(newest))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_transitions(
    session: Session, *, rule: str | None, environment: str | None, limit: int
) -> list[AlertTransition]:
    """State changes, newest first."""
    query = select(AlertTransition).order_by(AlertTransition.id.desc()).limit(limit)
    if rule is not None:
        query = query.where(AlertTransition.rule == rule)
    if environment is not None:
        query = query.where(AlertTransition.environment == environment)
    return list(session.scalars(query))
