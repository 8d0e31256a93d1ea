"""Event ingest over HTTP (`POST /api/v1/events`, role `ingest`) on SQLite and PostgreSQL.

A good batch is acknowledged only once committed to its windows; a bad one is refused with a precise reason for
every bad event and changes nothing; a retried batch counts once; limits answer 413 and 429.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, insert, select

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.catalog.events import DEFAULT_BUCKETS
from controlplane.models import Base
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import labels_key, window_start
from controlplane.telemetry.digest import legacy_batch_digest
from controlplane.telemetry.models import IngestedBatch, TelemetryWindow
from tests.conftest import FakeClock, bearer, problem, without_gates

API = "/api/v1"
EVENTS = f"{API}/events"
PIPELINE = "reference-images"
UPLOAD_ROUTE = {"route": "upload_reference_image", "status_class": "2xx"}

Client = TestClient[Litestar]
Stored = dict[str, list[tuple[Any, ...]]]


# --- helpers ------------------------------------------------------------------------------------------------------


def request_event(at: datetime, **fields: Any) -> dict[str, Any]:
    """An upload request in qa, served `on`, answered 2xx in 0.2 s; ``fields`` replace any of that."""
    return {
        "type": "http_request",
        "time": at.isoformat(),
        "environment": "qa",
        "variant": "on",
        "labels": dict(UPLOAD_ROUTE),
        "value": 0.2,
    } | fields


def new_batch(events: list[dict[str, Any]], batch_id: str | None = None, pipeline: str = PIPELINE) -> dict[str, Any]:
    return {"batch_id": batch_id or f"batch-{uuid.uuid4().hex}", "pipeline": pipeline, "events": events}


def send(client: Client, headers: dict[str, str], batch: dict[str, Any] | bytes, **extra: str) -> httpx.Response:
    """Post a batch: a dict as JSON, bytes as they are (with any extra headers, e.g. Content-Encoding)."""
    if isinstance(batch, bytes):
        return client.post(EVENTS, headers=headers | {"Content-Type": "application/json"} | extra, content=batch)
    return client.post(EVENTS, headers=headers | extra, json=batch)


def accepted(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stored(engine: Engine) -> Stored:
    """Every row ingest writes, in a comparable form."""
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(select(table).order_by(*table.primary_key))]
            for name in ("telemetry_windows", "ingested_batches", "event_tails")
            for table in [Base.metadata.tables[name]]
        }


def windows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(select(Base.metadata.tables["telemetry_windows"]).order_by(TelemetryWindow.id))
        return [dict(row._mapping) for row in rows]


def batch_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.scalars(select(IngestedBatch.batch_id).order_by(IngestedBatch.batch_id)))


def apply_reference_images(client: Client, admin_headers: dict[str, str], reference_images_yaml: str) -> None:
    response = client.post(
        f"{API}/definitions/apply",
        headers=admin_headers,
        json={"content": without_gates(reference_images_yaml), "source": "reference-images.yaml"},
    )
    assert response.status_code == 200, response.text


def seconds_bucket(value: float) -> int:
    """The index of the (non-cumulative) default seconds bucket ``value`` falls in."""
    bounds = DEFAULT_BUCKETS["seconds"]
    return next((index for index, bound in enumerate(bounds) if value <= bound), len(bounds))


@pytest.fixture
def ingest(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of an ingest token."""
    return bearer(make_token(Role.INGEST, name="pipeline-ingest"))


@pytest.fixture
def primed(applied: None, client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine) -> Stored:
    """The definition applied and one good batch recorded (so a refused batch has a row it could have touched)."""
    accepted(send(client, ingest, new_batch([request_event(clock()), request_event(clock(), variant="off")])))
    before = stored(engine)
    assert before["telemetry_windows"] and before["ingested_batches"]
    return before


LimitedApp = Callable[..., AbstractContextManager[Client]]


@pytest.fixture
def limited_app(settings: Settings, engine: Engine, clock: FakeClock) -> LimitedApp:
    """A client of an app whose settings replace some of the test's own (for small limits)."""

    @contextmanager
    def build(**changes: Any) -> Iterator[Client]:
        with TestClient(create_app(replace(settings, **changes), engine=engine, clock=clock)) as test_client:
            yield test_client

    return build


