"""The cleanup run with the real google-cloud-storage client against gcp-storage-emulator, in-process.

The emulator enforces no holds, retention or preconditions and does not page (see /work/shared/reference/gcs.md);
those paths are in tests/unit/test_cleanup_runner.py. Kept to tens of objects: each emulator write is O(store).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.cleanup.runner import run_cleanup
from controlplane.cleanup.selection import (
    EXPIRY_METADATA_KEY,
    CleanupPolicy,
    DeleteAfterAge,
    ExpiredSignedUrls,
    KeepObject,
    UploadedBetween,
)
from controlplane.cleanup.storage import DeleteOutcome, GcsStorage, ObjectRef
from tests.conftest import FakeClock
from tests.gcs_emulator import emulator, fresh_bucket, storage_client

BUCKET = "reference-images"
PREFIX = "refs/"
GRACE = timedelta(hours=1)


@pytest.fixture(scope="module")
def emulator_host() -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port, in memory, for this module."""
    yield from emulator()


@pytest.fixture
def gcs_client(emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real storage client pointed at the emulator, with an empty bucket whose soft delete is off."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_host)
    client = storage_client("test-project")
    fresh_bucket(client, BUCKET)
    return client


def upload(client: Any, name: str, metadata: dict[str, str] | None = None) -> datetime:
    """Store one small object; return its creation time as the server recorded it."""
    blob = client.bucket(BUCKET).blob(name)
    if metadata is not None:
        blob.metadata = metadata
    blob.upload_from_string(b"0123456789", content_type="image/png")
    blob.reload()
    created: datetime = blob.time_created
    return created


def names(client: Any) -> set[str]:
    return {blob.name for blob in client.list_blobs(BUCKET)}


def run(client: Any, policy: CleanupPolicy, now: datetime, *, dry_run: bool = False) -> Any:
    return run_cleanup(
        GcsStorage(client, BUCKET), policy, prefix=PREFIX, clock=FakeClock(now), sleep=lambda _: None, dry_run=dry_run
    )


def expires(moment: datetime) -> dict[str, str]:
    return {EXPIRY_METADATA_KEY: moment.isoformat()}


def test_expired_objects_are_deleted_unexpired_and_unreadable_kept_and_a_second_run_has_nothing_to_do(
    gcs_client: Any,
) -> None:
    now = datetime.now(UTC)
    for index in range(6):
        upload(gcs_client, f"{PREFIX}expired-{index}.png", expires(now - GRACE - timedelta(minutes=1)))
    upload(gcs_client, f"{PREFIX}in-grace.png", expires(now - GRACE + timedelta(minutes=1)))
    upload(gcs_client, f"{PREFIX}valid.png", expires(now + timedelta(hours=20)))
    upload(gcs_client, f"{PREFIX}no-metadata.png")
    upload(gcs_client, f"{PREFIX}garbage.png", {EXPIRY_METADATA_KEY: "tomorrow"})
    upload(gcs_client, "elsewhere/expired.png", expires(now - timedelta(days=9)))
    policy = ExpiredSignedUrls(grace=GRACE, missing_metadata=KeepObject())

    report = run(gcs_client, policy, now)

    assert names(gcs_client) == {
        f"{PREFIX}in-grace.png",
        f"{PREFIX}valid.png",
        f"{PREFIX}no-metadata.png",
        f"{PREFIX}garbage.png",
        "elsewhere/expired.png",
    }
    assert (report.scanned, report.matched, report.deleted, report.failed) == (10, 6, 6, 0)
    assert report.bytes_freed == 60
    assert report.matched_by_reason == {"signed_url_expired": 6}
    assert report.completed is True

    again = run(gcs_client, policy, now)
    assert (again.scanned, again.matched, again.deleted) == (4, 0, 0)


def test_objects_without_expiry_are_deleted_only_by_the_stated_age_rule(gcs_client: Any) -> None:
    upload(gcs_client, f"{PREFIX}no-metadata.png")
    upload(gcs_client, f"{PREFIX}garbage.png", {EXPIRY_METADATA_KEY: "2026-11-22T10:00:00"})  # naive: unreadable
    two_days_later = datetime.now(UTC) + timedelta(days=2)

    young = run(gcs_client, ExpiredSignedUrls(grace=GRACE, missing_metadata=DeleteAfterAge(days=3)), two_days_later)
    assert young.matched == 0
    assert len(names(gcs_client)) == 2

    aged = run(gcs_client, ExpiredSignedUrls(grace=GRACE, missing_metadata=DeleteAfterAge(days=1)), two_days_later)
    assert aged.matched_by_reason == {"expiry_missing_past_age": 1, "expiry_unreadable_past_age": 1}
    assert aged.deleted == 2
    assert names(gcs_client) == set()


def test_dry_run_deletes_nothing(gcs_client: Any) -> None:
    now = datetime.now(UTC)
    for index in range(3):
        upload(gcs_client, f"{PREFIX}expired-{index}.png", expires(now - timedelta(days=2)))

    report = run(gcs_client, ExpiredSignedUrls(grace=GRACE, missing_metadata=KeepObject()), now, dry_run=True)

    assert (report.matched, report.matched_bytes, report.deleted, report.bytes_freed) == (3, 30, 0, 0)
    assert len(names(gcs_client)) == 3


def test_purge_window_is_exact_at_its_edges(gcs_client: Any) -> None:
    created = [upload(gcs_client, f"{PREFIX}{index}.png") for index in range(5)]
    assert created == sorted(created)
    assert len(set(created)) == 5
    # [created[1], created[3]): the object uploaded at the start instant goes, the one at the end instant stays.
    report = run(gcs_client, UploadedBetween(created[1], created[3]), datetime.now(UTC))

    assert names(gcs_client) == {f"{PREFIX}0.png", f"{PREFIX}3.png", f"{PREFIX}4.png"}
    assert report.deleted == 2

    nudged = UploadedBetween(created[3] - timedelta(microseconds=1), created[4] + timedelta(microseconds=1))
    run(gcs_client, nudged, datetime.now(UTC))
    assert names(gcs_client) == {f"{PREFIX}0.png"}


def test_batch_delete_reports_each_object_and_a_missing_one_as_not_found(gcs_client: Any) -> None:
    upload(gcs_client, f"{PREFIX}a.png")
    storage = GcsStorage(gcs_client, BUCKET)
    listed = storage.list_page(PREFIX, None)
    assert listed.next_page_token is None
    refs = [ObjectRef(obj.name, obj.generation) for obj in listed.objects] + [ObjectRef(f"{PREFIX}gone.png", 1)]

    results = storage.delete_batch(refs)

    assert [result.outcome for result in results] == [DeleteOutcome.DELETED, DeleteOutcome.NOT_FOUND]
    assert names(gcs_client) == set()
