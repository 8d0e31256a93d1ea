"""Properties of sticky percentage bucketing (controlplane_client/provider/bucketing.py), each over 100,000 keys.

The formula is shared with clients in other languages, so it is pinned twice: against mmh3 itself and against
literal vectors. The vectors were computed once with mmh3 5.3.1:

    >>> import mmh3
    >>> (mmh3.hash("enable-reference-images" + "user-1", 0, signed=False) * 100_000) >> 32
    61491
    >>> (mmh3.hash("enable-reference-images" + "user-42", 0, signed=False) * 100_000) >> 32
    26224
    >>> (mmh3.hash("new-checkout" + "user-1", 0, signed=False) * 100_000) >> 32
    45498
    >>> (mmh3.hash("new-checkout" + "agent-7", 0, signed=False) * 100_000) >> 32
    64968
    >>> (mmh3.hash("flag-é" + "ü", 0, signed=False) * 100_000) >> 32   # UTF-8 of non-ASCII text
    72171

Buckets and cohorts are computed once per flag (and percentage) and shared by the tests, which keeps the
whole file at about a second.
"""

from __future__ import annotations

import subprocess
import sys
from functools import cache

import mmh3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.flags.schemas import FLAG_KEY_PATTERN
from controlplane_client.provider.bucketing import BUCKETS, bucket, hash_limit, in_rollout, unit_hash

N_KEYS = 100_000
KEYS = tuple(f"user-{i}" for i in range(N_KEYS))
ALL = frozenset(range(N_KEYS))
FLAG_A = "enable-reference-images"
FLAG_B = "new-checkout"


@cache
def buckets(flag_key: str) -> tuple[int, ...]:
    """The bucket of every key for a flag."""
    return tuple(bucket(flag_key, key) for key in KEYS)


@cache
def cohort(flag_key: str, percentage: float) -> frozenset[int]:
    """The indices of the keys inside a flag's rollout at a percentage, as ``in_rollout`` decides."""
    return frozenset(i for i, key in enumerate(KEYS) if in_rollout(flag_key, key, percentage))


def share(members: frozenset[int]) -> float:
    """The share of all keys in a set of indices, in percent."""
    return 100 * len(members) / N_KEYS


# --- the share inside matches the target ---------------------------------------------------------------------


@pytest.mark.parametrize("flag_key", [FLAG_A, FLAG_B])
@pytest.mark.parametrize("percentage", [1, 10, 50, 0.5, 12.345])
def test_share_inside_rollout_is_within_half_a_point_of_the_target(flag_key: str, percentage: float) -> None:
    assert abs(share(cohort(flag_key, percentage)) - percentage) <= 0.5


@pytest.mark.parametrize("percentage", [0.001, 0.002, 0.5, 12.345, 50, 99.999])
def test_in_rollout_takes_exactly_the_buckets_below_a_thousand_per_percent(percentage: float) -> None:
    threshold = round(percentage * 1000)
    expected = frozenset(i for i, b in enumerate(buckets(FLAG_A)) if b < threshold)
    assert cohort(FLAG_A, percentage) == expected


def test_buckets_cover_the_whole_range_zero_to_99999() -> None:
    values = buckets(FLAG_A)
    assert BUCKETS == 100_000
    assert all(0 <= b < BUCKETS for b in values)
    assert min(values) < 100
    assert max(values) >= BUCKETS - 100


# --- cohorts only grow -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag_key", [FLAG_A, FLAG_B])
def test_every_key_in_at_10_percent_is_in_at_50_and_100_percent(flag_key: str) -> None:
    at_10, at_50, at_100 = cohort(flag_key, 10), cohort(flag_key, 50), cohort(flag_key, 100)
    assert at_10  # not vacuous
    assert at_10 <= at_50
    assert at_10 <= at_100
    assert at_50 <= at_100


@pytest.mark.parametrize("flag_key", [FLAG_A, FLAG_B])
def test_every_key_in_at_1_percent_is_in_at_10_percent(flag_key: str) -> None:
    at_1 = cohort(flag_key, 1)
    assert at_1
    assert at_1 <= cohort(flag_key, 10)


# --- two flags are independent ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percentage", "expected_overlap", "tolerance"),
    [(50, 25.0, 1.0), (10, 1.0, 0.5)],
)
def test_two_flags_cohorts_overlap_as_independent_draws(
    percentage: float, expected_overlap: float, tolerance: float
) -> None:
    overlap = cohort(FLAG_A, percentage) & cohort(FLAG_B, percentage)
    assert abs(share(overlap) - expected_overlap) <= tolerance


def test_two_flags_put_the_same_key_in_different_buckets() -> None:
    differing = sum(a != b for a, b in zip(buckets(FLAG_A), buckets(FLAG_B), strict=True))
    assert differing > 0.99 * N_KEYS


# --- the ends: 100% and 0% -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag_key", [FLAG_A, FLAG_B])
def test_full_rollout_takes_every_key(flag_key: str) -> None:
    assert cohort(flag_key, 100) == ALL


