"""Use cases of telemetry: record an ingested batch (windows, per-subject counts, tails), expire them.

Takes a session, never commits. Writers are serialised (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE), so
the read-modify-write of window rows below never races another batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import msgspec
from sqlalchemy import Table, bindparam, delete, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from controlplane.errors import Conflict
from controlplane.telemetry.aggregation import Aggregates, SeriesKey, SubjectKey, TailItem, WindowAggregate
from controlplane.telemetry.digest import is_legacy_digest
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
    #: The digest an earlier release would have stored for this batch, computed only when a stored one is compared.
    legacy_digest: Callable[[], str] | None = None

    def is_batch(self, pipeline: str, digest: str) -> bool:
        """Whether a batch recorded with ``pipeline`` and ``digest`` holds the same events as this one."""
        if pipeline != self.pipeline:
            return False
        if digest == self.digest:
            return True
        return is_legacy_digest(digest) and self.legacy_digest is not None and digest == self.legacy_digest()


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
            if not batch.is_batch(*seen):
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
    tails: dict[tuple[str, str, str], list[TailItem]] = {}
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
    if session.get_bind().dialect.name == "postgresql":
        _upsert_windows_postgresql(session, pipeline, aggregates)
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
        updates.append({"row_id": stored.id, **_aggregate_values(merged)})
    if inserts:
        session.execute(insert(TelemetryWindow), inserts)
    if updates:
        # Core executemany by primary key: the ORM's bulk update spends more time preparing than the database does.
        table = cast(Table, TelemetryWindow.__table__)
        session.execute(table.update().where(table.c.id == bindparam("row_id")), updates)


#: Every series of a batch group added to its window row in one statement: rows new to the window are inserted,
#: rows already there get the sums, extremes, histogram counts and totals added in the database (as
#: ``WindowAggregate.merge`` adds them), so nothing is read back and each row travels once. Histograms are added
#: position by position; ``totals`` key by key. A JSON ``null`` (no histogram, no totals) takes the other side.
_UPSERT_WINDOWS_POSTGRESQL = text(
    """
    INSERT INTO telemetry_windows AS w (
        window_start, pipeline, event, environment, variant, outcome, labels_key,
        count, value_count, value_sum, value_sumsq, value_min, value_max, buckets, totals
    )
    SELECT v.window_start, :pipeline, v.event, v.environment, v.variant, v.outcome, v.labels_key,
        v.count, v.value_count, v.value_sum, v.value_sumsq, v.value_min, v.value_max,
        COALESCE(v.buckets, 'null'), COALESCE(v.totals, 'null')
    FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v(
        window_start timestamptz, event text, environment text, variant text, outcome text, labels_key text,
        count bigint, value_count bigint, value_sum float8, value_sumsq float8, value_min float8, value_max float8,
        buckets jsonb, totals jsonb
    )
    ON CONFLICT ON CONSTRAINT uq_telemetry_windows_series DO UPDATE SET
        count = w.count + excluded.count,
        value_count = w.value_count + excluded.value_count,
        value_sum = w.value_sum + excluded.value_sum,
        value_sumsq = w.value_sumsq + excluded.value_sumsq,
        value_min = LEAST(w.value_min, excluded.value_min),
        value_max = GREATEST(w.value_max, excluded.value_max),
        buckets = CASE
            WHEN jsonb_typeof(excluded.buckets) IS DISTINCT FROM 'array' THEN w.buckets
            WHEN jsonb_typeof(w.buckets) IS DISTINCT FROM 'array' THEN excluded.buckets
            ELSE (
                SELECT jsonb_agg(COALESCE(mine.n::bigint, 0) + COALESCE(theirs.n::bigint, 0)
                                 ORDER BY COALESCE(mine.i, theirs.i))
                FROM jsonb_array_elements_text(w.buckets) WITH ORDINALITY AS mine(n, i)
                FULL JOIN jsonb_array_elements_text(excluded.buckets) WITH ORDINALITY AS theirs(n, i)
                    ON mine.i = theirs.i
            )
        END,
        totals = CASE
            WHEN jsonb_typeof(excluded.totals) IS DISTINCT FROM 'object' THEN w.totals
            WHEN jsonb_typeof(w.totals) IS DISTINCT FROM 'object' THEN excluded.totals
            ELSE (
                SELECT jsonb_object_agg(
                    name,
                    COALESCE((w.totals ->> name)::float8, 0) + COALESCE((excluded.totals ->> name)::float8, 0)
                )
                FROM (SELECT jsonb_object_keys(w.totals) UNION SELECT jsonb_object_keys(excluded.totals)) AS keys(name)
            )
        END
    """
)


def _upsert_windows_postgresql(session: Session, pipeline: str, aggregates: Aggregates) -> None:
    # The rows travel as one JSON document: psycopg escapes each element of a text array in Python, which cost
    # more than the statement itself. Floats survive the trip exactly (shortest repr both ways).
    rows = [
        {
            "window_start": start.isoformat(),
            "event": event,
            "environment": environment,
            "variant": variant,
            "outcome": outcome,
            "labels_key": labels,
            **_aggregate_values(added),
        }
        for (start, event, environment, variant, outcome, labels), added in aggregates.series.items()
    ]
    session.execute(_UPSERT_WINDOWS_POSTGRESQL, {"pipeline": pipeline, "rows": msgspec.json.encode(rows).decode()})


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


#: A group's newest events of each (event type, environment, segment) added to its stored tail in the database: the
#: stored and the new events in time order (ISO strings in UTC, compared byte by byte as Python compares them; at the
#: same instant stored events first, then the batch's order), the newest TAIL_LENGTH kept. Nothing is read back.
_UPSERT_TAILS_POSTGRESQL = text(
    """
    INSERT INTO event_tails AS t (pipeline, event, environment, segment, events, updated_at)
    SELECT :pipeline, v.event, v.environment, v.segment, v.events, :now
    FROM jsonb_to_recordset(CAST(:tails AS jsonb)) AS v(event text, environment text, segment text, events jsonb)
    ON CONFLICT (pipeline, event, environment, segment) DO UPDATE SET
        events = (
            SELECT jsonb_agg(item ORDER BY (item ->> 0) COLLATE "C", position)
            FROM (
                SELECT item, position
                FROM jsonb_array_elements(t.events || excluded.events) WITH ORDINALITY AS merged(item, position)
                ORDER BY (item ->> 0) COLLATE "C" DESC, position DESC
                LIMIT :tail_length
            ) AS newest
        ),
        updated_at = excluded.updated_at
    """
)


def _add_to_tails(session: Session, pipeline: str, aggregates: Aggregates, now: datetime) -> None:
    if not aggregates.tails:
        return
    if session.get_bind().dialect.name == "postgresql":
        tails = [
            {"event": event, "environment": environment, "segment": segment, "events": _tail_items(items)}
            for (event, environment, segment), items in aggregates.tails.items()
        ]
        session.execute(
            _UPSERT_TAILS_POSTGRESQL,
            {
                "pipeline": pipeline,
                "now": now,
                "tail_length": TAIL_LENGTH,
                "tails": msgspec.json.encode(tails).decode(),
            },
        )
        return
    table = cast(Table, EventTail.__table__)
    keys = [(pipeline, *key) for key in aggregates.tails]
    # Core, not ORM entities: one or two rows per group, where loading and flushing entities costs more than SQL.
    stored = {
        (row.event, row.environment, row.segment): row.events
        for row in session.execute(
            select(table.c.event, table.c.environment, table.c.segment, table.c.events).where(
                tuple_(table.c.pipeline, table.c.event, table.c.environment, table.c.segment).in_(keys)
            )
        )
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for (event, environment, segment), items in aggregates.tails.items():
        fresh = _tail_items(items)
        kept = stored.get((event, environment, segment))
        if kept is None:
            inserts.append(
                {
                    "pipeline": pipeline,
                    "event": event,
                    "environment": environment,
                    "segment": segment,
                    "events": fresh,
                    "updated_at": now,
                }
            )
            continue
        # Late events sort into place; ISO strings in UTC sort as times do.
        merged = sorted([*kept, *fresh], key=lambda item: str(item[0]))
        updates.append(
            {
                "tail_event": event,
                "tail_environment": environment,
                "tail_segment": segment,
                "events": merged[-TAIL_LENGTH:],
            }
        )
    if inserts:
        session.execute(insert(table), inserts)
    if updates:
        session.execute(
            table.update()
            .where(
                table.c.pipeline == pipeline,
                table.c.event == bindparam("tail_event"),
                table.c.environment == bindparam("tail_environment"),
                table.c.segment == bindparam("tail_segment"),
            )
            .values(events=bindparam("events"), updated_at=now),
            updates,
        )


def _tail_items(items: list[TailItem]) -> list[list[Any]]:
    """The stored form of a batch's tail events: only the newest TAIL_LENGTH can survive a merge, and the batch's
    items are already in time order. Times are written in UTC, whatever offset the sender used, so that stored
    times sort as strings in time order."""
    return [
        [at.astimezone(UTC).isoformat(), outcome, variant, labels]
        for at, outcome, variant, labels in items[-TAIL_LENGTH:]
    ]


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
