"""Use cases of telemetry: record an ingested batch (windows, per-subject counts, tails), expire them.

Takes a session, never commits. Writers are serialised (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE), so
the read-modify-write of window rows below never races another batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from controlplane.errors import Conflict
from controlplane.telemetry.aggregation import Aggregates, SeriesKey, SubjectKey, TailItem, WindowAggregate
from controlplane.telemetry.models import EventTail, IngestedBatch, TelemetrySubject, TelemetryWindow
from controlplane.telemetry.schemas import IngestResult

__all__ = [
    "TAIL_LENGTH",
    "PendingBatch",
    "delete_old_batches",
    "delete_old_subjects",
    "delete_old_windows",
    "merge_aggregates",
    "record_batches",
]

#: Events kept per (event type, environment) for streak rules; a streak rule may not ask for a longer run.
TAIL_LENGTH = 64


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """A validated, aggregated batch waiting to be recorded."""

    batch_id: str
    pipeline: str
    digest: str
    aggregates: Aggregates


def _reused(batch_id: str) -> Conflict:
    return Conflict(
        "batch-id-reused",
        f"batch `{batch_id}` was already accepted with different events; a retry must resend the same batch, and "
        "a new batch needs a new id",
        batch_id=batch_id,
    )


def record_batches(
    session: Session, batches: Sequence[PendingBatch], *, now: datetime
) -> list[IngestResult | Conflict]:
    """Record several batches in one transaction, each once: per batch its result, or the Conflict refusing it.

    A batch id seen before (in the database or earlier in ``batches``) adds nothing; with other events it is
    refused. Every new batch's aggregates are merged first, so each window row is read and written once.
    """
    ids = sorted({batch.batch_id for batch in batches})
    known = {
        row.batch_id: (row.pipeline, row.digest)
        for row in session.execute(
            select(IngestedBatch.batch_id, IngestedBatch.pipeline, IngestedBatch.digest).where(
                IngestedBatch.batch_id.in_(ids)
            )
        )
    }
    results: list[IngestResult | Conflict] = []
    fresh: dict[str, list[Aggregates]] = {}
    rows: list[dict[str, Any]] = []
    for batch in batches:
        seen = known.get(batch.batch_id)
        if seen is not None:
            if seen != (batch.pipeline, batch.digest):
                results.append(_reused(batch.batch_id))
            else:
                results.append(
                    IngestResult(batch_id=batch.batch_id, pipeline=batch.pipeline, accepted=0, duplicate=True, series=0)
                )
            continue
        known[batch.batch_id] = (batch.pipeline, batch.digest)
        fresh.setdefault(batch.pipeline, []).append(batch.aggregates)
        rows.append(
            {
                "batch_id": batch.batch_id,
                "pipeline": batch.pipeline,
                "digest": batch.digest,
                "events": batch.aggregates.events,
                "received_at": now,
            }
        )
        results.append(
            IngestResult(
                batch_id=batch.batch_id,
                pipeline=batch.pipeline,
                accepted=batch.aggregates.events,
                duplicate=False,
                series=len(batch.aggregates.series),
            )
        )
    if rows:
        session.execute(insert(IngestedBatch), rows)
    for pipeline, parts in fresh.items():
        merged = merge_aggregates(parts)
        _add_to_windows(session, pipeline, merged)
        _add_to_subjects(session, pipeline, merged)
        _add_to_tails(session, pipeline, merged, now)
    return results


def merge_aggregates(parts: Sequence[Aggregates]) -> Aggregates:
    """One Aggregates holding several batches' series, subject counts and tails (tails kept in time order)."""
    if len(parts) == 1:
        return parts[0]
    series: dict[SeriesKey, WindowAggregate] = {}
    tails: dict[tuple[str, str], list[TailItem]] = {}
    subjects: dict[SubjectKey, int] = {}
    for part in parts:
        for subject_key, count in part.subjects.items():
            subjects[subject_key] = subjects.get(subject_key, 0) + count
        for key, added in part.series.items():
            found = series.get(key)
            if found is None:
                series[key] = found = WindowAggregate(buckets=[0] * len(added.buckets) if added.buckets else None)
            found.merge(added)
        for tail_key, items in part.tails.items():
            tails.setdefault(tail_key, []).extend(items)
    for items in tails.values():
        items.sort(key=lambda item: item[0])
    return Aggregates(series=series, tails=tails, events=sum(part.events for part in parts), subjects=subjects)


