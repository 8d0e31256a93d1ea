"""Cleanup runs in the database, on SQLite and PostgreSQL: policies from definitions, due slots, the claim that
lets one runner run, resuming after a crash, and the record each run leaves."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest
from google.auth.exceptions import DefaultCredentialsError
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.audit.models import AuditRecord
from controlplane.cleanup import claims, service
from controlplane.cleanup import runs as cleanup_runs
from controlplane.cleanup.jobs import execute_run, run_cleanups
from controlplane.cleanup.models import CleanupPolicyRow, CleanupRun
from controlplane.cleanup.policies import CleanupPolicyDefinition
from controlplane.cleanup.runner import RetryPolicy
from controlplane.cleanup.schemas import PurgeRequest, RunRequest, RunStatus
from controlplane.cleanup.selection import EXPIRY_METADATA_KEY, ExpiredSignedUrls, KeepObject, OlderThan
from controlplane.cleanup.storage import DeleteResult, ObjectRef
from controlplane.db import session_scope
from controlplane.errors import Conflict, InvalidInput, NotFound
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import parse_notification_config
from controlplane.notifications.models import Notification
from tests.conftest import FakeClock
from tests.fake_bucket import FakeBucket, Sleeps

STALE = timedelta(minutes=10)
HOURLY = CleanupPolicyDefinition(
    name="old-refs",
    pipeline="reference-images",
    description="",
    bucket="reference-images",
    prefix="refs/",
    selection=OlderThan(30),
    schedule="17 * * * *",
    alert_after=None,
)


def apply(factory: sessionmaker[Session], clock: FakeClock, *policies: CleanupPolicyDefinition) -> list[str]:
    with session_scope(factory) as session:
        changes = service.store_policies(
            session, pipeline="reference-images", policies=policies, actor="test", source="test.yaml", now=clock()
        )
    return [f"{change.action}:{change.name}" for change in changes]


def bucket_with(count: int, clock: FakeClock, *, page_size: int = 10) -> FakeBucket:
    """``count`` objects of 100 bytes, 40 days old (``old-refs`` deletes after 30), ten to a page."""
    bucket = FakeBucket(page_size=page_size)
    for number in range(count):
        bucket.add(f"refs/{number:03}.png", created=clock() - timedelta(days=40))
    return bucket


def runs(factory: sessionmaker[Session]) -> list[CleanupRun]:
    with session_scope(factory) as session:
        return list(session.scalars(select(CleanupRun).order_by(CleanupRun.id)))


def test_policies_are_created_updated_and_removed_with_an_audit_record_each(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    assert apply(session_factory, clock, HOURLY) == ["cleanup_policy_created:old-refs"]
    assert apply(session_factory, clock, HOURLY) == []
    changed = CleanupPolicyDefinition(
        name="old-refs",
        pipeline="reference-images",
        description="",
        bucket="reference-images",
        prefix="refs/",
        selection=OlderThan(60),
        schedule="0 3 * * *",
        alert_after=None,
    )
    assert apply(session_factory, clock, changed) == ["cleanup_policy_updated:old-refs"]
    with session_scope(session_factory) as session:
        row = session.get(CleanupPolicyRow, "old-refs")
        assert row is not None
        assert row.selection == {"older_than": {"days": 60}}
        # The slot follows the new schedule: 03:00 the next day from 12:00.
        assert row.next_run_at == clock().replace(hour=3, minute=0) + timedelta(days=1)
    assert apply(session_factory, clock) == ["cleanup_policy_removed:old-refs"]
    with session_scope(session_factory) as session:
        actions = session.scalars(
            select(AuditRecord.action).where(AuditRecord.target == "old-refs").order_by(AuditRecord.id)
        ).all()
    assert actions == ["cleanup_policy.apply"] * 3


def test_a_policy_name_of_another_pipeline_is_refused(session_factory: sessionmaker[Session], clock: FakeClock) -> None:
    apply(session_factory, clock, HOURLY)
    with pytest.raises(InvalidInput) as refused, session_scope(session_factory) as session:
        service.store_policies(
            session, pipeline="ai-assistant", policies=[HOURLY], actor="test", source="other.yaml", now=clock()
        )
    assert refused.value.slug == "cleanup-policy-name-taken"


def test_a_due_slot_queues_one_run_and_missed_slots_coalesce(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)  # 12:00: next slot 12:17
    with session_scope(session_factory) as session:
        assert cleanup_runs.enqueue_due_runs(session, now=clock()) == []
    clock.advance(timedelta(hours=5))  # 17:00: five slots missed
    with session_scope(session_factory) as session:
        queued = cleanup_runs.enqueue_due_runs(session, now=clock())
    with session_scope(session_factory) as session:
        assert cleanup_runs.enqueue_due_runs(session, now=clock()) == []
        row = session.get(CleanupPolicyRow, "old-refs")
        assert row is not None and row.next_run_at == clock().replace(minute=17)
    [run] = runs(session_factory)
    assert queued == [run.id]
    assert run.kind == "scheduled" and run.status == "queued"
    assert run.scheduled_for == (clock() - timedelta(hours=5)).replace(minute=17)


def test_a_slot_is_skipped_while_a_run_of_the_policy_is_still_active(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    clock.advance(timedelta(minutes=20))
    with session_scope(session_factory) as session:
        cleanup_runs.enqueue_due_runs(session, now=clock())
    clock.advance(timedelta(hours=1))
    with session_scope(session_factory) as session:
        assert cleanup_runs.enqueue_due_runs(session, now=clock()) == []
    assert len(runs(session_factory)) == 1


def test_two_runners_claiming_the_same_run_get_it_once(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
    with session_scope(session_factory) as session:
        taken = claims.claim_run(session, runner="a", now=clock(), stale_after=STALE, run_id=run.id)
    with session_scope(session_factory) as session:
        again = claims.claim_run(session, runner="b", now=clock(), stale_after=STALE, run_id=run.id)
    assert taken is not None and taken.id == run.id
    assert again is None


def test_a_second_run_of_a_policy_is_refused_while_one_is_active(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    with session_scope(session_factory) as session:
        first = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
    with pytest.raises(Conflict) as refused, session_scope(session_factory) as session:
        cleanup_runs.request_run(session, name="old-refs", body=RunRequest(dry_run=True), actor="op", now=clock())
    assert refused.value.slug == "cleanup-run-in-progress"
    assert refused.value.extra["run"] == first.id
    with pytest.raises(NotFound), session_scope(session_factory) as session:
        cleanup_runs.request_run(session, name="no-such-policy", body=RunRequest(), actor="op", now=clock())


def test_a_run_records_what_it_did(session_factory: sessionmaker[Session], clock: FakeClock) -> None:
    apply(session_factory, clock, HOURLY)
    bucket = bucket_with(25, clock)
    bucket.add("refs/new.png", created=clock() - timedelta(days=1))
    bucket.held.add("refs/003.png")
    metrics = ControlPlaneMetrics()
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(
            session, name="old-refs", body=RunRequest(reason="disk"), actor="op", now=clock()
        )
    run_cleanups(
        session_factory, replica="r1", clock=clock, storage_for=lambda name: bucket, stale_after=STALE, metrics=metrics
    )
    with session_scope(session_factory) as session:
        done = cleanup_runs.get_run(session, run_id=run.id)
    assert done.status is RunStatus.SUCCEEDED
    assert (done.scanned, done.matched, done.deleted, done.failed) == (26, 25, 24, 0)
    assert done.skipped == {"held_or_retained": 1}
    assert done.matched_by_reason == {"older_than_limit": 25}
    assert done.bytes_freed == 2400 and done.pages == 3 and done.attempts == 1
    assert done.finished_at == clock() and done.runner is not None and done.runner.startswith("r1/")
    assert "refs/003.png: held_or_retained" in done.details[0]
    assert metrics.cleanup_objects.labels("old-refs", "manual", "deleted")._value.get() == 24
    assert metrics.cleanup_runs.labels("old-refs", "manual", "succeeded")._value.get() == 1
    with session_scope(session_factory) as session:
        [policy] = service.list_policies(session, now=clock())
        audit = session.scalars(select(AuditRecord).where(AuditRecord.action == "cleanup.run")).all()
    assert policy.last_success_at == clock() and not policy.overdue
    assert [record.reason for record in audit] == ["disk"]


def test_a_run_with_failed_deletes_is_failed_and_keeps_the_policy_unhealthy(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    bucket = bucket_with(5, clock)
    bucket.transient_deletes["refs/002.png"] = 99
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
    run_cleanups(
        session_factory,
        replica="r1",
        clock=clock,
        storage_for=lambda name: bucket,
        stale_after=STALE,
        sleep=Sleeps(),
        retry=RetryPolicy(max_attempts=2),
    )
    with session_scope(session_factory) as session:
        done = cleanup_runs.get_run(session, run_id=run.id)
        [policy] = service.list_policies(session, now=clock() + timedelta(hours=3))
    assert done.status is RunStatus.FAILED and done.failed == 1 and done.deleted == 4
    assert policy.last_success_at is None
    # Twice the longest gap of an hourly schedule after the policy was created.
    assert policy.success_deadline == clock() + timedelta(hours=2) and policy.overdue


def test_storage_that_cannot_be_reached_fails_the_run_with_the_reason(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)

    def no_credentials(bucket: str) -> FakeBucket:
        raise RuntimeError("could not find default credentials")

    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
    run_cleanups(session_factory, replica="r1", clock=clock, storage_for=no_credentials, stale_after=STALE)
    with session_scope(session_factory) as session:
        done = cleanup_runs.get_run(session, run_id=run.id)
    assert done.status is RunStatus.FAILED
    assert done.error == "RuntimeError: could not find default credentials"


def test_a_run_the_storage_client_refuses_is_one_error_line_with_the_reason_and_no_traceback(
    session_factory: sessionmaker[Session], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    apply(session_factory, clock, HOURLY)

    def no_credentials(bucket: str) -> FakeBucket:
        raise DefaultCredentialsError("Your default credentials were not found.")  # type: ignore[no-untyped-call]

    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
    caplog.set_level(logging.INFO, logger="controlplane.cleanup")
    run_cleanups(session_factory, replica="r1", clock=clock, storage_for=no_credentials, stale_after=STALE)

    [line] = [record for record in caplog.records if record.name.startswith("controlplane.cleanup")]
    assert line.levelname == "ERROR" and line.exc_info is None
    message = line.getMessage()
    assert message.startswith(f"cleanup run {run.id} (old-refs, bucket ")
    assert message.endswith("failed: DefaultCredentialsError: Your default credentials were not found.")


class Crash(BaseException):
    """The runner's process dying mid-run (not an Exception: nothing in the run may catch it)."""


