"""The event emitter against a fake control plane (httpx.MockTransport), with an injected clock and sleep."""

from __future__ import annotations

import gzip
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from controlplane_client.emitter import Emitter, EmitterSettings, EmitterStats, Event
from controlplane_client.emitter.spool import Spool, SpoolInUse
from controlplane_client.retry import backoff_delay, retry_after_seconds

PIPELINE = "reference-images"
Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


class FakeControlPlane:
    """Answers like `POST /api/v1/events`: counts a batch id once; scripted answers go first; can be down."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.script: deque[Step] = deque()
        self.down = False
        self.attempts: list[str] = []  # batch ids, one per request
        self.requests: list[httpx.Request] = []
        self.counted: dict[str, int] = {}
        self.events: list[dict[str, Any]] = []  # counted events, in the order they were counted

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        batch = json.loads(body)
        with self.lock:
            self.attempts.append(batch["batch_id"])
            self.requests.append(request)
            step = self.script.popleft() if self.script else None
            if step is None and self.down:
                step = httpx.ConnectError("connection refused")
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        if step is not None:
            return step(request)
        return self.commit(batch)

    def commit(self, batch: dict[str, Any]) -> httpx.Response:
        """Count a batch (once per id) and answer 200."""
        with self.lock:
            duplicate = batch["batch_id"] in self.counted
            if not duplicate:
                self.counted[batch["batch_id"]] = len(batch["events"])
                self.events.extend(batch["events"])
        accepted = 0 if duplicate else len(batch["events"])
        answer = {"batch_id": batch["batch_id"], "pipeline": PIPELINE, "accepted": accepted, "duplicate": duplicate}
        return httpx.Response(200, json={**answer, "series": 1})

    def committed_then_lost(self, request: httpx.Request) -> httpx.Response:
        """Commit the batch, then lose the answer on the way back."""
        self.commit(json.loads(request.content))
        raise httpx.ReadTimeout("answer lost", request=request)

    def numbers(self) -> list[int]:
        """The `value` of every counted event, in order (tests number their events)."""
        return [int(event["value"]) for event in self.events]


class FakeClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordedSleep:
    """Records each wait instead of waiting; ``gate`` (when set) holds the emitter in its next wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate: threading.Event | None = None
        self.waiting = threading.Event()

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        gate, self.gate = self.gate, None
        if gate is not None:
            self.waiting.set()
            gate.wait(5)


def event(number: int) -> Event:
    """A Vision check numbered by its value, so order can be read back."""
    return Event(
        type="vision_analysis",
        time=datetime(2026, 11, 23, 12, 0, tzinfo=UTC) + timedelta(milliseconds=number),
        environment="production",
        variant="on" if number % 2 else "off",
        outcome="ok",
        value=float(number),
    )


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll a condition the emitter's thread makes true (a bounded wait, not a measurement)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def plane() -> FakeControlPlane:
    return FakeControlPlane()


@pytest.fixture
def sleep() -> RecordedSleep:
    return RecordedSleep()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_emitter(
    plane: FakeControlPlane, sleep: RecordedSleep, clock: FakeClock, tmp_path: Path
) -> Iterator[Callable[..., Emitter]]:
    """Emitters on the fake control plane; every one is closed at the end of the test."""
    made: list[Emitter] = []

    def make(
        spool_dir: Path | None = None,
        random: Callable[[], float] = lambda: 0.5,
        registry: CollectorRegistry | None = None,
        **settings: Any,
    ) -> Emitter:
        defaults: dict[str, Any] = {"max_batch_events": 3, "flush_interval": 3600.0, "spool_fsync": False}
        emitter = Emitter(
            "http://control-plane.test",
            "ingest-token",
            pipeline=PIPELINE,
            spool_dir=spool_dir or tmp_path / "spool",
            settings=EmitterSettings(**{**defaults, **settings}),
            transport=httpx.MockTransport(plane),
            clock=clock,
            sleep=sleep,
            random=random,
            registry=registry,
        )
        made.append(emitter)
        return emitter

    yield make
    for emitter in made:
        emitter.close(timeout=5)


