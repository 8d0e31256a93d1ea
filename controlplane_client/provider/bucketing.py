"""Sticky percentage bucketing, the formula every client must share.

    bucket(flag_key, value) = (murmur3_x86_32(utf8(flag_key + value), seed=0) * 100_000) >> 32   in [0, 100000)
    in_rollout(flag_key, value, p) = p >= 100  or  (p > 0 and bucket(flag_key, value) < round(p * 1000))

This is flagd's fractional formula (hash of the flag key concatenated with the bucketing value, unsigned
MurmurHash3 x86 32-bit, seed 0) with 100,000 buckets, so percentages have 0.001% resolution. A user's bucket
depends only on the flag key and the value, never on the percentage, so cohorts only grow as the percentage
rises; the flag key in the hash makes two flags' cohorts independent.

The engine decides the same comparison without the scaling: ``bucket < threshold`` holds exactly when the hash is
below ``hash_limit(threshold)``, which a compiled rollout computes once.
"""

from __future__ import annotations

from mmh3 import hash as _murmur3

__all__ = ["BUCKETS", "bucket", "hash_limit", "in_rollout", "unit_hash"]

BUCKETS = 100_000


def unit_hash(text: str) -> int:
    """murmur3_x86_32 of the UTF-8 bytes of ``text``, seed 0, unsigned (``text`` is the flag key + the value)."""
    if text.isascii():
        # mmh3 hashes a str as its UTF-8 bytes, which for ASCII are the str's own: no encoded copy to build.
        return _murmur3(text, 0, False)
    # Bytes, not str: mmh3 5.3 crashes the process on a str with a lone surrogate; "surrogatepass" keeps such
    # values hashable (every valid string encodes exactly as UTF-8, as the formula says).
    return _murmur3(text.encode("utf-8", "surrogatepass"), 0, False)


def bucket(flag_key: str, value: str) -> int:
    """The bucket of a bucketing value for a flag, in [0, 100000)."""
    return (unit_hash(flag_key + value) * BUCKETS) >> 32


def hash_limit(threshold: int) -> int:
    """The least hash whose bucket is ``threshold`` or more: ``bucket < threshold`` exactly when ``hash < limit``."""
    # (h * B) >> 32 < t  <=>  h * B < t << 32  <=>  h < (t << 32) / B  <=>  h < ceil((t << 32) / B), all in integers.
    return -(-(threshold << 32) // BUCKETS)


def in_rollout(flag_key: str, value: str | None, percentage: float) -> bool:
    """True when the value falls inside the first ``percentage`` % of buckets; 100% takes everyone, 0% no one."""
    if percentage >= 100:
        return True
    if percentage <= 0 or value is None:
        return False
    return bucket(flag_key, value) < round(percentage * 1000)
