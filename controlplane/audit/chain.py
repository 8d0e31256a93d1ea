"""The audit hash chain: each record's digest covers its content and the digest of the record before it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["GENESIS_DIGEST", "ChainBreak", "RecordContent", "digest_of", "find_first_break"]

#: The `previous_digest` of the first record.
GENESIS_DIGEST = "0" * 64


@dataclass(frozen=True, slots=True)
class RecordContent:
    """The fields of an audit record that its digest covers."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    target_type: str
    target: str
    environment: str | None
    reason: str | None
    before: Any
    after: Any
    previous_digest: str
    digest: str = ""


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first record that does not verify, and why."""

    record_id: int
    reason: str


def digest_of(record: RecordContent) -> str:
    """SHA-256 over a canonical JSON form of the record and the previous digest."""
    canonical = json.dumps(
        {
            # Microsecond UTC text: what both SQLite and PostgreSQL give back unchanged.
            "occurred_at": record.occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": record.actor,
            "action": record.action,
            "target_type": record.target_type,
            "target": record.target,
            "environment": record.environment,
            "reason": record.reason,
            "before": record.before,
            "after": record.after,
            "previous_digest": record.previous_digest,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_first_break(records: Iterable[RecordContent]) -> ChainBreak | None:
    """Walk records in id order and name the first whose content or link does not verify."""
    expected_previous = GENESIS_DIGEST
    for record in records:
        if record.previous_digest != expected_previous:
            return ChainBreak(
                record.id,
                "previous_digest does not match the record before it: a record was removed, inserted or reordered",
            )
        if digest_of(record) != record.digest:
            return ChainBreak(record.id, "digest does not match the record's content: the record was altered")
        expected_previous = record.digest
    return None
