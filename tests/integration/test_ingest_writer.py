"""Group commit: batches submitted together share one transaction, each answered with its own result."""

from __future__ import annotations

import asyncio
import copy
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.db import session_scope
from controlplane.errors import Conflict
from controlplane.telemetry.aggregation import Aggregates, SeriesKey, TailItem, WindowAggregate
from controlplane.telemetry.models import EventTail, IngestedBatch, TelemetryWindow
from controlplane.telemetry.schemas import IngestResult
from controlplane.telemetry.service import TAIL_LENGTH, PendingBatch, merge_aggregates, record_batches
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


def test_histograms_of_other_lengths_add_as_far_as_each_goes(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """A definition that changed a histogram's bounds inside a window: counts add by position, the batch is kept."""
    key = (clock().replace(second=0, microsecond=0), "reference_image_upload", "production", "on", "success", "{}")
    for number, buckets in enumerate(([1, 2, 3], [10, 20], [100, 200, 300, 400])):
        aggregates = Aggregates(series={key: WindowAggregate(count=1, buckets=buckets)}, tails={}, events=1)
        with session_scope(session_factory) as session:
            record_batches(
                session, [PendingBatch(f"batch-h{number}", "reference-images", "d", aggregates)], now=clock()
            )

    with session_scope(session_factory) as session:
        assert session.scalars(select(TelemetryWindow.buckets)).one() == [111, 222, 303, 400]


def _random_aggregates(rng: random.Random, starts: list[datetime], first: datetime) -> Aggregates:
    series: dict[SeriesKey, WindowAggregate] = {}
    for _ in range(rng.randint(1, 6)):
        key = (rng.choice(starts), rng.choice(["a", "b"]), "production", rng.choice(["on", "off"]), "", "{}")
        with_values = rng.random() < 0.7
        values = [rng.uniform(0.0, 9.0) for _ in range(rng.randint(1, 4))] if with_values else []
        series[key] = WindowAggregate(
            count=rng.randint(1, 50),
            value_count=len(values),
            value_sum=sum(values),
            value_sumsq=sum(value * value for value in values),
            value_min=min(values) if values else None,
            value_max=max(values) if values else None,
            buckets=[rng.randint(0, 5) for _ in range(4)] if with_values else None,
            totals={
                name: rng.uniform(0.0, 3.0) for name in rng.sample(["bytes", "files", "tokens"], rng.randint(0, 2))
            },
        )
    tails: dict[tuple[str, str, str], list[TailItem]] = {}
    # The tail of every event and a segment's, each merged on its own.
    for event, segment in rng.sample([("a", ""), ("b", ""), ("a", "queue=sales")], rng.randint(0, 3)):
        # Few distinct instants, some earlier than stored ones: late events and ties at the same instant.
        items: list[TailItem] = [
            (first + timedelta(seconds=rng.randint(0, 30)), rng.choice(["ok", "error"]), "on", {"n": str(n)})
            for n in range(rng.randint(1, 40))
        ]
        tails[(event, "production", segment)] = sorted(items, key=lambda item: item[0])
    return Aggregates(series=series, tails=tails, events=sum(found.count for found in series.values()))


def test_windows_and_tails_stored_equal_a_fold_of_every_batch(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """Random groups of batches (fixed seed) recorded one transaction after another: every window row equals the
    batches' aggregates merged in order by ``WindowAggregate.merge`` (each group summed first), and every tail is
    the newest TAIL_LENGTH of all their tail events in time order (at the same instant, in the order they arrived),
    on either backend (on PostgreSQL the database adds and merges them)."""
    rng = random.Random(20261204)
    first = clock().replace(second=0, microsecond=0)
    starts = [first, first + timedelta(seconds=10), first + timedelta(seconds=20)]
    expected_series: dict[SeriesKey, WindowAggregate] = {}
    expected_tails: dict[tuple[str, str, str], list[list[Any]]] = {}
    for group in range(25):
        batches = [
            PendingBatch(f"batch-{group}-{n}", "reference-images", "d", _random_aggregates(rng, starts, first))
            for n in range(rng.randint(1, 3))
        ]
        # A group's batches are summed first, then added to what is stored (floating-point sums in that order).
        group_sum = merge_aggregates([copy.deepcopy(batch.aggregates) for batch in batches])
        for key, added in group_sum.series.items():
            expected_series.setdefault(key, WindowAggregate()).merge(added)
        with session_scope(session_factory) as session:
            record_batches(session, batches, now=clock())
        for batch in batches:
            for tail_key, items in batch.aggregates.tails.items():
                kept = expected_tails.setdefault(tail_key, [])
                kept.extend([at.isoformat(), outcome, variant, labels] for at, outcome, variant, labels in items)
                kept.sort(key=lambda item: str(item[0]))
                del kept[:-TAIL_LENGTH]

    with session_scope(session_factory) as session:
        windows = {
            (row.window_start, row.event, row.environment, row.variant, row.outcome, row.labels_key): row
            for row in session.scalars(select(TelemetryWindow))
        }
        tails = {(row.event, row.environment, row.segment): row.events for row in session.scalars(select(EventTail))}
    assert set(windows) == set(expected_series)
    for key, want in expected_series.items():
        row = windows[key]
        assert (row.count, row.value_count, row.value_sum, row.value_sumsq) == (
            want.count,
            want.value_count,
            want.value_sum,
            want.value_sumsq,
        ), key
        assert (row.value_min, row.value_max, row.buckets) == (want.value_min, want.value_max, want.buckets), key
        assert (row.totals or {}) == want.totals, key
    assert tails == expected_tails


def test_tail_times_are_stored_in_utc_and_ordered_by_instant_whatever_offset_was_sent(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    """An event sent with +02:00 that happened before a stored UTC one sorts before it (its local time reads
    later)."""
    utc_first = clock().replace(microsecond=0)
    east = timezone(timedelta(hours=2))

    def tail_batch(batch_id: str, at: datetime) -> PendingBatch:
        tails: dict[tuple[str, str, str], list[TailItem]] = {("vision_analysis", "qa", ""): [(at, "error", "on", {})]}
        return PendingBatch(batch_id, "reference-images", "d", Aggregates(series={}, tails=tails, events=1))

    for batch_id, at in (
        ("batch-t001", utc_first),
        ("batch-t002", (utc_first - timedelta(seconds=5)).astimezone(east)),
    ):
        with session_scope(session_factory) as session:
            record_batches(session, [tail_batch(batch_id, at)], now=clock())

    with session_scope(session_factory) as session:
        events = session.scalars(select(EventTail.events)).one()
    assert [item[0] for item in events] == [
        (utc_first - timedelta(seconds=5)).isoformat(),
        utc_first.isoformat(),
    ]