# --- acknowledged batches -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_a_good_batch_is_acknowledged_with_its_count_and_lands_in_its_windows(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    now = clock()
    earlier = now - timedelta(seconds=15)
    response = send(
        client,
        ingest,
        new_batch(
            [
                request_event(now, value=0.2),
                request_event(now + timedelta(seconds=3), value=1.5),
                request_event(now, labels={"route": "upload_reference_image", "status_class": "5xx"}, value=0.05),
                request_event(earlier, labels={"route": "somewhere_new", "status_class": "2xx"}),
                {
                    "type": "vision_analysis",
                    "time": now.isoformat(),
                    "environment": "qa",
                    "variant": "on",
                    "outcome": "error",
                    "value": 0.4,
                },
            ],
            batch_id="batch-good-0001",
        ),
    )

    assert accepted(response) == {
        "batch_id": "batch-good-0001",
        "pipeline": PIPELINE,
        "accepted": 5,
        "duplicate": False,
        "series": 4,
    }
    rows = {(row["window_start"], row["event"], row["labels_key"]): row for row in windows(engine)}
    window = timedelta(seconds=10)
    ok = rows[(window_start(now, window), "http_request", labels_key(UPLOAD_ROUTE))]
    assert (ok["pipeline"], ok["environment"], ok["variant"], ok["outcome"]) == (PIPELINE, "qa", "on", "")
    assert (ok["count"], ok["value_count"], ok["value_min"], ok["value_max"]) == (2, 2, 0.2, 1.5)
    assert ok["value_sum"] == pytest.approx(1.7)
    expected = [0] * (len(DEFAULT_BUCKETS["seconds"]) + 1)
    expected[seconds_bucket(0.2)] += 1
    expected[seconds_bucket(1.5)] += 1
    assert ok["buckets"] == expected
    failing = rows[(window_start(now, window), "http_request", labels_key(UPLOAD_ROUTE | {"status_class": "5xx"}))]
    assert failing["count"] == 1
    # A route outside the declared ones is recorded as the label's `otherwise` value, in its own window.
    other = rows[(window_start(earlier, window), "http_request", labels_key({"route": "other", "status_class": "2xx"}))]
    assert other["count"] == 1
    vision = rows[(window_start(now, window), "vision_analysis", "{}")]
    assert (vision["outcome"], vision["count"]) == ("error", 1)
    assert len(rows) == 4
    assert batch_ids(engine) == ["batch-good-0001"]
    # vision_analysis feeds a streak rule: its events are kept in order for it.
    tails = stored(engine)["event_tails"]
    assert [(row[0], row[1], row[2]) for row in tails] == [(PIPELINE, "vision_analysis", "qa")]


