"""Group commit: batches submitted together share one transaction, each answered with its own result."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.db import session_scope
from controlplane.errors import Conflict
from controlplane.telemetry.aggregation import Aggregates, WindowAggregate
from controlplane.telemetry.models import IngestedBatch, TelemetryWindow
from controlplane.telemetry.schemas import IngestResult
from controlplane.telemetry.service import PendingBatch, record_batches
from controlplane.telemetry.writer import BatchWriter
from tests.conftest import FakeClock


def pending(batch_id: str, count: int, clock: FakeClock, digest: str = "d") -> PendingBatch:
    start = clock() - timedelta(seconds=clock().second % 10, microseconds=clock().microsecond)
    key = (start, "http_request", "production", "on", "", '{"route":"upload_reference_image"}')
    series = {key: WindowAggregate(count=count)}
    return PendingBatch(batch_id, "reference-images", digest, Aggregates(series=series, tails={}, events=count))


def stored(factory: sessionmaker[Session]) -> tuple[int, int]:
    with session_scope(factory) as session:
        batches = session.scalar(select(func.count()).select_from(IngestedBatch)) or 0
        events = session.scalar(select(func.coalesce(func.sum(TelemetryWindow.count), 0))) or 0
    return int(batches), int(events)


def test_batches_submitted_together_commit_in_one_transaction(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    writer = BatchWriter(session_factory, clock=clock)

    async def submit_all() -> list[IngestResult]:
        return await asyncio.gather(*(writer.submit(pending(f"batch-{i:04d}", i + 1, clock)) for i in range(10)))

    results = asyncio.run(submit_all())

    assert [result.accepted for result in results] == [i + 1 for i in range(10)]
    assert writer.transactions == 1
    assert stored(session_factory) == (10, sum(range(1, 11)))


def test_a_reused_batch_id_is_refused_alone_and_a_repeat_counts_once(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    writer = BatchWriter(session_factory, clock=clock)

    async def submit_all() -> list[Any]:
        answers = await asyncio.gather(
            writer.submit(pending("batch-a001", 5, clock)),
            writer.submit(pending("batch-a001", 5, clock)),  # the same batch again: a duplicate
            writer.submit(pending("batch-a001", 7, clock, digest="other")),  # same id, other events: refused
            writer.submit(pending("batch-b001", 3, clock)),
            return_exceptions=True,
        )
        return list(answers)

    first, repeat, reused, other = asyncio.run(submit_all())

    assert isinstance(first, IngestResult) and first.accepted == 5 and not first.duplicate
    assert isinstance(repeat, IngestResult) and repeat.duplicate and repeat.accepted == 0
    assert isinstance(reused, Conflict) and reused.slug == "batch-id-reused"
    assert isinstance(other, IngestResult) and other.accepted == 3
    assert stored(session_factory) == (2, 8)


def test_a_failed_transaction_answers_every_waiting_batch_and_keeps_nothing(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    def record_then_fail(session: Session, batches: list[PendingBatch], *, now: Any) -> list[Any]:
        record_batches(session, batches, now=now)
        raise RuntimeError("disk full")

    writer = BatchWriter(session_factory, clock=clock, record=record_then_fail)

    async def submit_all() -> list[Any]:
        return await asyncio.gather(
            *(writer.submit(pending(f"batch-f{i:03d}", 1, clock)) for i in range(3)), return_exceptions=True
        )

    answers = asyncio.run(submit_all())

    assert all(isinstance(answer, RuntimeError) for answer in answers)
    assert stored(session_factory) == (0, 0)
    # The writer keeps working after a failed group.
    good = BatchWriter(session_factory, clock=clock)
    assert asyncio.run(good.submit(pending("batch-g001", 2, clock))).accepted == 2
    with pytest.raises(Conflict):
        asyncio.run(good.submit(pending("batch-g001", 9, clock, digest="changed")))


def test_a_window_row_written_again_adds_every_measure(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """The second group updates the row the first inserted: counts and sums add, extremes widen, buckets and totals
    add per entry, and a row of another series in the same group is inserted beside it."""
    start = clock() - timedelta(seconds=clock().second % 10, microseconds=clock().microsecond)
    key = (start, "reference_image_upload", "production", "on", "success", "{}")
    other = (start, "reference_image_upload", "production", "off", "success", "{}")

    def batch(batch_id: str, series: dict[Any, WindowAggregate]) -> PendingBatch:
        events = sum(found.count for found in series.values())
        return PendingBatch(batch_id, "reference-images", "d", Aggregates(series=series, tails={}, events=events))

    record = BatchWriter(session_factory, clock=clock)
    first = WindowAggregate(2, 2, 3.0, 5.0, 1.0, 2.0, [1, 1, 0], {"bytes": 10.0})
    asyncio.run(record.submit(batch("batch-w001", {key: first})))
    second = WindowAggregate(3, 2, 4.5, 12.25, 0.5, 4.0, [1, 0, 1], {"bytes": 5.0, "files": 1.0})
    asyncio.run(record.submit(batch("batch-w002", {key: second, other: WindowAggregate(1)})))

    with session_scope(session_factory) as session:
        rows = {row.variant: row for row in session.scalars(select(TelemetryWindow))}
        found = rows["on"]
        assert (found.count, found.value_count, found.value_sum, found.value_sumsq) == (5, 4, 7.5, 17.25)
        assert (found.value_min, found.value_max) == (0.5, 4.0)
        assert found.buckets == [2, 1, 1]
        assert found.totals == {"bytes": 15.0, "files": 1.0}
        assert (rows["off"].count, rows["off"].value_min, rows["off"].totals) == (1, None, None)
