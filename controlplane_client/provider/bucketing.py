"""Sticky percentage bucketing, the formula every client must share.

    bucket(flag_key, value) = (murmur3_x86_32(utf8(flag_key + value), seed=0) * 100_000) >> 32   in [0, 100000)
    in_rollout(flag_key, value, p) = p >= 100  or  (p > 0 and bucket(flag_key, value) < round(p * 1000))

This is flagd's fractional formula (hash of the flag key concatenated with the bucketing value, unsigned
MurmurHash3 x86 32-bit, seed 0) with 100,000 buckets, so percentages have 0.001% resolution. A user's bucket
depends only on the flag key and the value, never on the percentage, so cohorts only grow as the percentage
rises; the flag key in the hash makes two flags' cohorts independent.
"""

from __future__ import annotations

import mmh3

__all__ = ["BUCKETS", "bucket", "in_rollout"]

BUCKETS = 100_000


def bucket(flag_key: str, value: str) -> int:
    """The bucket of a bucketing value for a flag, in [0, 100000)."""
    # Hash bytes, not str: mmh3 5.3 crashes the process on a str with a lone surrogate; "surrogatepass" keeps
    # such values hashable (every valid string encodes exactly as UTF-8, as the formula says).
    return (mmh3.hash((flag_key + value).encode("utf-8", "surrogatepass"), 0, signed=False) * BUCKETS) >> 32


def in_rollout(flag_key: str, value: str | None, percentage: float) -> bool:
    """True when the value falls inside the first ``percentage`` % of buckets; 100% takes everyone, 0% no one."""
    if percentage >= 100:
        return True
    if percentage <= 0 or value is None:
        return False
    return bucket(flag_key, value) < round(percentage * 1000)