@pytest.mark.usefixtures("applied")
def test_batches_into_the_same_series_add_up_in_one_window_row(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    now = clock()
    accepted(send(client, ingest, new_batch([request_event(now, value=0.5)])))
    accepted(send(client, ingest, new_batch([request_event(now + timedelta(seconds=1), value=3.0)] * 2)))
    accepted(send(client, ingest, new_batch([request_event(now, value=0.001)])))

    [row] = windows(engine)
    assert (row["count"], row["value_count"], row["value_min"], row["value_max"]) == (4, 4, 0.001, 3.0)
    assert row["value_sum"] == pytest.approx(6.501)
    assert sum(row["buckets"]) == 4
    assert row["buckets"][seconds_bucket(3.0)] == 2
    assert len(batch_ids(engine)) == 3


@pytest.mark.usefixtures("applied")
def test_a_gzip_body_is_accepted_and_recorded_like_a_plain_one(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    body = json.dumps(new_batch([request_event(clock())] * 3, batch_id="batch-gzip-0001")).encode()

    result = accepted(send(client, ingest, gzip.compress(body), **{"Content-Encoding": "gzip"}))

    assert (result["accepted"], result["duplicate"]) == (3, False)
    assert [row["count"] for row in windows(engine)] == [3]
    assert batch_ids(engine) == ["batch-gzip-0001"]


@pytest.mark.usefixtures("applied")
def test_an_empty_batch_is_acknowledged_with_nothing_to_count(
    client: Client, ingest: dict[str, str], engine: Engine
) -> None:
    result = accepted(send(client, ingest, new_batch([], batch_id="batch-empty-01")))

    assert (result["accepted"], result["series"]) == (0, 0)
    assert windows(engine) == []


# --- retries: a batch id counts once ------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_a_batch_sent_twice_is_acknowledged_as_a_duplicate_and_counted_once(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    batch = new_batch([request_event(clock()), request_event(clock(), value=0.7)], batch_id="batch-retry-0001")
    first = accepted(send(client, ingest, batch))
    after_first = stored(engine)

    second = accepted(send(client, ingest, batch))

    assert (first["accepted"], first["duplicate"]) == (2, False)
    assert second == {
        "batch_id": "batch-retry-0001",
        "pipeline": PIPELINE,
        "accepted": 0,
        "duplicate": True,
        "series": 0,
    }
    assert stored(engine) == after_first
    assert [row["count"] for row in windows(engine)] == [2]


@pytest.mark.usefixtures("applied")
def test_a_retry_that_reserialises_the_same_events_is_still_the_same_batch(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    batch = new_batch([request_event(clock())], batch_id="batch-retry-0002")
    accepted(send(client, ingest, batch))
    # Other key order, whitespace, UTC written as +00:00 rather than Z... and gzip: the same events.
    event = batch["events"][0]
    again = {
        "events": [
            {key: event[key] for key in reversed(list(event))} | {"time": clock().strftime("%Y-%m-%dT%H:%M:%SZ")}
        ],
        "pipeline": PIPELINE,
        "batch_id": "batch-retry-0002",
    }
    raw = gzip.compress(json.dumps(again, indent=2).encode())

    result = accepted(send(client, ingest, raw, **{"Content-Encoding": "gzip"}))

    assert result["duplicate"] is True
    assert [row["count"] for row in windows(engine)] == [1]


@pytest.mark.usefixtures("applied")
def test_the_same_batch_id_with_other_events_is_refused_with_409_and_changes_nothing(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    accepted(send(client, ingest, new_batch([request_event(clock())], batch_id="batch-reused-01")))
    before = stored(engine)

    response = send(client, ingest, new_batch([request_event(clock(), value=9.0)], batch_id="batch-reused-01"))

    body = problem(response, 409, "batch-id-reused")
    assert body["batch_id"] == "batch-reused-01"
    assert stored(engine) == before


@pytest.mark.usefixtures("applied")
def test_a_retry_of_a_batch_an_earlier_release_recorded_is_a_duplicate_and_other_events_are_refused(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    """Rows recorded before the digest changed keep the earlier digest (key-sorted JSON): a retry across the
    upgrade is still recognised, and a reuse of the id is still refused."""
    batch = new_batch([request_event(clock())], batch_id="batch-upgrade-01")
    body = json.dumps(batch).encode()
    with engine.begin() as connection:
        connection.execute(
            insert(IngestedBatch).values(
                batch_id="batch-upgrade-01",
                pipeline=PIPELINE,
                digest=legacy_batch_digest(body),
                events=1,
                received_at=clock(),
            )
        )
    before = stored(engine)

    again = accepted(send(client, ingest, body))
    reused = send(client, ingest, new_batch([request_event(clock(), value=9.0)], batch_id="batch-upgrade-01"))

    assert (again["duplicate"], again["accepted"]) == (True, 0)
    problem(reused, 409, "batch-id-reused")
    assert stored(engine) == before


# --- refused batches: every bad event, nothing recorded -----------------------------------------------------------

#: (events given the time now, the expected {index: field} of the refusal, a phrase of the first reason)
Case = tuple[Callable[[datetime], list[dict[str, Any]]], dict[int, str], str]

REFUSALS: dict[str, Case] = {
    "unknown event type": (
        lambda now: [request_event(now, type="http_requests")],
        {0: "type"},
        "unknown event type `http_requests`",
    ),
    "unknown label": (
        lambda now: [request_event(now, labels=UPLOAD_ROUTE | {"user_id": "u-42"})],
        {0: "labels.user_id"},
        "unknown label `user_id`",
    ),
    "undeclared label value": (
        lambda now: [request_event(now, labels={"route": "upload_reference_image", "status_class": "6xx"})],
        {0: "labels.status_class"},
        "label `status_class` cannot be '6xx'",
    ),
    "string value": (lambda now: [request_event(now, value="fast")], {0: "value"}, "Expected `float | null`"),
    "negative value": (lambda now: [request_event(now, value=-0.5)], {0: "value"}, "at least 0"),
    # Two of these in a window once summed to infinity: /metrics showed +Inf and the latency guard lost its data.
    "value past its unit's maximum": (
        lambda now: [request_event(now, value=1.0), request_event(now, value=1e308)],
        {1: "value"},
        "value must be at most",
    ),
    "value on an event without one": (
        lambda now: [request_event(now, type="preflight_reference_images", outcome="resolved", labels={})],
        {0: "value"},
        "declares no value",
    ),
    "missing outcome": (
        lambda now: [request_event(now, type="vision_analysis", labels={})],
        {0: "outcome"},
        "outcome must be one of ok, error",
    ),
    "undeclared total": (
        lambda now: [request_event(now, totals={"tokens": 3})],
        {0: "totals.tokens"},
        "unknown total `tokens`",
    ),
    "time far in the future": (
        lambda now: [request_event(now + timedelta(seconds=301))],
        {0: "time"},
        "outside the accepted range",
    ),
    "time far in the past": (
        lambda now: [request_event(now - timedelta(days=1, seconds=1))],
        {0: "time"},
        "outside the accepted range",
    ),
    "naive time": (
        lambda now: [request_event(now, time=now.replace(tzinfo=None).isoformat())],
        {0: "time"},
        "timezone",
    ),
    "unknown environment": (
        lambda now: [request_event(now, environment="prod")],
        {0: "environment"},
        "unknown environment `prod`",
    ),
    "variant not of the flag": (
        lambda now: [request_event(now, variant="true")],
        {0: "variant"},
        "variant `true` is not a variant of flag `enable-reference-images`",
    ),
    "several bad events at different indexes": (
        lambda now: [
            request_event(now),
            request_event(now, environment="prod"),
            request_event(now),
            request_event(now, labels={"route": "upload_reference_image", "status_class": "6xx"}),
            request_event(now - timedelta(days=2)),
            request_event(now),
            request_event(now, variant="maybe"),
        ],
        {1: "environment", 3: "labels.status_class", 4: "time", 6: "variant"},
        "unknown environment `prod`",
    ),
    "wire and catalog errors mixed": (
        lambda now: [
            request_event(now),
            request_event(now, type="nope"),  # catalog
            request_event(now, value="slow"),  # wire type
            request_event(now, time="yesterday"),  # wire type
            request_event(now, variant="maybe"),  # catalog
            request_event(now),
        ],
        {1: "type", 2: "value", 3: "time", 4: "variant"},
        "unknown event type `nope`",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS.values()), ids=list(REFUSALS))
def test_a_batch_with_bad_events_is_refused_with_422_listing_each_and_records_nothing(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine, primed: Stored, case: Case
) -> None:
    build, fields, phrase = case

    response = send(client, ingest, new_batch(build(clock())))

    body = problem(response, 422, "invalid-events")
    assert {error["index"]: error["field"] for error in body["errors"]} == fields
    assert [error["index"] for error in body["errors"]] == sorted(fields)
    assert all(error["reason"] for error in body["errors"])
    assert phrase in body["errors"][0]["reason"], body["errors"][0]
    assert f"{len(fields)} invalid events" in body["detail"]
    assert "nothing from this batch was recorded" in body["detail"]
    assert stored(engine) == primed


@pytest.mark.parametrize(
    ("literal", "slug", "status"),
    [
        (b"1e999", "invalid-events", 422),  # JSON has no infinity: a number too large to hold is the nearest thing
        (b"NaN", "invalid-json", 400),
        (b"Infinity", "invalid-json", 400),
    ],
)
def test_a_value_that_is_not_a_finite_number_is_refused_and_records_nothing(
    client: Client,
    ingest: dict[str, str],
    clock: FakeClock,
    engine: Engine,
    primed: Stored,
    literal: bytes,
    slug: str,
    status: int,
) -> None:
    raw = json.dumps(new_batch([request_event(clock()), request_event(clock(), value=12345.678)])).encode()

    response = send(client, ingest, raw.replace(b"12345.678", literal))

    body = problem(response, status, slug)
    if status == 422:
        assert [(error["index"], error["field"]) for error in body["errors"]] == [(1, "value")]
    assert stored(engine) == primed


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"events", b'{"batch_id": "batch-0001", "pipeline": "reference-images", "events": [}', b"\xff\xfe"],
    ids=["empty", "unterminated", "a word", "broken list", "not utf-8"],
)
def test_a_body_that_is_not_json_is_refused_with_400_invalid_json(
    client: Client, ingest: dict[str, str], engine: Engine, primed: Stored, raw: bytes
) -> None:
    body = problem(send(client, ingest, raw), 400, "invalid-json")

    assert "not JSON" in body["detail"]
    assert stored(engine) == primed


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        ({"batch_id": "short", "pipeline": PIPELINE, "events": []}, "batch_id"),
        ({"batch_id": "batch with spaces", "pipeline": PIPELINE, "events": []}, "batch_id"),
        ({"batch_id": "batch-0001", "pipeline": PIPELINE}, None),
        ({"batch_id": "batch-0001", "pipeline": PIPELINE, "events": {}}, "events"),
        ({"batch_id": "batch-0001", "pipeline": PIPELINE, "events": [], "source": "x"}, None),
        ([], None),
    ],
    ids=["short batch id", "batch id with spaces", "no events", "events not a list", "unknown field", "a list"],
)
def test_json_that_is_not_an_event_batch_is_refused_with_422_invalid_body(
    client: Client, ingest: dict[str, str], engine: Engine, primed: Stored, batch: Any, field: str | None
) -> None:
    body = problem(send(client, ingest, json.dumps(batch).encode()), 422, "invalid-body")

    assert "not an event batch" in body["detail"]
    assert body["field"] == field
    assert stored(engine) == primed


def test_a_batch_of_a_pipeline_never_applied_is_refused_naming_no_known_events(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine, primed: Stored
) -> None:
    response = send(client, ingest, new_batch([request_event(clock())], pipeline="ai-assistant"))

    body = problem(response, 422, "invalid-events")
    assert "apply its definition first" in body["errors"][0]["reason"]
    assert stored(engine) == primed


@pytest.mark.parametrize(
    ("encoding", "raw"),
    [
        ("gzip", b"this is not gzip"),
        ("gzip", gzip.compress(b'{"batch_id": "batch-0001"}')[:-12]),
        ("gzip", gzip.compress(b'{"batch_id": "batch-0001", "pipeline": "x", "events": []}') + gzip.compress(b"{}")),
        ("br", b"{}"),
    ],
    ids=["not gzip", "truncated gzip", "two gzip members", "brotli"],
)
def test_a_body_in_an_encoding_that_cannot_be_read_is_refused_with_400_invalid_encoding(
    client: Client, ingest: dict[str, str], engine: Engine, primed: Stored, encoding: str, raw: bytes
) -> None:
    response = send(client, ingest, raw, **{"Content-Encoding": encoding})

    problem(response, 400, "invalid-encoding")
    assert stored(engine) == primed


# --- size limits --------------------------------------------------------------------------------------------------

MAX_EVENTS = 3
MAX_BYTES = 4096


@pytest.fixture
def small(
    limited_app: LimitedApp,
    admin_headers: dict[str, str],
    reference_images_yaml: str,
) -> Iterator[Client]:
    """A client of an app taking at most MAX_EVENTS events and MAX_BYTES bytes per batch, definition applied."""
    with limited_app(ingest_max_events=MAX_EVENTS, ingest_max_bytes=MAX_BYTES) as test_client:
        apply_reference_images(test_client, admin_headers, reference_images_yaml)
        yield test_client


def test_a_batch_over_the_event_limit_is_refused_with_413_and_records_nothing(
    small: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    accepted(send(small, ingest, new_batch([request_event(clock())] * MAX_EVENTS)))
    before = stored(engine)

    response = send(small, ingest, new_batch([request_event(clock())] * (MAX_EVENTS + 1)))

    body = problem(response, 413, "batch-too-large")
    assert body["limit_events"] == MAX_EVENTS
    assert f"{MAX_EVENTS + 1} events" in body["detail"]
    assert stored(engine) == before


def test_the_event_limit_is_checked_before_the_events_themselves(
    small: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    before = stored(engine)
    events = [request_event(clock())] * MAX_EVENTS + [request_event(clock(), value="slow")]

    problem(send(small, ingest, new_batch(events)), 413, "batch-too-large")
    assert stored(engine) == before


def padded(batch: dict[str, Any], size: int) -> bytes:
    """The batch as JSON, padded with trailing whitespace to exactly ``size`` bytes."""
    raw = json.dumps(batch).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def test_a_body_at_the_byte_limit_is_accepted_and_one_byte_more_is_refused_with_413(
    small: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    accepted(send(small, ingest, padded(new_batch([request_event(clock())]), MAX_BYTES)))
    before = stored(engine)

    response = send(small, ingest, padded(new_batch([request_event(clock())]), MAX_BYTES + 1))

    body = problem(response, 413, "batch-too-large")
    assert body["limit_bytes"] == MAX_BYTES
    assert stored(engine) == before


def test_a_gzip_body_over_the_byte_limit_once_decompressed_is_refused_with_413(
    small: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine
) -> None:
    raw = gzip.compress(padded(new_batch([request_event(clock())]), MAX_BYTES + 1))
    assert len(raw) < MAX_BYTES

    body = problem(send(small, ingest, raw, **{"Content-Encoding": "gzip"}), 413, "batch-too-large")

    assert "decompressed" in body["detail"]
    assert windows(engine) == []


def test_a_gzip_bomb_is_refused_with_413_without_inflating_it_all(
    client: Client, ingest: dict[str, str], engine: Engine, primed: Stored, settings: Settings
) -> None:
    inflated = 64 * settings.ingest_max_bytes
    bomb = gzip.compress(b" " * inflated, compresslevel=9)
    assert len(bomb) < settings.ingest_max_bytes // 10  # small on the wire, 64 MiB once inflated

    body = problem(send(client, ingest, bomb, **{"Content-Encoding": "gzip"}), 413, "batch-too-large")

    assert body["limit_bytes"] == settings.ingest_max_bytes
    assert stored(engine) == primed


def test_a_plain_body_over_the_default_byte_limit_is_refused_with_413(
    client: Client, ingest: dict[str, str], clock: FakeClock, engine: Engine, primed: Stored, settings: Settings
) -> None:
    raw = padded(new_batch([request_event(clock())]), settings.ingest_max_bytes + 1)

    problem(send(client, ingest, raw), 413, "batch-too-large")
    assert stored(engine) == primed


# --- who may ingest -----------------------------------------------------------------------------------------------


def test_a_batch_without_a_token_is_refused_with_401(
    client: Client, clock: FakeClock, engine: Engine, primed: Stored
) -> None:
    response = send(client, {}, new_batch([request_event(clock())]))

    problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert stored(engine) == primed


def test_a_batch_with_a_token_nobody_issued_is_refused_with_401(
    client: Client, clock: FakeClock, engine: Engine, primed: Stored
) -> None:
    response = send(client, bearer("cp_not-a-real-token"), new_batch([request_event(clock())]))

    problem(response, 401, "unauthenticated")
    assert stored(engine) == primed


@pytest.mark.parametrize("role", [Role.VIEWER, Role.OPERATOR, Role.EVALUATE])
def test_a_batch_with_a_token_of_another_role_is_refused_with_403(
    client: Client, make_token: Callable[..., str], clock: FakeClock, engine: Engine, primed: Stored, role: Role
) -> None:
    response = send(client, bearer(make_token(role)), new_batch([request_event(clock())]))

    problem(response, 403, "forbidden")
    assert stored(engine) == primed


# --- rate limits --------------------------------------------------------------------------------------------------


def test_ingest_is_not_subject_to_the_management_rate_limit(
    limited_app: LimitedApp,
    admin_headers: dict[str, str],
    reference_images_yaml: str,
    ingest: dict[str, str],
    clock: FakeClock,
    engine: Engine,
) -> None:
    with limited_app(rate_limit_per_minute=2, rate_limit_per_address_per_minute=2) as limited:
        apply_reference_images(limited, admin_headers, reference_images_yaml)  # one management request

        for _ in range(6):
            accepted(send(limited, ingest, new_batch([request_event(clock())])))

        statuses = [limited.get(f"{API}/flags", headers=admin_headers).status_code for _ in range(3)]
        assert 429 in statuses, f"the management limit never applied: {statuses}"
        assert [row["count"] for row in windows(engine)] == [6]


def test_over_its_own_per_token_limit_ingest_answers_429_with_retry_after_and_records_nothing(
    limited_app: LimitedApp,
    admin_headers: dict[str, str],
    reference_images_yaml: str,
    make_token: Callable[..., str],
    clock: FakeClock,
    engine: Engine,
) -> None:
    first, second = bearer(make_token(Role.INGEST)), bearer(make_token(Role.INGEST))
    with limited_app(ingest_rate_limit_per_second=1) as limited:
        apply_reference_images(limited, admin_headers, reference_images_yaml)
        # One batch per token per second: of a few sent back to back, one at least lands in a used-up second.
        sent: list[tuple[str, httpx.Response]] = []
        for _ in range(4):
            batch_id = f"batch-{uuid.uuid4().hex}"
            sent.append((batch_id, send(limited, first, new_batch([request_event(clock())], batch_id=batch_id))))
        refused = [(batch_id, response) for batch_id, response in sent if response.status_code == 429]

        assert refused, [response.status_code for _, response in sent]
        for batch_id, response in refused:
            problem(response, 429, "rate-limited")
            assert response.headers["retry-after"].isdigit()
            assert int(response.headers["retry-after"]) == 1  # a one-second window: never 0, never longer
            assert batch_id not in batch_ids(engine)
        admitted = len(sent) - len(refused)
        assert len(batch_ids(engine)) == admitted
        # The limit is per token: another pipeline's token is not held back by this one.
        accepted(send(limited, second, new_batch([request_event(clock())])))


# --- concurrent batches -------------------------------------------------------------------------------------------

SENDERS = 8
EVENTS_PER_BATCH = 5


def test_concurrent_batches_into_the_same_window_all_count_over_real_http(
    live_server: str,
    admin_headers: dict[str, str],
    reference_images_yaml: str,
    ingest: dict[str, str],
    clock: FakeClock,
    engine: Engine,
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        response = http.post(
            f"{API}/definitions/apply",
            headers=admin_headers,
            json={"content": without_gates(reference_images_yaml), "source": "reference-images.yaml"},
        )
        assert response.status_code == 200, response.text

        def sender(number: int) -> int:
            batch = new_batch([request_event(clock(), value=0.1 * (number + 1))] * EVENTS_PER_BATCH)
            return http.post(EVENTS, headers=ingest, json=batch).status_code

        with ThreadPoolExecutor(max_workers=SENDERS) as pool:
            statuses = list(pool.map(sender, range(SENDERS)))

    # Writers are serialised, so the read-modify-write of the one window row never loses a batch.
    assert statuses == [200] * SENDERS
    [row] = windows(engine)
    assert (row["count"], row["value_count"]) == (SENDERS * EVENTS_PER_BATCH, SENDERS * EVENTS_PER_BATCH)
    assert row["value_sum"] == pytest.approx(sum(0.1 * (n + 1) * EVENTS_PER_BATCH for n in range(SENDERS)))
    assert len(batch_ids(engine)) == SENDERS