@pytest.mark.parametrize("percentage", [100, 100.0, 150])
def test_full_rollout_takes_even_a_missing_value(percentage: float) -> None:
    assert in_rollout(FLAG_A, None, percentage) is True


@pytest.mark.parametrize("flag_key", [FLAG_A, FLAG_B])
def test_zero_rollout_takes_no_key(flag_key: str) -> None:
    assert cohort(flag_key, 0) == frozenset()


@pytest.mark.parametrize("percentage", [0, 0.0, -5])
def test_zero_rollout_takes_no_one_not_even_bucket_zero(percentage: float) -> None:
    bucket_zero_keys = [key for key, b in zip(KEYS, buckets(FLAG_A), strict=True) if b == 0]
    for key in [*bucket_zero_keys, "user-0"]:
        assert in_rollout(FLAG_A, key, percentage) is False
    assert in_rollout(FLAG_A, None, percentage) is False


@pytest.mark.parametrize("percentage", [0.001, 50, 99.999])
def test_partial_rollout_leaves_out_a_missing_value(percentage: float) -> None:
    assert in_rollout(FLAG_A, None, percentage) is False


# --- the formula is pinned -------------------------------------------------------------------------------------

SAMPLE_VALUES = [*KEYS[::997], "", "ü", "agent-7", "用户-1", "emoji-🚀", "with space", "a" * 300]


@pytest.mark.parametrize("flag_key", [FLAG_A, FLAG_B, "flag-é", "x"])
def test_bucket_is_murmur3_of_flag_key_plus_value_scaled_to_100000(flag_key: str) -> None:
    for value in SAMPLE_VALUES:
        expected = (mmh3.hash(flag_key + value, 0, signed=False) * 100_000) >> 32
        assert bucket(flag_key, value) == expected, value


@pytest.mark.parametrize(
    ("flag_key", "value", "expected"),
    [
        ("enable-reference-images", "user-1", 61491),
        ("enable-reference-images", "user-42", 26224),
        ("new-checkout", "user-1", 45498),
        ("new-checkout", "agent-7", 64968),
        ("flag-é", "ü", 72171),
    ],
)
def test_bucket_matches_known_vectors(flag_key: str, value: str, expected: int) -> None:
    assert bucket(flag_key, value) == expected


def test_bucket_hashes_the_plain_concatenation_without_separator() -> None:
    assert bucket("enable-reference-images", "user-1") == bucket("enable-reference-", "images" + "user-1")
    assert bucket("ab", "c") == bucket("a", "bc") == bucket("abc", "")


def test_known_vector_decides_rollout_membership_at_its_threshold() -> None:
    # user-1 sits in bucket 61491 of enable-reference-images: out at 61.491%, in from 61.492%.
    assert in_rollout("enable-reference-images", "user-1", 61.491) is False
    assert in_rollout("enable-reference-images", "user-1", 61.492) is True


@pytest.mark.parametrize("text", ["new-checkoutuser-1", "", "flag-éü", "用户-1", "emoji-🚀", "user-\ud800", "\udfff"])
def test_unit_hash_is_murmur3_of_the_utf8_bytes_surrogates_passed_through(text: str) -> None:
    assert unit_hash(text) == mmh3.hash(text.encode("utf-8", "surrogatepass"), 0, signed=False)


def test_a_hash_is_below_the_limit_exactly_when_its_bucket_is_below_the_threshold() -> None:
    # Every threshold: the hash just below its limit is in a bucket below it, the limit itself in one at or above.
    assert (hash_limit(0), hash_limit(BUCKETS)) == (0, 2**32)  # nobody, everybody
    for threshold in range(1, BUCKETS):
        limit = hash_limit(threshold)
        assert ((limit - 1) * BUCKETS) >> 32 < threshold <= (limit * BUCKETS) >> 32, threshold


def test_bucket_of_a_lone_surrogate_value_does_not_kill_the_interpreter() -> None:
    code = (
        "from controlplane_client.provider.bucketing import bucket\n"
        "print(bucket('enable-reference-images', 'user-\\ud800'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    # A Python exception (returncode 1) is acceptable here; death by a signal (negative returncode) is not.
    assert result.returncode >= 0, f"killed by signal {-result.returncode}"


# --- property: cohorts only grow, for any flag, value and pair of percentages -------------------------------------

# Surrogate-free text (utf-8 encodable); lone surrogates have their own subprocess test above.
VALUES = st.none() | st.text(st.characters(codec="utf-8"), max_size=40)
PERCENTAGES = st.floats(min_value=0, max_value=100) | st.sampled_from([0, 0.001, 1, 10, 50, 99.999, 100])


@settings(max_examples=300, deadline=None)
@given(
    flag_key=st.from_regex(FLAG_KEY_PATTERN, fullmatch=True),
    value=VALUES,
    percentages=st.tuples(PERCENTAGES, PERCENTAGES).map(sorted),
)
def test_in_rollout_at_a_lower_percentage_implies_in_rollout_at_any_higher(
    flag_key: str, value: str | None, percentages: list[float]
) -> None:
    p1, p2 = percentages
    assert p1 <= p2
    if in_rollout(flag_key, value, p1):
        assert in_rollout(flag_key, value, p2)