def test_a_full_batch_is_sent_as_soon_as_it_is_queued(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    emitter = make_emitter(max_batch_events=3)
    for number in range(5):
        emitter.emit(event(number))
    assert wait_until(lambda: emitter.stats().batches_sent == 1)
    assert plane.numbers() == [0, 1, 2]
    assert emitter.stats().pending == 2  # the clock has not moved: the rest waits for the next batch or flush
    request = plane.requests[0]
    assert request.url.path == "/api/v1/events"
    assert request.headers["authorization"] == "Bearer ingest-token"
    assert json.loads(request.content)["pipeline"] == PIPELINE


def test_a_partial_batch_waits_for_the_flush_interval_on_the_clock(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], clock: FakeClock
) -> None:
    emitter = make_emitter(max_batch_events=100, flush_interval=0.05)
    emitter.emit(event(1))
    emitter.emit(event(2))
    assert not wait_until(lambda: bool(plane.attempts), timeout=0.2)  # several real intervals, but not on the clock
    clock.advance(0.05)
    assert wait_until(lambda: plane.numbers() == [1, 2])
    assert len(plane.attempts) == 1


def test_a_batch_keeps_its_id_across_every_retry(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], sleep: RecordedSleep
) -> None:
    plane.script.extend([httpx.Response(503), httpx.ConnectError("refused"), httpx.Response(502)])
    emitter = make_emitter(max_attempts=4)
    for number in range(3):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    assert len(plane.attempts) == 4
    assert len(set(plane.attempts)) == 1
    stats = emitter.stats()
    assert (stats.sent, stats.transient_failures, stats.spooled, stats.rejected) == (3, 3, 0, 0)
    assert len(sleep.delays) == 3


def test_retry_after_is_waited_exactly_on_429_and_503(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], sleep: RecordedSleep
) -> None:
    plane.script.extend(
        [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(503, headers={"Retry-After": "2"})]
    )
    emitter = make_emitter(backoff_base=0.1, backoff_cap=0.2)
    emitter.emit(event(1))
    emitter.flush(timeout=5)
    assert sleep.delays == [7.0, 2.0]
    assert plane.numbers() == [1]


def test_a_retry_after_longer_than_the_limit_is_cut_to_it(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], sleep: RecordedSleep
) -> None:
    plane.script.append(httpx.Response(429, headers={"Retry-After": "86400"}))
    emitter = make_emitter(max_retry_after=60.0)
    emitter.emit(event(1))
    emitter.flush(timeout=5)
    assert sleep.delays == [60.0]


def test_backoff_doubles_to_its_cap_with_full_jitter(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], sleep: RecordedSleep
) -> None:
    plane.script.extend([httpx.Response(500)] * 5)
    emitter = make_emitter(max_attempts=6, backoff_base=0.5, backoff_cap=3.0, random=lambda: 0.999)
    emitter.emit(event(1))
    emitter.flush(timeout=5)
    assert sleep.delays == pytest.approx([0.4995, 0.999, 1.998, 2.997, 2.997])
    assert plane.numbers() == [1]


@pytest.mark.parametrize("failures", [1, 2, 5, 40, 10_000])
def test_full_jitter_stays_within_zero_and_the_doubled_ceiling(failures: int) -> None:
    ceiling = min(30.0, 0.5 * 2 ** (failures - 1)) if failures < 100 else 30.0
    assert backoff_delay(failures, base=0.5, cap=30.0, random=lambda: 0.0) == 0.0
    assert backoff_delay(failures, base=0.5, cap=30.0, random=lambda: 0.999999) == pytest.approx(ceiling * 0.999999)


@pytest.mark.parametrize(
    ("header", "seconds"), [("7", 7.0), (" 1.5 ", 1.5), ("-1", None), ("soon", None), (None, None), ("nan", None)]
)
def test_retry_after_is_read_as_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header) == seconds


