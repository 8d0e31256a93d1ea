"""The one retry arithmetic (controlplane_client/retry.py): full-jitter exponential backoff and Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane_client.retry import backoff_delay, retry_after_seconds

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


# --- backoff ------------------------------------------------------------------------------------------------------


def test_the_ceiling_is_base_after_the_first_failure_and_doubles_up_to_the_cap() -> None:
    ceilings = [backoff_delay(n, base=1.0, cap=300.0, random=lambda: 1.0) for n in range(1, 11)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_the_delay_is_the_jitter_times_the_ceiling() -> None:
    assert backoff_delay(4, base=0.5, cap=30.0, random=lambda: 0.0) == 0.0
    assert backoff_delay(4, base=0.5, cap=30.0, random=lambda: 0.5) == 2.0
    assert backoff_delay(4, base=0.5, cap=30.0, random=lambda: 0.999) == pytest.approx(3.996)


def test_a_jitter_outside_zero_and_one_is_clamped() -> None:
    assert backoff_delay(3, base=1.0, cap=30.0, random=lambda: 7.0) == 4.0
    assert backoff_delay(3, base=1.0, cap=30.0, random=lambda: -1.0) == 0.0


def test_zero_or_negative_failures_wait_at_most_the_base() -> None:
    assert backoff_delay(0, base=0.5, cap=30.0, random=lambda: 1.0) == 0.5
    assert backoff_delay(-3, base=0.5, cap=30.0, random=lambda: 1.0) == 0.5


def test_a_huge_failure_count_stays_at_the_cap_without_overflow() -> None:
    assert backoff_delay(10**9, base=0.5, cap=30.0, random=lambda: 1.0) == 30.0


def test_the_default_jitter_is_random_within_the_ceiling() -> None:
    delays = {backoff_delay(3, base=1.0, cap=30.0) for _ in range(200)}
    assert all(0.0 <= delay < 4.0 for delay in delays)
    assert len(delays) > 1


@given(
    failures=st.integers(min_value=-5, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=10_000),
    jitter=st.floats(min_value=0, max_value=1),
)
def test_the_delay_stays_within_zero_and_the_cap(failures: int, base: float, cap: float, jitter: float) -> None:
    delay = backoff_delay(failures, base=base, cap=cap, random=lambda: jitter)
    assert 0.0 <= delay <= cap


# --- Retry-After ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        ("7", 7.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_delay_seconds_are_read_as_a_non_negative_finite_number(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, now=NOW) == seconds


def test_an_http_date_is_read_against_the_given_now() -> None:
    assert retry_after_seconds("Mon, 23 Nov 2026 12:01:30 GMT", now=NOW) == 90.0
    assert retry_after_seconds("Mon, 23 Nov 2026 12:01:30 GMT", now=NOW + timedelta(seconds=30)) == 60.0


def test_an_http_date_already_past_means_no_wait() -> None:
    assert retry_after_seconds("Mon, 23 Nov 2026 11:59:00 GMT", now=NOW) == 0.0


def test_an_http_date_without_a_zone_is_unreadable() -> None:
    # "-0000" says the zone is unknown: the moment cannot be placed against now.
    assert retry_after_seconds("Mon, 23 Nov 2026 12:01:30 -0000", now=NOW) is None


def test_without_a_now_an_http_date_is_read_against_the_current_time() -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    seconds = retry_after_seconds(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None
    assert 3500 < seconds <= 3600
