"""Writing, querying and verifying the audit log."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from controlplane.audit.chain import GENESIS_DIGEST, ChainBreak, RecordContent, digest_of, find_first_break
from controlplane.audit.models import AuditRecord

__all__ = ["ChainReport", "append_audit_record", "list_audit_records", "record_content", "verify_audit_chain"]

# Any constant works; it names the one lock that orders appends to the chain across replicas.
_CHAIN_LOCK_KEY = 7_311_002


def append_audit_record(
    session: Session,
    *,
    now: datetime,
    actor: str,
    action: str,
    target_type: str,
    target: str,
    environment: str | None = None,
    reason: str | None = None,
    before: Any = None,
    after: Any = None,
) -> AuditRecord:
    """Append one record to the chain in the caller's transaction."""
    if session.get_bind().dialect.name == "postgresql":
        # Two transactions must not both link to the same last record; SQLite gets this from BEGIN IMMEDIATE.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK_KEY})
    previous = session.scalar(select(AuditRecord.digest).order_by(AuditRecord.id.desc()).limit(1))
    content = RecordContent(
        id=0,
        occurred_at=now,
        actor=actor,
        action=action,
        target_type=target_type,
        target=target,
        environment=environment,
        reason=reason,
        before=before,
        after=after,
        previous_digest=previous or GENESIS_DIGEST,
    )
    record = AuditRecord(
        occurred_at=now,
        actor=actor,
        action=action,
        target_type=target_type,
        target=target,
        environment=environment,
        reason=reason,
        before=before,
        after=after,
        previous_digest=content.previous_digest,
        digest=digest_of(content),
    )
    session.add(record)
    session.flush()
    return record


def list_audit_records(
    session: Session,
    *,
    target: str | None = None,
    environment: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Records matching every given filter, newest first; ``before_id`` pages backwards."""
    query = select(AuditRecord).order_by(AuditRecord.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditRecord.target == target)
    if environment is not None:
        query = query.where(AuditRecord.environment == environment)
    if actor is not None:
        query = query.where(AuditRecord.actor == actor)
    if action is not None:
        query = query.where(AuditRecord.action == action)
    if since is not None:
        query = query.where(AuditRecord.occurred_at >= since)
    if until is not None:
        query = query.where(AuditRecord.occurred_at < until)
    if before_id is not None:
        query = query.where(AuditRecord.id < before_id)
    return list(session.scalars(query))


def _contents(session: Session) -> Generator[RecordContent]:
    # Streamed in id order so verifying a long log keeps memory flat; closed even when the walk stops early.
    result = session.scalars(select(AuditRecord).order_by(AuditRecord.id).execution_options(yield_per=500))
    try:
        yield from (record_content(record) for record in result)
    finally:
        result.close()


def record_content(record: AuditRecord) -> RecordContent:
    """The fields of a stored record that its digest covers."""
    return RecordContent(
        id=record.id,
        occurred_at=record.occurred_at,
        actor=record.actor,
        action=record.action,
        target_type=record.target_type,
        target=record.target,
        environment=record.environment,
        reason=record.reason,
        before=record.before,
        after=record.after,
        previous_digest=record.previous_digest,
        digest=record.digest,
    )


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What walking the chain found: how many records, the head reached, and the first break if any."""

    records: int
    head: RecordContent | None
    broken: ChainBreak | None


def verify_audit_chain(session: Session) -> ChainReport:
    """Check the whole chain, streaming it in id order."""
    counted = 0
    head: RecordContent | None = None

    def counting(contents: Iterator[RecordContent]) -> Iterator[RecordContent]:
        nonlocal counted, head
        for content in contents:
            counted += 1
            head = content
            yield content

    with closing(_contents(session)) as contents:
        broken = find_first_break(counting(contents))
    return ChainReport(records=counted, head=head, broken=broken)