def test_an_outage_spools_batches_and_replays_them_in_order_before_newer_ones(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    plane.down = True
    emitter = make_emitter(max_batch_events=2, max_attempts=2)
    for number in range(5):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    stats = emitter.stats()
    assert (stats.spooled, stats.sent, stats.pending) == (5, 0, 0)
    assert stats.spool_bytes > 0
    spooled_ids = list(dict.fromkeys(plane.attempts))

    plane.down = False
    for number in range(5, 8):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    assert plane.numbers() == list(range(8))
    assert list(plane.counted)[: len(spooled_ids)] == spooled_ids  # the replay sent the first attempts' ids
    stats = emitter.stats()
    assert (stats.sent, stats.replayed, stats.duplicate, stats.dropped, stats.spool_bytes) == (8, 5, 0, 0, 0)


def test_the_spool_outlives_its_emitter_and_a_new_one_replays_it(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], tmp_path: Path
) -> None:
    plane.down = True
    first = make_emitter(max_batch_events=2, max_attempts=1)
    for number in range(5):
        first.emit(event(number))
    assert first.close(timeout=5)
    assert first.stats().spooled == 5
    spooled_ids = set(plane.attempts)

    plane.down = False
    second = make_emitter(max_batch_events=2)
    second.emit(event(5))
    second.flush(timeout=5)
    assert plane.numbers() == [0, 1, 2, 3, 4, 5]
    assert spooled_ids <= set(plane.counted)  # the same ids a restarted process replays
    stats = second.stats()
    assert (stats.queued, stats.sent, stats.replayed, stats.spool_bytes) == (1, 6, 5, 0)


def test_a_replay_of_a_batch_whose_answer_was_lost_counts_once(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    plane.script.append(plane.committed_then_lost)
    emitter = make_emitter()
    for number in range(3):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    assert plane.numbers() == [0, 1, 2]
    stats = emitter.stats()
    assert (stats.sent, stats.duplicate, stats.batches_duplicate) == (0, 3, 1)


def test_a_full_queue_moves_its_oldest_batch_to_the_spool_behind_the_batch_in_flight(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], sleep: RecordedSleep
) -> None:
    plane.down = True
    gate = threading.Event()
    sleep.gate = gate
    emitter = make_emitter(max_batch_events=2, max_queue_events=4, max_attempts=3)
    emitter.emit(event(0))
    emitter.emit(event(1))  # a full batch: the worker takes it, fails, and is held in its backoff
    assert sleep.waiting.wait(5)
    for number in range(2, 7):  # the fifth of these finds the queue full
        emitter.emit(event(number))
    stats = emitter.stats()
    assert (stats.queued, stats.spooled, stats.batches_spooled, stats.pending, stats.dropped) == (7, 4, 2, 3, 0)

    plane.down = False
    gate.set()
    emitter.flush(timeout=5)
    assert plane.numbers() == list(range(7))
    stats = emitter.stats()
    assert (stats.sent, stats.duplicate, stats.dropped, stats.spool_bytes) == (7, 0, 0, 0)


def test_events_are_dropped_only_when_the_spool_is_at_its_cap(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], sleep: RecordedSleep
) -> None:
    plane.down = True
    gate = threading.Event()
    sleep.gate = gate
    one_batch = len(json.dumps({"batch_id": "e" * 40, "pipeline": PIPELINE, "events": [1, 2]})) + 2 * 120
    emitter = make_emitter(max_batch_events=2, max_queue_events=4, max_attempts=3, spool_max_bytes=one_batch)
    emitter.emit(event(0))
    emitter.emit(event(1))
    assert sleep.waiting.wait(5)
    for number in range(2, 7):
        emitter.emit(event(number))
    stats = emitter.stats()
    # The batch in flight fits the spool; the oldest queued batch, which would pass the cap, is dropped.
    assert (stats.spooled, stats.dropped, stats.pending) == (2, 2, 3)

    plane.down = False
    gate.set()
    emitter.flush(timeout=5)
    assert plane.numbers() == [0, 1, 4, 5, 6]
    stats = emitter.stats()
    assert stats.queued == stats.sent + stats.duplicate + stats.rejected + stats.dropped + stats.pending


