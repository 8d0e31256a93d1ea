"""Retention across domains, in one transaction: telemetry windows (with their subject counts) and batch ids, alert
history and the notification log. The audit log is never touched."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.service import delete_old_transitions
from controlplane.clock import Clock
from controlplane.db import session_scope
from controlplane.notifications.service import delete_superseded_notifications
from controlplane.telemetry import service as telemetry_service

__all__ = ["expire_telemetry"]

logger = logging.getLogger(__name__)


def expire_telemetry(
    factory: sessionmaker[Session],
    *,
    clock: Clock,
    window_retention: timedelta,
    max_event_age: timedelta,
    alert_history_retention: timedelta | None = None,
) -> dict[str, int]:
    """Delete aggregation windows (and their subject counts) past their retention, batch ids no retry could still
    match, and alert transitions and notifications past ``alert_history_retention`` (each alert's newest transition
    kept, and every notification de-duplication still reads). Never the audit log."""
    now = clock()
    windows_before, batches_before = telemetry_service.retention_cutoffs(
        now, window_retention=window_retention, max_event_age=max_event_age
    )
    with session_scope(factory) as session:
        windows = telemetry_service.delete_old_windows(session, before=windows_before)
        subjects = telemetry_service.delete_old_subjects(session, before=windows_before)
        batches = telemetry_service.delete_old_batches(session, before=batches_before)
        transitions = notifications = 0
        if alert_history_retention is not None:
            transitions = delete_old_transitions(session, before=now - alert_history_retention)
            notifications = delete_superseded_notifications(session, before=now - alert_history_retention)
    deleted = {
        "windows": windows,
        "subjects": subjects,
        "batches": batches,
        "transitions": transitions,
        "notifications": notifications,
    }
    if any(deleted.values()):
        # A run that deleted nothing is routine (the scheduler logs it at DEBUG); one that did says what.
        logger.info("retention deleted %s", ", ".join(f"{count} {kind}" for kind, count in deleted.items() if count))
    return deleted