def _add_to_windows(session: Session, pipeline: str, aggregates: Aggregates) -> None:
    if not aggregates.series:
        return
    starts = sorted({key[0] for key in aggregates.series})
    event_names = sorted({key[1] for key in aggregates.series})
    window = TelemetryWindow
    existing: dict[tuple[Any, ...], Any] = {}
    rows = session.execute(
        select(
            window.id,
            window.window_start,
            window.event,
            window.environment,
            window.variant,
            window.outcome,
            window.labels_key,
            window.count,
            window.value_count,
            window.value_sum,
            window.value_sumsq,
            window.value_min,
            window.value_max,
            window.buckets,
            window.totals,
        ).where(window.pipeline == pipeline, window.window_start.in_(starts), window.event.in_(event_names))
    )
    for row in rows:
        existing[(row.window_start, row.event, row.environment, row.variant, row.outcome, row.labels_key)] = row
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for key, added in aggregates.series.items():
        stored = existing.get(key)
        if stored is None:
            inserts.append(_window_values(pipeline, key, added))
            continue
        merged = WindowAggregate(
            count=stored.count,
            value_count=stored.value_count,
            value_sum=stored.value_sum,
            value_sumsq=stored.value_sumsq,
            value_min=stored.value_min,
            value_max=stored.value_max,
            buckets=list(stored.buckets) if stored.buckets is not None else None,
            totals=dict(stored.totals or {}),
        )
        merged.merge(added)
        updates.append({"id": stored.id, **_aggregate_values(merged)})
    if inserts:
        session.execute(insert(TelemetryWindow), inserts)
    if updates:
        # Core executemany by primary key: the ORM's bulk update spends more time preparing than the database does.
        table = cast(Table, TelemetryWindow.__table__)
        session.execute(
            table.update().where(table.c.id == bindparam("row_id")),
            [{"row_id": values.pop("id"), **values} for values in updates],
        )


def _aggregate_values(aggregate: WindowAggregate) -> dict[str, Any]:
    return {
        "count": aggregate.count,
        "value_count": aggregate.value_count,
        "value_sum": aggregate.value_sum,
        "value_sumsq": aggregate.value_sumsq,
        "value_min": aggregate.value_min,
        "value_max": aggregate.value_max,
        "buckets": aggregate.buckets,
        "totals": aggregate.totals or None,
    }


def _window_values(pipeline: str, key: tuple[Any, ...], aggregate: WindowAggregate) -> dict[str, Any]:
    start, event, environment, variant, outcome, labels = key
    return {
        "window_start": start,
        "pipeline": pipeline,
        "event": event,
        "environment": environment,
        "variant": variant,
        "outcome": outcome,
        "labels_key": labels,
        **_aggregate_values(aggregate),
    }


def _add_to_subjects(session: Session, pipeline: str, aggregates: Aggregates) -> None:
    """Add the subject counts: one upsert per row, sent as one statement list (rows are many and small, and reading
    them back first, as the windows are, would read every subject of the window again at every commit)."""
    if not aggregates.subjects:
        return
    rows = [
        {
            "window_start": start,
            "pipeline": pipeline,
            "event": event,
            "environment": environment,
            "variant": variant,
            "outcome": outcome,
            "labels_key": labels,
            "subject": subject,
            "count": count,
        }
        for (start, event, environment, variant, outcome, labels, subject), count in aggregates.subjects.items()
    ]
    upsert = postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = upsert(TelemetrySubject)
    table = cast(Table, TelemetrySubject.__table__)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[
                "window_start",
                "pipeline",
                "event",
                "environment",
                "variant",
                "outcome",
                "labels_key",
                "subject",
            ],
            set_={"count": table.c.count + statement.excluded.count},
        ),
        rows,
    )


def _add_to_tails(session: Session, pipeline: str, aggregates: Aggregates, now: datetime) -> None:
    if not aggregates.tails:
        return
    keys = [(pipeline, event, environment) for event, environment in aggregates.tails]
    stored = {
        (row.event, row.environment): row
        for row in session.scalars(
            select(EventTail).where(tuple_(EventTail.pipeline, EventTail.event, EventTail.environment).in_(keys))
        )
    }
    for (event, environment), items in aggregates.tails.items():
        # Only the newest TAIL_LENGTH can survive the merge below; the batch's items are already in time order.
        fresh = [[at.isoformat(), outcome, variant, labels] for at, outcome, variant, labels in items[-TAIL_LENGTH:]]
        row = stored.get((event, environment))
        if row is None:
            session.add(
                EventTail(
                    pipeline=pipeline, event=event, environment=environment, events=fresh[-TAIL_LENGTH:], updated_at=now
                )
            )
            continue
        # Late events sort into place; ISO strings in UTC sort as times do.
        merged = sorted([*row.events, *fresh], key=lambda item: str(item[0]))
        row.events = merged[-TAIL_LENGTH:]
        row.updated_at = now


def delete_old_windows(session: Session, *, before: datetime) -> int:
    """Delete aggregation windows that start before ``before``; return how many."""
    result = session.execute(delete(TelemetryWindow).where(TelemetryWindow.window_start < before))
    return int(getattr(result, "rowcount", 0) or 0)


def delete_old_subjects(session: Session, *, before: datetime) -> int:
    """Delete the subject counts of windows that start before ``before`` (as their windows go); return how many."""
    result = session.execute(delete(TelemetrySubject).where(TelemetrySubject.window_start < before))
    return int(getattr(result, "rowcount", 0) or 0)


def delete_old_batches(session: Session, *, before: datetime) -> int:
    """Forget batch ids received before ``before`` (older than any event ingest still accepts)."""
    result = session.execute(delete(IngestedBatch).where(IngestedBatch.received_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


def retention_cutoffs(
    now: datetime, *, window_retention: timedelta, max_event_age: timedelta
) -> tuple[datetime, datetime]:
    """When windows and batch ids may go: windows after their retention; batch ids once no retry can be accepted."""
    return now - window_retention, now - 2 * max_event_age