@pytest.mark.parametrize(
    ("status", "problem"),
    [
        (422, "invalid-events"),
        (401, "unauthorized"),
        (403, "forbidden"),
        (409, "batch-id-reused"),
    ],
)
def test_a_batch_refused_for_good_is_rejected_without_retry_or_spool(
    plane: FakeControlPlane,
    make_emitter: Callable[..., Emitter],
    sleep: RecordedSleep,
    caplog: pytest.LogCaptureFixture,
    status: int,
    problem: str,
) -> None:
    body = {"type": f"https://controlplane.dev/problems/{problem}", "detail": "event 1: unknown type", "status": status}
    plane.script.append(httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"}))
    emitter = make_emitter()
    with caplog.at_level(logging.ERROR, logger="controlplane_client.emitter"):
        for number in range(4):
            emitter.emit(event(number))
        emitter.flush(timeout=5)
    assert len(plane.attempts) == 2  # the refused batch once, then the next batch
    assert plane.numbers() == [3]
    stats = emitter.stats()
    assert (stats.rejected, stats.batches_rejected, stats.sent, stats.spooled, stats.spool_bytes) == (3, 1, 1, 0, 0)
    assert sleep.delays == []
    assert f"problems/{problem}: event 1: unknown type" in caplog.text


def test_close_sends_what_is_queued_and_drops_what_comes_after(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    emitter = make_emitter(max_batch_events=100)
    emitter.emit(event(1))
    emitter.emit(event(2))
    assert emitter.close(timeout=5)
    assert plane.numbers() == [1, 2]
    emitter.emit(event(3))
    assert emitter.stats().dropped == 1


def test_close_during_an_outage_spools_at_once_rather_than_waiting_out_the_backoff(
    plane: FakeControlPlane, tmp_path: Path
) -> None:
    plane.down = True
    emitter = Emitter(
        "http://control-plane.test",
        "ingest-token",
        pipeline=PIPELINE,
        spool_dir=tmp_path / "spool",
        settings=EmitterSettings(max_batch_events=2, backoff_base=60.0, backoff_cap=60.0, spool_fsync=False),
        transport=httpx.MockTransport(plane),
        random=lambda: 1.0,
    )
    for number in range(3):
        emitter.emit(event(number))
    assert wait_until(lambda: len(plane.attempts) >= 1)  # the worker is in a 60 s backoff now
    started = time.monotonic()
    assert emitter.close(timeout=5)
    assert time.monotonic() - started < 2
    assert emitter.stats().spooled == 3


def test_a_large_body_is_sent_gzipped(plane: FakeControlPlane, make_emitter: Callable[..., Emitter]) -> None:
    emitter = make_emitter(max_batch_events=50, gzip_min_bytes=1024)
    for number in range(50):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    [request] = plane.requests
    assert request.headers["content-encoding"] == "gzip"
    assert len(request.content) < len(gzip.decompress(request.content))
    assert plane.numbers() == list(range(50))


def test_a_batch_over_the_byte_limit_is_split_in_order(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    emitter = make_emitter(max_batch_events=40, max_batch_bytes=2000)
    for number in range(40):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    assert len(plane.counted) > 1
    assert all(len(request.content) <= 2000 for request in plane.requests)
    assert plane.numbers() == list(range(40))


def test_an_event_that_cannot_be_encoded_is_dropped_and_its_batch_still_sent(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    emitter = make_emitter()
    emitter.emit(event(1))
    emitter.emit({"type": "vision_analysis", "value": object()})
    emitter.emit(event(2))
    emitter.flush(timeout=5)
    assert plane.numbers() == [1, 2]
    assert (emitter.stats().dropped, emitter.stats().sent) == (1, 2)


def test_mapping_events_are_sent_as_they_are(plane: FakeControlPlane, make_emitter: Callable[..., Emitter]) -> None:
    emitter = make_emitter()
    sent = {"type": "http_request", "time": "2026-11-23T12:00:00+00:00", "environment": "qa", "variant": "on",
            "labels": {"route": "other", "status_class": "2xx"}, "value": 4.0}  # fmt: skip
    emitter.emit(sent)
    emitter.flush(timeout=5)
    assert plane.events == [sent]


def test_stats_are_exposed_on_a_prometheus_registry_while_the_emitter_runs(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    registry = CollectorRegistry()
    emitter = make_emitter(registry=registry)
    for number in range(4):
        emitter.emit(event(number))
    emitter.flush(timeout=5)
    labels = {"pipeline": PIPELINE}
    assert registry.get_sample_value("pipeline_emitter_events_total", {**labels, "outcome": "sent"}) == 4
    assert registry.get_sample_value("pipeline_emitter_events_total", {**labels, "outcome": "queued"}) == 4
    assert registry.get_sample_value("pipeline_emitter_batches_total", {**labels, "outcome": "sent"}) == 2
    assert registry.get_sample_value("pipeline_emitter_pending_events", labels) == 0
    emitter.close(timeout=5)
    assert registry.get_sample_value("pipeline_emitter_events_total", {**labels, "outcome": "sent"}) is None


def test_stats_are_a_frozen_snapshot(make_emitter: Callable[..., Emitter]) -> None:
    stats = make_emitter().stats()
    assert stats == EmitterStats()
    with pytest.raises(AttributeError):
        stats.sent = 1  # type: ignore[misc]


# The spool on its own.


def test_the_spool_keeps_unacknowledged_batches_across_a_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000, segment_bytes=30, fsync=True)
    bodies = [f'{{"batch_id":"batch-{n:04d}"}}'.encode() for n in range(4)]
    for body in bodies:
        spool.append(body)
    assert spool.head() == bodies[0]
    spool.acknowledge(bodies[0])
    spool.acknowledge(bodies[1])
    spool.close()

    reopened = Spool(tmp_path, max_bytes=10_000, segment_bytes=30)
    assert reopened.head() == bodies[2]
    reopened.acknowledge(bodies[2])
    reopened.acknowledge(bodies[3])
    assert reopened.head() is None
    assert reopened.is_empty
    reopened.close()
    assert sorted(path.name for path in tmp_path.glob("*.jsonl")) == []  # acknowledged segments are deleted


def test_a_line_torn_by_a_crash_is_cut_when_the_spool_is_opened(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=10_000)
    spool.append(b'{"batch_id":"whole-batch"}')
    spool.close()
    [segment] = tmp_path.glob("*.jsonl")
    with open(segment, "ab") as file:
        file.write(b'{"batch_id":"torn-ba')
    reopened = Spool(tmp_path, max_bytes=10_000)
    assert reopened.head() == b'{"batch_id":"whole-batch"}'
    reopened.acknowledge(b'{"batch_id":"whole-batch"}')
    reopened.append(b'{"batch_id":"next-batch"}')
    assert reopened.head() == b'{"batch_id":"next-batch"}'
    reopened.close()


def test_a_spool_directory_serves_one_emitter_at_a_time(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    with pytest.raises(SpoolInUse):
        Spool(tmp_path, max_bytes=100)
    spool.close()
    Spool(tmp_path, max_bytes=100).close()


def test_the_spool_refuses_an_append_past_its_cap(tmp_path: Path) -> None:
    from controlplane_client.emitter.spool import SpoolFull

    spool = Spool(tmp_path, max_bytes=20)
    spool.append(b"x" * 10)
    with pytest.raises(SpoolFull):
        spool.append(b"y" * 10)
    spool.acknowledge(b"x" * 10)
    spool.append(b"y" * 10)  # acknowledged bytes no longer count
    spool.close()