def test_a_runner_that_dies_mid_run_is_taken_over_once_stale_and_resumed_from_its_last_page(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    bucket = bucket_with(30, clock)
    calls = {"batches": 0}
    delete = bucket.delete_batch

    def die_on_third_batch(refs: Sequence[ObjectRef]) -> list[DeleteResult]:
        calls["batches"] += 1
        if calls["batches"] == 3:
            raise Crash
        return delete(refs)

    bucket.delete_batch = die_on_third_batch  # type: ignore[method-assign]
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
        claimed = claims.claim_run(session, runner="dead", now=clock(), stale_after=STALE, run_id=run.id)
    assert claimed is not None
    with pytest.raises(Crash):
        execute_run(session_factory, claimed, runner="dead", storage_for=lambda name: bucket, clock=clock)
    [left] = runs(session_factory)
    assert (left.status, left.runner, left.pages, left.deleted) == ("running", "dead", 2, 20)
    assert left.resume_page_token == "refs/019.png"

    # Not yet stale: nobody takes it.
    clock.advance(STALE - timedelta(seconds=1))
    assert run_cleanups(
        session_factory, replica="r2", clock=clock, storage_for=lambda n: bucket, stale_after=STALE
    ) == {
        "queued": 0,
        "executed": 0,
    }
    clock.advance(timedelta(seconds=2))
    bucket.delete_batch = delete  # type: ignore[method-assign]
    run_cleanups(session_factory, replica="r2", clock=clock, storage_for=lambda name: bucket, stale_after=STALE)
    with session_scope(session_factory) as session:
        done = cleanup_runs.get_run(session, run_id=run.id)
    assert done.status is RunStatus.SUCCEEDED and done.attempts == 2
    assert done.runner is not None and done.runner.startswith("r2/")
    assert (done.scanned, done.deleted, done.pages) == (30, 30, 3)
    assert bucket.objects == {}
    # The resumed runner listed from the saved page on, never the first two pages again.
    assert bucket.tokens_listed[-1:] == ["refs/019.png"]


def test_a_runner_that_was_presumed_dead_stops_without_writing_once_another_holds_the_run(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    bucket = bucket_with(30, clock)
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
        slow = claims.claim_run(session, runner="slow", now=clock(), stale_after=STALE, run_id=run.id)
    assert slow is not None
    list_page = bucket.list_page
    listed = {"pages": 0}

    def taken_over_after_first_page(prefix: str, token: str | None) -> object:
        listed["pages"] += 1
        if listed["pages"] == 2:
            # The slow runner went quiet too long: another runner takes the run over meanwhile.
            clock.advance(STALE + timedelta(seconds=1))
            with session_scope(session_factory) as session:
                assert claims.claim_run(session, runner="other", now=clock(), stale_after=STALE) is not None
        return list_page(prefix, token)

    bucket.list_page = taken_over_after_first_page  # type: ignore[assignment,method-assign]
    report = execute_run(session_factory, slow, runner="slow", storage_for=lambda name: bucket, clock=clock)
    assert report is None
    [row] = runs(session_factory)
    assert (row.status, row.runner, row.pages) == ("running", "other", 1)


def test_a_runner_asked_to_stop_hands_the_run_back_queued_with_its_progress(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    bucket = bucket_with(30, clock)
    with session_scope(session_factory) as session:
        cleanup_runs.request_run(session, name="old-refs", body=RunRequest(), actor="op", now=clock())
    pages = iter([False, False, True])
    result = run_cleanups(
        session_factory,
        replica="r1",
        clock=clock,
        storage_for=lambda name: bucket,
        stale_after=STALE,
        should_stop=lambda: next(pages, True),
    )
    assert result["executed"] == 1
    [row] = runs(session_factory)
    assert (row.status, row.runner, row.pages, row.deleted) == ("queued", None, 1, 10)
    run_cleanups(session_factory, replica="r2", clock=clock, storage_for=lambda name: bucket, stale_after=STALE)
    [row] = runs(session_factory)
    assert (row.status, row.pages, row.deleted, row.attempts) == ("succeeded", 3, 30, 2)


def test_a_dry_run_deletes_nothing_and_is_not_a_success_of_the_policy(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    bucket = bucket_with(12, clock)
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_run(session, name="old-refs", body=RunRequest(dry_run=True), actor="op", now=clock())
    run_cleanups(session_factory, replica="r1", clock=clock, storage_for=lambda name: bucket, stale_after=STALE)
    with session_scope(session_factory) as session:
        done = cleanup_runs.get_run(session, run_id=run.id)
        [policy] = service.list_policies(session, now=clock())
        audited = session.scalar(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.action == "cleanup.run")
        )
    assert done.status is RunStatus.SUCCEEDED and done.matched == 12 and done.deleted == 0
    assert len(bucket.objects) == 12
    assert policy.last_success_at is None
    assert audited == 0


def test_a_purge_deletes_its_window_and_leaves_two_audit_records(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    start, end = clock() - timedelta(hours=2), clock() - timedelta(hours=1)
    bucket = FakeBucket()
    for name, created in (
        ("refs/before.png", start - timedelta(microseconds=1)),
        ("refs/at-start.png", start),
        ("refs/inside.png", start + timedelta(minutes=30)),
        ("refs/at-end.png", end),
    ):
        bucket.add(name, created=created)
    body = PurgeRequest(bucket="reference-images", start=start, end=end, reason="bad canary 11:00-12:00")
    with session_scope(session_factory) as session:
        run = cleanup_runs.request_purge(session, body=body, actor="op", now=clock(), max_window=timedelta(days=31))
    run_cleanups(session_factory, replica="r1", clock=clock, storage_for=lambda name: bucket, stale_after=STALE)
    assert sorted(bucket.objects) == ["refs/at-end.png", "refs/before.png"]
    with session_scope(session_factory) as session:
        records = session.scalars(
            select(AuditRecord).where(AuditRecord.target == "reference-images").order_by(AuditRecord.id)
        ).all()
        done = cleanup_runs.get_run(session, run_id=run.id)
    assert done.kind.value == "purge" and done.policy is None and done.deleted == 2
    assert [(r.action, r.actor, r.reason) for r in records] == [
        ("cleanup.purge", "op", "bad canary 11:00-12:00"),
        ("cleanup.purge.finished", records[1].actor, "bad canary 11:00-12:00"),
    ]
    assert records[1].after["deleted"] == 2 and records[1].actor.startswith("cleanup:r1/")


@pytest.mark.parametrize(
    ("bucket", "hours", "slug"),
    [
        ("some-other-bucket", (-2, -1), "bucket-not-managed"),
        ("Not_A_Bucket!", (-2, -1), "invalid-bucket"),
        ("reference-images", (-1, -2), "purge-window-empty"),
        ("reference-images", (-1, -1), "purge-window-empty"),
        ("reference-images", (-24 * 40, -1), "purge-window-too-wide"),
        ("reference-images", (-2, 1), "purge-window-in-future"),
    ],
)
def test_a_purge_that_cannot_be_right_is_refused_and_changes_nothing(
    session_factory: sessionmaker[Session], clock: FakeClock, bucket: str, hours: tuple[int, int], slug: str
) -> None:
    apply(session_factory, clock, HOURLY)
    body = PurgeRequest(
        bucket=bucket,
        start=clock() + timedelta(hours=hours[0]),
        end=clock() + timedelta(hours=hours[1]),
        reason="x",
    )
    with pytest.raises(InvalidInput) as refused, session_scope(session_factory) as session:
        cleanup_runs.request_purge(session, body=body, actor="op", now=clock(), max_window=timedelta(days=31))
    assert refused.value.slug == slug
    assert runs(session_factory) == []


def test_expired_signed_url_policies_round_trip_through_the_stored_form(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    policy = CleanupPolicyDefinition(
        name="expired",
        pipeline="reference-images",
        description="",
        bucket="reference-images",
        prefix="",
        selection=ExpiredSignedUrls(grace=timedelta(minutes=90), missing_metadata=KeepObject()),
        schedule=None,
        alert_after=None,
    )
    apply(session_factory, clock, policy)
    bucket = FakeBucket()
    bucket.add("a.png", metadata={EXPIRY_METADATA_KEY: (clock() - timedelta(minutes=91)).isoformat()})
    bucket.add("b.png", metadata={EXPIRY_METADATA_KEY: (clock() - timedelta(minutes=90)).isoformat()})
    bucket.add("c.png")
    with session_scope(session_factory) as session:
        cleanup_runs.request_run(session, name="expired", body=RunRequest(), actor="op", now=clock())
        [listed] = service.list_policies(session, now=clock())
    assert listed.schedule is None and listed.success_deadline is None and not listed.overdue
    run_cleanups(session_factory, replica="r1", clock=clock, storage_for=lambda name: bucket, stale_after=STALE)
    assert sorted(bucket.objects) == ["b.png", "c.png"]


def test_on_call_hears_once_when_a_policy_goes_past_its_deadline_and_once_when_it_recovers(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    apply(session_factory, clock, HOURLY)
    config = parse_notification_config(
        """
receivers:
  chat: {type: slack, url: "http://127.0.0.1:9/slack"}
routes: [{severity: [ticket], receivers: [chat]}]
"""
    )
    failing = bucket_with(3, clock)
    failing.transient_deletes["refs/001.png"] = 99

    def tick(bucket: FakeBucket) -> None:
        run_cleanups(
            session_factory,
            replica="r1",
            clock=clock,
            storage_for=lambda name: bucket,
            stale_after=STALE,
            sleep=Sleeps(),
            retry=RetryPolicy(max_attempts=1),
            notifications=lambda: config,
        )

    def sent() -> list[tuple[str, str]]:
        with session_scope(session_factory) as session:
            rows = session.scalars(select(Notification).order_by(Notification.id)).all()
        return [(row.kind, row.rule or "") for row in rows]

    tick(failing)  # within the allowance: nothing to say
    assert sent() == []
    for _ in range(3):  # hourly slots, every run failing: past the 2 h allowance after the second
        clock.advance(timedelta(hours=1))
        tick(failing)
    assert sent() == [("trigger", "cleanup-old-refs")]
    clock.advance(timedelta(hours=1))
    tick(bucket_with(3, clock))
    assert sent() == [("trigger", "cleanup-old-refs"), ("resolve", "cleanup-old-refs")]
    clock.advance(timedelta(minutes=5))
    tick(bucket_with(0, clock))
    assert len(sent()) == 2
