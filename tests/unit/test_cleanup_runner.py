"""The cleanup run over a fake bucket: what no emulator enforces (holds, preconditions, paging, failures)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.cleanup.runner import RetryPolicy, SkipReason, run_cleanup
from controlplane.cleanup.selection import EXPIRY_METADATA_KEY, ExpiredSignedUrls, KeepObject, ObjectInfo, OlderThan
from controlplane.cleanup.storage import (
    DeleteResult,
    ObjectPage,
    ObjectRef,
)
from tests.conftest import FakeClock
from tests.fake_bucket import FakeBucket, Sleeps

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=40)
POLICY = OlderThan(days=30)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


def test_run_deletes_matching_objects_and_keeps_the_rest(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/old.png", size=300)
    bucket.add("refs/new.png", created=NOW - timedelta(days=1))
    bucket.add("other/old.png")
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps())
    assert set(bucket.objects) == {"refs/new.png", "other/old.png"}
    assert (report.scanned, report.matched, report.deleted, report.bytes_freed) == (2, 1, 1, 300)
    assert report.matched_by_reason == {"older_than_limit": 1}
    assert report.completed is True
    assert report.resume_page_token is None


def test_held_object_is_skipped_with_the_server_reason(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/held.png")
    bucket.add("refs/free.png")
    bucket.held.add("refs/held.png")
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps())
    assert report.skipped == {SkipReason.HELD_OR_RETAINED: 1}
    assert report.deleted == 1
    assert report.failed == 0
    assert any("Event-Based hold" in line for line in report.details)
    assert "refs/held.png" in bucket.objects


def test_object_changed_since_listed_is_skipped_not_deleted(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/a.png")
    original = bucket.list_page

    def list_then_overwrite(prefix: str, page_token: str | None) -> ObjectPage:
        page = original(prefix, page_token)
        # A writer replaces the object between our listing and our delete.
        obj = bucket.objects["refs/a.png"]
        bucket.objects["refs/a.png"] = ObjectInfo(obj.name, 2, obj.size, obj.time_created, NOW, {})
        return page

    bucket.list_page = list_then_overwrite  # type: ignore[method-assign]
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps())
    assert report.skipped == {SkipReason.CHANGED_SINCE_LISTED: 1}
    assert report.deleted == 0
    assert bucket.objects["refs/a.png"].generation == 2


def test_object_already_gone_counts_as_done_without_bytes(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/a.png")
    original = bucket.list_page

    def list_then_vanish(prefix: str, page_token: str | None) -> ObjectPage:
        page = original(prefix, page_token)
        bucket.objects.clear()
        return page

    bucket.list_page = list_then_vanish  # type: ignore[method-assign]
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps())
    assert (report.already_gone, report.deleted, report.failed, report.bytes_freed) == (1, 0, 0, 0)


def test_many_pages_are_listed_one_at_a_time_and_batches_stay_at_most_100(clock: FakeClock) -> None:
    bucket = FakeBucket(page_size=250)
    for index in range(1234):
        bucket.add(f"refs/{index:05}.png", size=1)
    pages_done: list[str | None] = []
    report = run_cleanup(
        bucket,
        POLICY,
        prefix="refs/",
        clock=clock,
        sleep=Sleeps(),
        on_page_done=lambda report: pages_done.append(report.resume_page_token),
    )
    assert bucket.objects == {}
    assert report.pages == 5
    assert (report.scanned, report.deleted, report.bytes_freed) == (1234, 1234, 1234)
    assert max(bucket.batch_sizes) == 100
    assert sum(bucket.batch_sizes) == 1234
    assert pages_done[-1] is None
    assert len(pages_done) == 5


def test_transient_delete_errors_are_retried_with_backoff_then_succeed(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/a.png")
    bucket.add("refs/b.png")
    bucket.transient_deletes["refs/a.png"] = 2
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=5, base_delay=timedelta(seconds=1))
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=sleeps, retry=retry)
    assert (report.deleted, report.failed) == (2, 0)
    assert sleeps == [1.0, 2.0]
    # The retry resends only what failed.
    assert bucket.batch_sizes == [2, 1, 1]


def test_transient_delete_errors_give_up_after_max_attempts_and_count_as_failed(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/a.png")
    bucket.transient_deletes["refs/a.png"] = 99
    sleeps = Sleeps()
    retry = RetryPolicy(max_attempts=4, base_delay=timedelta(seconds=1), max_delay=timedelta(seconds=3))
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=sleeps, retry=retry)
    assert (report.deleted, report.failed) == (0, 1)
    assert sleeps == [1.0, 2.0, 3.0]
    assert report.completed is True
    assert "refs/a.png" in bucket.objects


def test_transient_listing_errors_are_retried(clock: FakeClock) -> None:
    bucket = FakeBucket(list_failures=2)
    bucket.add("refs/a.png")
    sleeps = Sleeps()
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=sleeps)
    assert report.deleted == 1
    assert sleeps == [0.5, 1.0]


def test_listing_that_keeps_failing_stops_the_run_with_a_resume_point_and_a_later_run_resumes(
    clock: FakeClock,
) -> None:
    bucket = FakeBucket(page_size=10)
    for index in range(30):
        bucket.add(f"refs/{index:03}.png")
    # The listing of the third page fails more often than the run retries.
    bucket.list_fail_at_token = "refs/019.png"
    bucket.list_failures = 3
    saved: list[str | None] = []
    retry = RetryPolicy(max_attempts=3)
    first = run_cleanup(
        bucket,
        POLICY,
        prefix="refs/",
        clock=clock,
        sleep=Sleeps(),
        on_page_done=lambda report: saved.append(report.resume_page_token),
        retry=retry,
    )
    assert first.completed is False
    assert first.deleted == 20
    assert first.resume_page_token == "refs/019.png" == saved[-1]
    assert any("listing gave up" in line for line in first.details)

    second = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps(), resume_page_token=saved[-1])
    assert second.completed is True
    assert (second.scanned, second.deleted) == (10, 10)
    assert bucket.tokens_listed[-1] == "refs/019.png"
    assert bucket.objects == {}


def test_crash_mid_run_resumes_from_the_last_fully_processed_page(clock: FakeClock) -> None:
    bucket = FakeBucket(page_size=10)
    for index in range(30):
        bucket.add(f"refs/{index:03}.png")
    saved: list[str | None] = []
    original = bucket.delete_batch
    calls = 0

    def crash_on_second_page(refs: Sequence[ObjectRef]) -> list[DeleteResult]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("process killed")
        return original(refs)

    bucket.delete_batch = crash_on_second_page  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="killed"):
        run_cleanup(
            bucket,
            POLICY,
            prefix="refs/",
            clock=clock,
            sleep=Sleeps(),
            on_page_done=lambda report: saved.append(report.resume_page_token),
        )
    assert saved == ["refs/009.png"]
    assert len(bucket.objects) == 20

    bucket.delete_batch = original  # type: ignore[method-assign]
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps(), resume_page_token=saved[-1])
    assert report.completed is True
    assert report.deleted == 20
    assert bucket.objects == {}


def test_dry_run_counts_matches_and_deletes_nothing(clock: FakeClock) -> None:
    bucket = FakeBucket()
    bucket.add("refs/a.png", size=7)
    bucket.add("refs/b.png", size=5)
    report = run_cleanup(bucket, POLICY, prefix="refs/", clock=clock, sleep=Sleeps(), dry_run=True)
    assert len(bucket.objects) == 2
    assert bucket.batch_sizes == []
    assert (report.matched, report.matched_bytes, report.deleted, report.bytes_freed) == (2, 12, 0, 0)
    assert report.dry_run is True


def test_every_page_is_judged_at_the_run_start_and_duration_is_measured(clock: FakeClock) -> None:
    bucket = FakeBucket(page_size=1)
    expires = (NOW + timedelta(seconds=30)).isoformat()
    bucket.add("refs/a.png", metadata={EXPIRY_METADATA_KEY: expires})
    bucket.add("refs/b.png", metadata={EXPIRY_METADATA_KEY: expires})
    original = bucket.list_page

    def slow_list(prefix: str, page_token: str | None) -> ObjectPage:
        clock.advance(timedelta(minutes=1))
        return original(prefix, page_token)

    bucket.list_page = slow_list  # type: ignore[method-assign]
    policy = ExpiredSignedUrls(grace=timedelta(0), missing_metadata=KeepObject())
    report = run_cleanup(bucket, policy, prefix="refs/", clock=clock, sleep=Sleeps())
    # Judged at NOW, both URLs are still valid, even though the second page is listed after they expire.
    assert report.matched == 0
    assert report.duration == timedelta(minutes=2)
