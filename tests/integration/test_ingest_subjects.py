"""Subjects at ingest, on SQLite and PostgreSQL: an event may carry a hashed subject; anything but a hex digest is
refused (a subject must never be a raw user id) with nothing recorded; events carrying one are counted per series
and subject in `telemetry_subjects`, in the same transaction as their windows, and deleted with them. Windows also
keep the sum of their squared values (`value_sumsq`)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.roles import Role
from controlplane.db import session_scope
from controlplane.models import Base
from controlplane.retention import expire_telemetry
from controlplane.telemetry.aggregation import Aggregates, WindowAggregate, labels_key, window_start
from controlplane.telemetry.models import TelemetrySubject, TelemetryWindow
from controlplane.telemetry.service import PendingBatch
from controlplane.telemetry.writer import BatchWriter
from tests.conftest import FakeClock, bearer, problem
from tests.integration.test_ingest_api import UPLOAD_ROUTE, accepted, new_batch, request_event, send

Client = TestClient[Litestar]
WINDOW = timedelta(seconds=10)
ALICE = hashlib.sha256(b"alice").hexdigest()[:32]
BOB = hashlib.sha256(b"bob").hexdigest()[:32]


@pytest.fixture
def ingest(make_token: Callable[..., str]) -> dict[str, str]:
    return bearer(make_token(Role.INGEST, name="pipeline-ingest"))


def subject_rows(engine: Engine) -> dict[tuple[str, str, str, str], int]:
    """(variant, labels_key, subject, environment) -> count, over every stored window."""
    found: dict[tuple[str, str, str, str], int] = {}
    with engine.connect() as connection:
        for row in connection.execute(select(Base.metadata.tables["telemetry_subjects"])):
            key = (row.variant, row.labels_key, row.subject, row.environment)
            found[key] = found.get(key, 0) + int(row._mapping["count"])
    return found


def everything(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key))]
            for name in ("telemetry_windows", "telemetry_subjects", "ingested_batches", "event_tails")
            for table in [Base.metadata.tables[name]]
        }


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize(
    ("subject", "shape"),
    [
        ("user-4711", "9 characters, not all lowercase hex"),
        ("alice@example.com", "17 characters, not all lowercase hex"),
        (ALICE.upper(), "32 characters, not all lowercase hex"),
        ("abc123", "6 characters"),  # hex, but too short to be a digest: a small id written in hex is still an id
        ("a" * 65, "65 characters"),
        ("", "0 characters"),
    ],
    ids=["an id", "an email", "uppercase", "too short", "too long", "empty"],
)
def test_an_event_whose_subject_is_not_a_hex_digest_is_refused_and_nothing_is_recorded(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine, subject: str, shape: str
) -> None:
    accepted(send(client, ingest, new_batch([request_event(clock(), subject=ALICE)])))
    before = everything(engine)

    response = send(
        client, ingest, new_batch([request_event(clock(), subject=BOB), request_event(clock(), subject=subject)])
    )

    body = problem(response, 422, "invalid-events")
    ((error),) = body["errors"]
    assert (error["index"], error["field"]) == (1, "subject")
    assert f"subject must be a lowercase hex digest of 16 to 64 characters, got {shape}" in error["reason"]
    assert "never the raw user id" in error["reason"]
    if subject:
        assert subject not in response.text, "a refused subject may be a raw user id: it is never echoed"
    assert everything(engine) == before


@pytest.mark.usefixtures("applied")
def test_a_subject_of_the_wrong_type_is_refused_with_the_other_bad_events(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    before = everything(engine)

    response = send(
        client, ingest, new_batch([request_event(clock(), subject=4711), request_event(clock(), variant="maybe")])
    )

    body = problem(response, 422, "invalid-events")
    assert [(error["index"], error["field"]) for error in body["errors"]] == [(0, "subject"), (1, "variant")]
    assert everything(engine) == before


@pytest.mark.usefixtures("applied")
def test_events_with_a_subject_are_counted_per_series_and_subject_and_batches_add_up(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    at = clock()
    failed = UPLOAD_ROUTE | {"status_class": "5xx"}
    first = [
        request_event(at, subject=ALICE),
        request_event(at, subject=ALICE),
        request_event(at, subject=ALICE, labels=failed),
        request_event(at, subject=BOB),
        request_event(at),  # no subject: in the windows only
    ]
    accepted(send(client, ingest, new_batch(first)))
    # Another batch into the same rows (the upsert adds) and a new one (off variant).
    accepted(
        send(
            client, ingest, new_batch([request_event(at, subject=ALICE), request_event(at, subject=BOB, variant="off")])
        )
    )

    ok, bad = labels_key(UPLOAD_ROUTE), labels_key(failed)
    assert subject_rows(engine) == {
        ("on", ok, ALICE, "qa"): 3,
        ("on", bad, ALICE, "qa"): 1,
        ("on", ok, BOB, "qa"): 1,
        ("off", ok, BOB, "qa"): 1,
    }
    with engine.connect() as connection:
        starts = set(connection.scalars(select(TelemetrySubject.window_start)))
        events = connection.scalar(select(func.sum(TelemetryWindow.count)))
    assert starts == {window_start(at, WINDOW)}
    assert events == 7


@pytest.mark.usefixtures("applied")
def test_a_window_keeps_the_sum_of_its_squared_values_across_batches(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    at = clock()
    accepted(send(client, ingest, new_batch([request_event(at, value=0.5), request_event(at, value=1.5)])))
    accepted(send(client, ingest, new_batch([request_event(at, value=2.0)])))

    with engine.connect() as connection:
        (row,) = connection.execute(
            select(TelemetryWindow.value_count, TelemetryWindow.value_sum, TelemetryWindow.value_sumsq)
        ).all()
    assert (row.value_count, row.value_sum, row.value_sumsq) == (3, pytest.approx(4.0), pytest.approx(6.5))


def test_batches_committed_together_merge_their_subject_counts(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    start = window_start(clock(), WINDOW)
    key = (start, "http_request", "production", "on", "", '{"route":"upload_reference_image"}')

    def pending(batch_id: str, alice: int, bob: int) -> PendingBatch:
        subjects = {(*key, ALICE): alice, (*key, BOB): bob}
        aggregates = Aggregates(
            series={key: WindowAggregate(count=alice + bob)}, tails={}, events=alice + bob, subjects=subjects
        )
        return PendingBatch(batch_id, "reference-images", batch_id, aggregates)

    writer = BatchWriter(session_factory, clock=clock)

    async def submit_all() -> None:
        await asyncio.gather(writer.submit(pending("batch-s001", 2, 1)), writer.submit(pending("batch-s002", 3, 4)))

    asyncio.run(submit_all())

    assert writer.transactions == 1
    with session_scope(session_factory) as session:
        rows = session.execute(select(TelemetrySubject.subject, TelemetrySubject.count))
        counted = {subject: count for subject, count in rows}  # noqa: C416 - Row pairs
    assert counted == {ALICE: 5, BOB: 5}


def test_retention_deletes_subject_counts_with_their_windows(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    retention = timedelta(days=3)
    row = {
        "pipeline": "reference-images",
        "event": "http_request",
        "environment": "production",
        "variant": "on",
        "outcome": "",
        "labels_key": "{}",
        "subject": ALICE,
        "count": 4,
    }
    with session_scope(session_factory) as session:
        session.execute(
            insert(TelemetrySubject),
            [
                row | {"window_start": clock() - retention - timedelta(minutes=1)},
                row | {"window_start": clock() - retention + timedelta(minutes=1)},
            ],
        )

    deleted = expire_telemetry(session_factory, clock=clock, window_retention=retention, max_event_age=timedelta(1))

    assert deleted["subjects"] == 1
    with session_scope(session_factory) as session:
        left = list(session.scalars(select(TelemetrySubject.window_start)))
    assert left == [clock() - retention + timedelta(minutes=1)]
