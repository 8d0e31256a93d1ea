"""Cleanup selection: delete or keep, and why, exactly at every edge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.cleanup.selection import (
    EXPIRY_METADATA_KEY,
    Decision,
    DeleteAfterAge,
    ExpiredSignedUrls,
    KeepObject,
    ObjectInfo,
    OlderThan,
    Reason,
    UploadedBetween,
    decide_object,
    decide_objects,
    read_expiry,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
EXPIRY = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
GRACE = timedelta(hours=1)
TICK = timedelta(microseconds=1)
KEEP_MISSING = ExpiredSignedUrls(grace=GRACE, missing_metadata=KeepObject())


def stored(
    name: str = "refs/a.png", *, created: datetime = NOW - timedelta(days=2), metadata: dict[str, str] | None = None
) -> ObjectInfo:
    return ObjectInfo(name=name, generation=1, size=10, time_created=created, updated=created, metadata=metadata or {})


def expiring_at(moment: datetime | str) -> ObjectInfo:
    value = moment if isinstance(moment, str) else moment.isoformat()
    return stored(metadata={EXPIRY_METADATA_KEY: value})


def test_expired_signed_url_is_kept_exactly_at_expiry_plus_grace() -> None:
    assert decide_object(KEEP_MISSING, expiring_at(EXPIRY), EXPIRY + GRACE).delete is False


def test_expired_signed_url_is_kept_one_microsecond_before_expiry_plus_grace() -> None:
    decision = decide_object(KEEP_MISSING, expiring_at(EXPIRY), EXPIRY + GRACE - TICK)
    assert decision.delete is False
    assert decision.reason is Reason.SIGNED_URL_NOT_EXPIRED


def test_expired_signed_url_is_deleted_one_microsecond_after_expiry_plus_grace() -> None:
    decision = decide_object(KEEP_MISSING, expiring_at(EXPIRY), EXPIRY + GRACE + TICK)
    assert decision.delete is True
    assert decision.reason is Reason.SIGNED_URL_EXPIRED


def test_expiry_with_an_offset_is_compared_as_an_instant() -> None:
    # 12:00+02:00 is 10:00 UTC: the same instant as EXPIRY.
    plus_two = datetime(2026, 11, 22, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert decide_object(KEEP_MISSING, expiring_at(plus_two), EXPIRY + GRACE).delete is False
    assert decide_object(KEEP_MISSING, expiring_at(plus_two), EXPIRY + GRACE + TICK).delete is True


def test_expiry_written_with_z_suffix_is_read_as_utc() -> None:
    assert read_expiry({EXPIRY_METADATA_KEY: "2026-11-22T10:00:00Z"}) == EXPIRY


def test_naive_expiry_is_unreadable_not_guessed_as_utc() -> None:
    assert read_expiry({EXPIRY_METADATA_KEY: "2026-11-22T10:00:00"}) is Reason.EXPIRY_UNREADABLE
    decision = decide_object(KEEP_MISSING, expiring_at("2026-11-01T10:00:00"), NOW)
    assert decision == Decision(False, Reason.EXPIRY_UNREADABLE)


@pytest.mark.parametrize("raw", ["", "soon", "2026-13-01T00:00:00Z", "1700000000"])
def test_garbage_expiry_is_unreadable(raw: str) -> None:
    assert read_expiry({EXPIRY_METADATA_KEY: raw}) is Reason.EXPIRY_UNREADABLE


def test_object_without_expiry_is_kept_under_keep_rule_however_old() -> None:
    decision = decide_object(KEEP_MISSING, stored(created=NOW - timedelta(days=3650)), NOW)
    assert (decision.delete, decision.reason) == (False, Reason.EXPIRY_MISSING)


def test_object_without_expiry_is_deleted_only_when_strictly_older_than_rule_age() -> None:
    policy = ExpiredSignedUrls(grace=GRACE, missing_metadata=DeleteAfterAge(days=30))
    exactly = stored(created=NOW - timedelta(days=30))
    older = stored(created=NOW - timedelta(days=30) - TICK)
    assert decide_object(policy, exactly, NOW).reason is Reason.EXPIRY_MISSING
    assert decide_object(policy, exactly, NOW).delete is False
    assert decide_object(policy, older, NOW).reason is Reason.EXPIRY_MISSING_PAST_AGE
    assert decide_object(policy, older, NOW).delete is True


def test_unreadable_expiry_follows_the_same_rule_with_its_own_reason() -> None:
    policy = ExpiredSignedUrls(grace=GRACE, missing_metadata=DeleteAfterAge(days=1))
    obj = stored(created=NOW - timedelta(days=2), metadata={EXPIRY_METADATA_KEY: "never"})
    assert decide_object(policy, obj, NOW).reason is Reason.EXPIRY_UNREADABLE_PAST_AGE


def test_older_than_keeps_exactly_n_days_and_deletes_one_microsecond_more() -> None:
    policy = OlderThan(days=30)
    assert decide_object(policy, stored(created=NOW - timedelta(days=30)), NOW).delete is False
    decision = decide_object(policy, stored(created=NOW - timedelta(days=30) - TICK), NOW)
    assert (decision.delete, decision.reason) == (True, Reason.OLDER_THAN_LIMIT)
    assert decide_object(policy, stored(created=NOW - timedelta(days=30) + TICK), NOW).reason is Reason.NOT_OLD_ENOUGH


def test_purge_window_includes_its_start_and_excludes_its_end() -> None:
    start, end = NOW - timedelta(hours=3), NOW - timedelta(hours=1)
    policy = UploadedBetween(start, end)
    cases = {start - TICK: False, start: True, start + TICK: True, end - TICK: True, end: False, end + TICK: False}
    for created, deleted in cases.items():
        decision = decide_object(policy, stored(created=created), NOW)
        assert decision.delete is deleted, created
        assert decision.reason is (Reason.UPLOADED_IN_WINDOW if deleted else Reason.OUTSIDE_WINDOW)


def test_purge_window_compares_instants_across_offsets() -> None:
    start = datetime(2026, 11, 22, 11, 0, tzinfo=timezone(timedelta(hours=2)))  # 09:00 UTC
    policy = UploadedBetween(start, NOW)
    assert decide_object(policy, stored(created=datetime(2026, 11, 22, 9, 0, tzinfo=UTC)), NOW).delete is True
    assert decide_object(policy, stored(created=datetime(2026, 11, 22, 9, 0, tzinfo=UTC) - TICK), NOW).delete is False


def test_purge_window_rejects_naive_and_empty_windows() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        UploadedBetween(datetime(2026, 11, 22), datetime(2026, 11, 23))
    with pytest.raises(ValueError, match="empty"):
        UploadedBetween(NOW, NOW)


def test_negative_grace_and_ages_are_refused() -> None:
    with pytest.raises(ValueError, match="grace"):
        ExpiredSignedUrls(grace=-TICK, missing_metadata=KeepObject())
    with pytest.raises(ValueError, match="days"):
        OlderThan(days=-1)
    with pytest.raises(ValueError, match="days"):
        DeleteAfterAge(days=-1)


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="now"):
        decide_object(OlderThan(days=1), stored(), NOW.replace(tzinfo=None))


def test_decide_objects_keeps_listing_order() -> None:
    objects = [stored("b"), stored("a", created=NOW - timedelta(days=40))]
    decisions = decide_objects(OlderThan(days=30), objects, NOW)
    assert [(obj.name, d.delete) for obj, d in decisions] == [("b", False), ("a", True)]


moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@given(expiry=moments, now=moments, grace_s=st.integers(0, 7 * 86400), tz=offsets)
def test_expiry_decision_is_exactly_now_past_expiry_plus_grace_in_any_offset(
    expiry: datetime, now: datetime, grace_s: int, tz: timezone
) -> None:
    policy = ExpiredSignedUrls(grace=timedelta(seconds=grace_s), missing_metadata=KeepObject())
    decision = decide_object(policy, expiring_at(expiry.astimezone(tz)), now)
    assert decision.delete is (now > expiry + timedelta(seconds=grace_s))


@given(a=moments, b=moments, created=moments)
def test_adjacent_purge_windows_cover_each_instant_exactly_once(a: datetime, b: datetime, created: datetime) -> None:
    start, middle = sorted((a, b))
    if start == middle:
        return
    end = middle + timedelta(days=1)
    first, second = UploadedBetween(start, middle), UploadedBetween(middle, end)
    hits = [decide_object(w, stored(created=created), NOW).delete for w in (first, second)]
    assert sum(hits) == (1 if start <= created < end else 0)
