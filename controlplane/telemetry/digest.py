"""What identifies a batch's events, so a retry counts once and a reused batch id is refused.

A digest is of the decoded batch, not of its bytes: a retry that re-serialises the same events (other key order,
whitespace, compression, UTC written as ``Z`` or ``+00:00``) is the same batch.
"""

from __future__ import annotations

import hashlib

import msgspec

from controlplane.telemetry.aggregation import decode_batch
from controlplane.telemetry.schemas import EventBatch

__all__ = ["batch_digest", "is_legacy_digest", "legacy_batch_digest"]

#: Starts every digest of this version. Not a hex digit, so it never equals a legacy digest (64 hex digits).
VERSION = "b"

# MessagePack with sorted map keys: struct fields in their declared order, times as instants. Half the cost of
# the legacy canonical JSON, and a smaller input to hash.
_CANONICAL = msgspec.msgpack.Encoder(order="deterministic")


def batch_digest(batch: EventBatch) -> str:
    """The digest stored with a batch: the version, then 63 hex digits of SHA-256 (it fits the 64-character
    column, and 252 bits leave no practical chance of two batches colliding)."""
    return VERSION + hashlib.sha256(_CANONICAL.encode(batch)).hexdigest()[:63]


def legacy_batch_digest(body: bytes) -> str:
    """The digest earlier releases stored (SHA-256 of the batch as key-sorted JSON), for a retry of a batch they
    recorded. Needed only while such rows are kept: ingest retention deletes them."""
    return hashlib.sha256(msgspec.json.encode(decode_batch(body), order="sorted")).hexdigest()


def is_legacy_digest(digest: str) -> bool:
    """Whether a stored digest was made by an earlier release."""
    return not digest.startswith(VERSION)
