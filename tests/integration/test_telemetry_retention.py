"""Retention: windows past their retention and batch ids past any retry are deleted; the audit log never is.
And the evaluator's cache between ticks never hides a change another replica made."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.evaluation import EvaluationCache
from controlplane.alerting.models import AlertStateRow, AlertTransition
from controlplane.audit.models import AuditRecord
from controlplane.audit.service import append_audit_record
from controlplane.db import session_scope
from controlplane.definitions.loader import load_definition
from controlplane.definitions.service import apply_definition
from controlplane.guarding.evaluation import evaluate_alerts
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.models import Notification
from controlplane.retention import expire_telemetry
from controlplane.scheduler import Leadership, build_jobs
from controlplane.settings import Settings
from controlplane.telemetry.models import IngestedBatch, TelemetryWindow
from tests.conftest import REPO_ROOT, FakeClock

ENVIRONMENTS = Settings().environments


def window_row(start_offset: timedelta, clock: FakeClock) -> dict[str, object]:
    return {
        "window_start": clock() - start_offset,
        "pipeline": "reference-images",
        "event": "http_request",
        "environment": "production",
        "variant": "on",
        "outcome": "",
        "labels_key": "{}",
        "count": 1,
        "value_count": 0,
        "value_sum": 0.0,
    }


def counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with session_scope(factory) as session:
        return (
            session.scalar(select(func.count()).select_from(TelemetryWindow)) or 0,
            session.scalar(select(func.count()).select_from(IngestedBatch)) or 0,
            session.scalar(select(func.count()).select_from(AuditRecord)) or 0,
        )


def test_retention_deletes_old_windows_and_batch_ids_and_keeps_the_audit_log(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    retention, max_age = timedelta(days=3), timedelta(days=1)
    with session_scope(session_factory) as session:
        session.execute(
            insert(TelemetryWindow),
            [window_row(offset, clock) for offset in (timedelta(days=3, seconds=10), timedelta(days=2, hours=23))],
        )
        for name, age in (("batch-old-0001", timedelta(days=2, seconds=1)), ("batch-new-0001", timedelta(hours=47))):
            session.add(IngestedBatch(batch_id=name, pipeline="p", digest="d", events=1, received_at=clock() - age))
        append_audit_record(
            session,
            now=clock() - timedelta(days=400),
            actor="someone",
            action="flag.create",
            target_type="flag",
            target="old-flag",
            environment=None,
            reason="long ago",
            before=None,
            after={},
        )

    deleted = expire_telemetry(session_factory, clock=clock, window_retention=retention, max_event_age=max_age)

    assert deleted == {"windows": 1, "subjects": 0, "batches": 1, "transitions": 0, "notifications": 0}
    assert counts(session_factory) == (1, 1, 1)
    with session_scope(session_factory) as session:
        assert session.scalar(select(IngestedBatch.batch_id)) == "batch-new-0001"


def transition(rule: str, at_age: timedelta, clock: FakeClock, to_state: str = "firing") -> AlertTransition:
    return AlertTransition(
        rule=rule,
        pipeline="reference-images",
        environment="production",
        from_state="inactive",
        to_state=to_state,
        at=clock() - at_age,
        value=0.05,
        op=">",
        threshold="0.03",
        window_seconds=300.0,
        samples=100,
        condition="ratio > 0.03 over 5m",
    )


def test_old_alert_history_is_deleted_but_each_alerts_newest_change_and_the_audit_log_stay(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    history = timedelta(days=30)
    with session_scope(session_factory) as session:
        session.add_all(
            [
                # upload-error-rate: two old changes and a recent one -> both old ones go.
                transition("upload-error-rate", timedelta(days=40), clock),
                transition("upload-error-rate", timedelta(days=31), clock, to_state="inactive"),
                transition("upload-error-rate", timedelta(days=1), clock),
                # vision-error-streak: firing for 45 days -> its only change stays, however old.
                transition("vision-error-streak", timedelta(days=45), clock),
                # upload-latency: exactly at the cutoff is not past it.
                transition("upload-latency", history, clock),
            ]
        )
        append_audit_record(
            session,
            now=clock() - timedelta(days=400),
            actor="controlplane",
            action="rollout.rollback",
            target_type="flag",
            target="enable-reference-images",
            environment="production",
            reason="guard upload-error-rate fired",
            before=None,
            after={},
        )

    deleted = expire_telemetry(
        session_factory,
        clock=clock,
        window_retention=timedelta(days=3),
        max_event_age=timedelta(days=1),
        alert_history_retention=history,
    )

    assert deleted["transitions"] == 2
    with session_scope(session_factory) as session:
        kept = sorted((row.rule, (clock() - row.at).days) for row in session.scalars(select(AlertTransition)))
        assert kept == [("upload-error-rate", 1), ("upload-latency", 30), ("vision-error-streak", 45)]
    assert counts(session_factory)[2] == 1  # the audit log is never subject to retention


def notification(
    receiver: str, alerts: list[tuple[str, str]], status: str, age: timedelta, clock: FakeClock
) -> Notification:
    """A notification row carrying ``alerts`` as (dedup_key, kind), created ``age`` ago."""
    return Notification(
        receiver=receiver,
        kind=alerts[0][1],
        dedup_key=", ".join(key for key, _ in alerts),
        rule="upload-error-rate",
        environment="production",
        severity="page",
        payload={"type": "webhook", "body": {}, "alerts": [{"dedup_key": k, "kind": kind} for k, kind in alerts]},
        status=status,
        attempts=1,
        next_attempt_at=clock() - age,
        last_error=None,
        created_at=clock() - age,
        sent_at=None,
    )


def test_old_notifications_go_only_once_de_duplication_can_no_longer_read_them(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    day = timedelta(days=1)
    rows = [
        # k1: trigger, resolve, a silenced trigger, then a trigger sent: the three before the last are superseded.
        ("pagerduty", [("k1", "trigger")], "sent", 40 * day),
        ("pagerduty", [("k1", "resolve")], "sent", 39 * day),
        ("pagerduty", [("k1", "trigger")], "silenced", 36 * day),
        ("pagerduty", [("k1", "trigger")], "sent", 35 * day),
        # k2: only a silenced trigger: it is what says "muted", so it stays however old.
        ("pagerduty", [("k2", "trigger")], "silenced", 40 * day),
        # A grouped row of k3 and k4 stays while k4 has nothing newer; the same key at another receiver is apart.
        ("slack", [("k3", "trigger"), ("k4", "trigger")], "sent", 40 * day),
        ("slack", [("k3", "resolve")], "sent", 38 * day),
        ("pagerduty", [("k4", "trigger")], "sent", 37 * day),
        # k5: a row still pending is never deleted.
        ("pagerduty", [("k5", "trigger")], "pending", 40 * day),
        ("pagerduty", [("k5", "resolve")], "sent", 1 * day),
        # k6: superseded but younger than the retention.
        ("pagerduty", [("k6", "trigger")], "sent", 2 * day),
        ("pagerduty", [("k6", "resolve")], "sent", 1 * day),
    ]
    with session_scope(session_factory) as session:
        for receiver, alerts, status, age in rows:
            session.add(notification(receiver, alerts, status, age, clock))
            session.flush()  # ids in the listed order: newer rows get higher ids, as in production

    deleted = expire_telemetry(
        session_factory,
        clock=clock,
        window_retention=timedelta(days=3),
        max_event_age=timedelta(days=1),
        alert_history_retention=timedelta(days=30),
    )

    assert deleted["notifications"] == 3
    with session_scope(session_factory) as session:
        kept = [
            (row.receiver, row.dedup_key, row.status)
            for row in session.scalars(select(Notification).order_by(Notification.id))
        ]
    assert kept == [
        ("pagerduty", "k1", "sent"),
        ("pagerduty", "k2", "silenced"),
        ("slack", "k3, k4", "sent"),
        ("slack", "k3", "sent"),
        ("pagerduty", "k4", "sent"),
        ("pagerduty", "k5", "pending"),
        ("pagerduty", "k5", "sent"),
        ("pagerduty", "k6", "sent"),
        ("pagerduty", "k6", "sent"),
    ]


def test_every_scheduled_job_of_telemetry_and_alerting_is_in_the_one_job_list(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    leadership = Leadership(session_factory, holder="r1", ttl=timedelta(seconds=30), clock=clock)
    jobs = {job.id: job for job in build_jobs(Settings(), session_factory, leadership, clock)}

    assert {"evaluate_alert_rules", "deliver_notifications", "expire_telemetry"} <= set(jobs)
    assert all(jobs[name].leader_only for name in ("evaluate_alert_rules", "deliver_notifications", "expire_telemetry"))


def test_the_evaluation_cache_reloads_states_another_replica_changed(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    definition = load_definition(REPO_ROOT / "definitions" / "reference-images.yaml", environments=ENVIRONMENTS)
    with session_scope(session_factory) as session:
        apply_definition(session, definition=definition, actor="t", environments=ENVIRONMENTS, now=clock())
    cache = EvaluationCache()

    def tick() -> int:
        with session_scope(session_factory) as session:
            return evaluate_alerts(
                session, environments=ENVIRONMENTS, now=clock(), notifications=NotificationConfig(), cache=cache
            ).transitions

    assert tick() == len(definition.rules) * len(ENVIRONMENTS)  # every alert starts as insufficient_data
    clock.advance(timedelta(seconds=2))
    assert tick() == 0  # nothing changed, and the cached states say so
    # Someone else changed the table meanwhile (here: a state row deleted): the cache must not hide it.
    with session_scope(session_factory) as session:
        session.execute(
            delete(AlertStateRow).where(
                AlertStateRow.rule == "upload-error-rate", AlertStateRow.environment == "production"
            )
        )
    clock.advance(timedelta(seconds=2))
    assert tick() == 1  # the row is recreated (a stale cache would have skipped it as unchanged)
    with session_scope(session_factory) as session:
        state = session.scalar(
            select(AlertStateRow.state).where(
                AlertStateRow.rule == "upload-error-rate", AlertStateRow.environment == "production"
            )
        )
    assert state == "insufficient_data"
