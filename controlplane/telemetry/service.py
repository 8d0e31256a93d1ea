"""Use cases of telemetry: record an ingested batch (windows, per-subject counts, tails), expire them.

Takes a session, never commits. Writers are serialised (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE), so
the read-modify-write of window rows below never races another batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, text, tuple_
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
        # Core, not the ORM's bulk insert: the same executemany without the ORM's per-row bookkeeping.
        session.execute(insert(cast(Table, IngestedBatch.__table__)), rows)
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
        _update_windows(session, updates)


#: Every updated window row in one statement: one message and one plan for the group, where an executemany sends
#: (and the driver prepares and the server executes) one UPDATE per row.
_UPDATE_WINDOWS_POSTGRESQL = text(
    """
    UPDATE telemetry_windows AS w
    SET count = v.count, value_count = v.value_count, value_sum = v.value_sum, value_sumsq = v.value_sumsq,
        value_min = v.value_min, value_max = v.value_max, buckets = v.buckets, totals = v.totals
    FROM unnest(
        CAST(:id AS bigint[]), CAST(:count AS bigint[]), CAST(:value_count AS bigint[]),
        CAST(:value_sum AS float8[]), CAST(:value_sumsq AS float8[]), CAST(:value_min AS float8[]),
        CAST(:value_max AS float8[]), CAST(:buckets AS jsonb[]), CAST(:totals AS jsonb[])
    ) AS v(id, count, value_count, value_sum, value_sumsq, value_min, value_max, buckets, totals)
    WHERE w.id = v.id
    """
)

_WINDOW_VALUES = ("count", "value_count", "value_sum", "value_sumsq", "value_min", "value_max")


def _update_windows(session: Session, updates: list[dict[str, Any]]) -> None:
    """Write the merged values of existing window rows, by primary key."""
    if session.get_bind().dialect.name == "postgresql":
        columns: dict[str, list[Any]] = {name: [row[name] for row in updates] for name in ("id", *_WINDOW_VALUES)}
        # As the JSON column type writes them: None is JSON null.
        columns["buckets"] = [json.dumps(row["buckets"]) for row in updates]
        columns["totals"] = [json.dumps(row["totals"]) for row in updates]
        session.execute(_UPDATE_WINDOWS_POSTGRESQL, columns)
        return
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
    table = cast(Table, EventTail.__table__)
    keys = [(pipeline, event, environment) for event, environment in aggregates.tails]
    # Core, not ORM entities: one or two rows per group, where loading and flushing entities costs more than SQL.
    stored = {
        (row.event, row.environment): row.events
        for row in session.execute(
            select(table.c.event, table.c.environment, table.c.events).where(
                tuple_(table.c.pipeline, table.c.event, table.c.environment).in_(keys)
            )
        )
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for (event, environment), items in aggregates.tails.items():
        # Only the newest TAIL_LENGTH can survive the merge below; the batch's items are already in time order.
        fresh = [[at.isoformat(), outcome, variant, labels] for at, outcome, variant, labels in items[-TAIL_LENGTH:]]
        kept = stored.get((event, environment))
        if kept is None:
            inserts.append(
                {"pipeline": pipeline, "event": event, "environment": environment, "events": fresh, "updated_at": now}
            )
            continue
        # Late events sort into place; ISO strings in UTC sort as times do.
        merged = sorted([*kept, *fresh], key=lambda item: str(item[0]))
        updates.append({"tail_event": event, "tail_environment": environment, "events": merged[-TAIL_LENGTH:]})
    if inserts:
        session.execute(insert(table), inserts)
    if updates:
        session.execute(
            table.update()
            .where(
                table.c.pipeline == pipeline,
                table.c.event == bindparam("tail_event"),
                table.c.environment == bindparam("tail_environment"),
            )
            .values(events=bindparam("events"), updated_at=now),
            updates,
        )


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
