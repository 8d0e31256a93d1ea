"""The emitter: takes events on the request path without waiting, and ships them in batches from a thread.

Where an event goes::

    emit() --append--> queue (memory, bounded) --worker thread--> POST /api/v1/events --200--> sent / duplicate
                          | full: oldest batch                          | transient, max_attempts times: spool
                          v                                             v
                        spool (disk, capped) <--------------------------+
                          | replayed oldest first, before any newer batch, whenever the control plane answers
                          v
                        POST /api/v1/events (same batch id as the first attempt: a replay counts once)

A batch's id is fixed when the batch is formed and goes with its body into the spool, so every retry and every
replay, also by a later process, sends the same id. Refused batches (4xx but 408/429) are counted as rejected and
logged, never retried. Events are dropped only when the spool cannot take them (its byte cap, a disk error) or
cannot be encoded.

When the spool holds anything, new batches go behind it rather than past it (order per emitter), so an outage is:
a batch fails ``max_attempts`` times with backoff and is spooled; from then on each cycle tries the spool's oldest
batch once, spools what has queued meanwhile, and waits a backoff; once the oldest is taken, the rest follow.
"""

from __future__ import annotations

import itertools
import logging
import random as random_module
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import msgspec
from prometheus_client import CollectorRegistry

from pipeline.emitter.delivery import Answer, BatchPoster, Verdict, backoff_delay
from pipeline.emitter.events import Outgoing, encode_batch, read_spooled
from pipeline.emitter.spool import Spool, SpoolFull
from pipeline.emitter.stats import EmitterCollector, EmitterStats

__all__ = ["Emitter", "EmitterSettings"]

logger = logging.getLogger(__name__)

MAX_EVENTS_PER_BATCH = 5000  # the control plane's ingest_max_events
MAX_BYTES_PER_BATCH = 1024 * 1024  # its ingest_max_bytes, which also bounds the decompressed body
_EMITTER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True, slots=True)
class EmitterSettings:
    """How an emitter batches, retries and spools."""

    max_queue_events: int = 10_000
    """Events held in memory; past it the oldest batch goes to the spool."""
    max_batch_events: int = 500
    """A batch is sent as soon as this many events are queued."""
    max_batch_bytes: int = MAX_BYTES_PER_BATCH
    """Largest body (uncompressed); a batch over it is split."""
    flush_interval: float = 1.0
    """Seconds between sends of whatever is queued, full batch or not."""
    max_attempts: int = 4
    """Attempts for a new batch before it goes to the spool."""
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 300.0
    """Longest ``Retry-After`` obeyed; a larger one is cut to this."""
    request_timeout: float = 10.0
    gzip_min_bytes: int = 4096
    spool_max_bytes: int = 64 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    spool_fsync: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_events <= MAX_EVENTS_PER_BATCH:
            raise ValueError(f"max_batch_events must be within 1..{MAX_EVENTS_PER_BATCH}")
        if self.max_queue_events < self.max_batch_events:
            raise ValueError("max_queue_events must hold at least one batch")
        if not 0 < self.max_batch_bytes <= MAX_BYTES_PER_BATCH:
            raise ValueError(f"max_batch_bytes must be within 1..{MAX_BYTES_PER_BATCH}")
        if self.flush_interval <= 0 or self.max_attempts < 1 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("flush_interval must be positive, max_attempts at least 1, backoffs not negative")


@dataclass(frozen=True, slots=True)
class _Batch:
    batch_id: str
    body: bytes
    events: int


@dataclass
class _Counts:
    sent: int = 0
    duplicate: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    rejected: int = 0
    batches_sent: int = 0
    batches_duplicate: int = 0
    batches_spooled: int = 0
    batches_rejected: int = 0
    transient_failures: int = 0


class Emitter:
    """Ships a pipeline's events to the control plane; ``emit`` never waits on the network.

    Locks: ``_spool_lock`` (spool, batches in flight) is taken before ``_lock`` (queue, counts); ``emit`` takes
    only ``_lock``, and takes ``_spool_lock`` only when the queue is full.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        pipeline: str,
        spool_dir: Path | str,
        settings: EmitterSettings | None = None,
        emitter_id: str = "emitter",
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        random: Callable[[], float] = random_module.random,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not _EMITTER_ID.match(emitter_id):
            raise ValueError("emitter_id must be 1-64 of A-Z a-z 0-9 . _ : -")
        self.settings = settings = settings or EmitterSettings()
        self.pipeline = pipeline
        # A fresh part per instance: a restarted process must never reuse an id the control plane has counted.
        self._id_prefix = f"{emitter_id}-{uuid.uuid4().hex[:12]}-"
        self._sequence = itertools.count(1)
        self._clock = clock
        self._closing = threading.Event()
        # The default sleep wakes at close, so closing never waits out a backoff.
        self._sleep = sleep if sleep is not None else self._closing.wait
        self._random = random

        self._lock = threading.Lock()
        self._queue: deque[Outgoing] = deque()
        self._max_queue = settings.max_queue_events
        self._capacity = settings.max_queue_events  # 0 once closed: every later emit takes the slow path
        self._max_batch = settings.max_batch_events
        self._closed = False
        self._counts = _Counts()
        # Events ever taken out of the queue: `queued` is this plus what is in it, so emit counts nothing.
        self._taken = 0

        self._spool_lock = threading.Lock()
        self._spool = Spool(
            Path(spool_dir),
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
            fsync=settings.spool_fsync,
        )
        # Batches taken from the queue and being sent; if the queue overflows meanwhile they are spooled first.
        self._in_flight: list[_Batch] = []
        self._in_flight_spooled = False

        self._client = httpx.Client(base_url=base_url, timeout=settings.request_timeout, transport=transport)
        self._poster = BatchPoster(self._client, token, gzip_min_bytes=settings.gzip_min_bytes)
        self._failures = 0  # transient failures in a row, for the backoff
        self._last_failure: Answer | None = None

        self._wake = threading.Event()
        self._flushed = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0

        self._registry = registry
        self._collector = EmitterCollector(self.stats, pipeline)
        if registry is not None:
            registry.register(self._collector)
        self._thread = threading.Thread(target=self._run, name=f"emitter-{pipeline}", daemon=True)
        self._thread.start()

    # The request path.

    def emit(self, event: Outgoing) -> None:
        """Queue one event and return at once (only a full queue makes it write a batch to the spool)."""
        # acquire/release rather than `with`: a third cheaper on CPython 3.11, and nothing in between can raise.
        self._lock.acquire()
        queue = self._queue
        if len(queue) < self._capacity:
            queue.append(event)
            full_batch = not len(queue) % self._max_batch
            self._lock.release()
            if full_batch:
                self._wake.set()
            return
        self._lock.release()
        self._overflow(event)

    # Control.

    def flush(self, timeout: float | None = None) -> bool:
        """Have everything queued now sent (or spooled, if the control plane is away); False on timeout."""
        with self._flushed:
            self._flush_requested += 1
            target = self._flush_requested
        self._wake.set()
        with self._flushed:
            return self._flushed.wait_for(
                lambda: self._flush_done >= target or not self._thread.is_alive(), timeout=timeout
            )

    def close(self, timeout: float | None = 10.0) -> bool:
        """Send or spool what is queued, stop the thread and release the spool; False if it did not stop in time."""
        with self._lock:
            self._closed = True
            self._capacity = 0
        self._closing.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "emitter of %s did not stop within %ss; its spool keeps what it wrote", self.pipeline, timeout
            )
            return False
        return True

    def __enter__(self) -> Emitter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> EmitterStats:
        """A snapshot of the counts."""
        with self._spool_lock:
            spool_bytes = self._spool.pending_bytes
            with self._lock:
                counts = asdict(self._counts) | {"queued": self._taken + len(self._queue)}
                return EmitterStats(**counts, pending=len(self._queue), spool_bytes=spool_bytes)

    # The worker thread.

    def _run(self) -> None:
        interval = self.settings.flush_interval
        next_flush = self._clock() + interval
        try:
            while True:
                self._wake.clear()
                with self._flushed:
                    requested = self._flush_requested
                    forced = requested > self._flush_done
                closing = self._closing.is_set()
                now = self._clock()
                if now >= next_flush:
                    forced, next_flush = True, now + interval
                try:
                    self._cycle(forced or closing)
                except Exception:
                    logger.exception("emitter of %s: a send cycle failed", self.pipeline)
                    if closing:
                        self._spool_queue()  # while closing it writes everything it can, rather than loop
                        break
                with self._flushed:
                    self._flush_done = requested
                    self._flushed.notify_all()
                if closing:
                    with self._lock:
                        if not self._queue:
                            break
                    continue
                self._wake.wait(max(0.0, min(next_flush - self._clock(), interval)))
        finally:
            self._shut_down()

    def _cycle(self, force: bool) -> None:
        """Replay the spool, then send new batches (full ones, or all when forced); on an outage, spool and wait."""
        if self._replay() and self._send_new(force):
            return
        self._spool_queue()
        if not self._closing.is_set() and self._last_failure is not None:
            self._sleep(self._delay(self._last_failure))

    def _replay(self) -> bool:
        """Send spooled batches oldest first until none is left (True) or one was not taken (False)."""
        while True:
            with self._spool_lock:
                body = self._spool.head()
            if body is None:
                return True
            try:
                spooled = read_spooled(body)
            except msgspec.DecodeError:
                logger.error("emitter of %s: an unreadable line in the spool was skipped", self.pipeline)
                with self._spool_lock:
                    self._spool.acknowledge(body)
                continue
            batch = _Batch(spooled.batch_id, body, len(spooled.events))
            answer = self._poster.post(body)
            if answer.verdict is Verdict.TRANSIENT:
                self._note_failure(batch, answer)
                return False
            with self._spool_lock:
                self._spool.acknowledge(body)
            self._settle(batch, answer, replayed=True)

    def _send_new(self, force: bool) -> bool:
        """Send batches from the queue while the spool is empty; False once one had to be spooled."""
        while True:
            with self._spool_lock:
                if not self._spool.is_empty:
                    return True  # the next cycle replays it first
                with self._lock:
                    queued = len(self._queue)
                    ready = queued >= self._max_batch or (force and queued > 0)
                    events = self._take(min(self._max_batch, queued)) if ready else []
                if not events:
                    return True
                self._in_flight = self._encode(events)
                self._in_flight_spooled = False
            while self._in_flight:
                batch = self._in_flight[0]
                answer = self._deliver(batch)
                with self._spool_lock:
                    self._in_flight.pop(0)
                    if self._in_flight_spooled:
                        # It went to the spool first, into an empty spool: it is the head.
                        if answer.verdict is not Verdict.TRANSIENT:
                            self._spool.acknowledge(batch.body)
                        else:
                            self._in_flight.clear()  # all in the spool already, in order
                            return False
                    elif answer.verdict is Verdict.TRANSIENT:
                        for waiting in [batch, *self._in_flight]:
                            self._write_spool(waiting)
                        self._in_flight.clear()
                        return False
                self._settle(batch, answer, replayed=False)

    def _deliver(self, batch: _Batch) -> Answer:
        """Send a new batch, retrying transient failures with backoff up to ``max_attempts`` times."""
        attempts = 0
        while True:
            answer = self._poster.post(batch.body)
            attempts += 1
            if answer.verdict is not Verdict.TRANSIENT:
                return answer
            self._note_failure(batch, answer)
            if attempts >= self.settings.max_attempts or self._closing.is_set():
                return answer
            self._sleep(self._delay(answer))

    def _delay(self, answer: Answer) -> float:
        if answer.retry_after is not None:
            return min(answer.retry_after, self.settings.max_retry_after)
        return backoff_delay(
            self._failures, base=self.settings.backoff_base, cap=self.settings.backoff_cap, random=self._random
        )

    def _note_failure(self, batch: _Batch, answer: Answer) -> None:
        self._failures += 1
        self._last_failure = answer
        with self._lock:
            self._counts.transient_failures += 1
        logger.info("emitter of %s: batch %s not taken (%s)", self.pipeline, batch.batch_id, answer.reason)

    def _settle(self, batch: _Batch, answer: Answer, *, replayed: bool) -> None:
        """Count a batch the control plane answered for good."""
        self._failures = 0
        counts = self._counts
        with self._lock:
            if answer.verdict is Verdict.REJECTED:
                counts.rejected += batch.events
                counts.batches_rejected += 1
            elif answer.duplicate:
                counts.duplicate += batch.events
                counts.batches_duplicate += 1
            else:
                counts.sent += batch.events
                counts.batches_sent += 1
            if replayed and answer.verdict is Verdict.ACKNOWLEDGED:
                counts.replayed += batch.events
        if answer.verdict is Verdict.REJECTED:
            logger.error(
                "emitter of %s: batch %s of %d events refused for good: %s",
                self.pipeline,
                batch.batch_id,
                batch.events,
                answer.reason,
            )

    # The spool.

    def _overflow(self, event: Outgoing) -> None:
        """Queue ``event`` on a full queue by moving the oldest batch to the spool (on the caller's thread)."""
        with self._spool_lock:
            with self._lock:
                if self._closed:
                    self._counts.dropped += 1
                    self._taken += 1  # taken, and dropped at once
                    spill: list[Outgoing] | None = None
                elif len(self._queue) < self._max_queue:
                    spill = []  # the worker made room meanwhile
                else:
                    spill = self._take(self._max_batch)
                if spill is not None:
                    self._queue.append(event)
            if spill is None:
                logger.warning("emitter of %s: an event emitted after close was dropped", self.pipeline)
                return
            if not spill:
                return
            # Order: what is in flight is older than anything queued, so it goes to the spool first.
            if self._in_flight and not self._in_flight_spooled:
                self._in_flight_spooled = all(self._write_spool(batch) for batch in self._in_flight)
                if not self._in_flight_spooled:
                    self._drop(len(spill), "the spool cannot take the batches in flight")
                    return
            for batch in self._encode(spill):
                self._write_spool(batch)

    def _spool_queue(self) -> None:
        """Move everything queued to the spool (the control plane is away); stop, keeping the rest, if it is full."""
        with self._spool_lock:
            while True:
                with self._lock:
                    events = self._take(min(self._max_batch, len(self._queue)))
                if not events:
                    return
                batches = self._encode(events)
                if not self._closing.is_set() and not self._fits(batches):
                    with self._lock:
                        self._queue.extendleft(reversed(events))  # kept in memory, in order, for later
                        self._taken -= len(events)
                    return
                for batch in batches:
                    self._write_spool(batch)

    def _take(self, count: int) -> list[Outgoing]:
        """Remove the ``count`` oldest events from the queue (caller holds ``_lock``)."""
        self._taken += count
        popleft = self._queue.popleft
        return [popleft() for _ in range(count)]

    def _fits(self, batches: list[_Batch]) -> bool:
        size = sum(len(batch.body) + 1 for batch in batches)  # +1: each line's newline
        return self._spool.pending_bytes + size <= self._spool.max_bytes

    def _write_spool(self, batch: _Batch) -> bool:
        """Append one batch to the spool (caller holds ``_spool_lock``); count it spooled, or dropped."""
        try:
            self._spool.append(batch.body)
        except (SpoolFull, OSError) as exc:
            self._drop(batch.events, f"batch {batch.batch_id} could not be spooled: {exc}")
            return False
        with self._lock:
            self._counts.spooled += batch.events
            self._counts.batches_spooled += 1
        logger.warning("emitter of %s: batch %s spooled (%d events)", self.pipeline, batch.batch_id, batch.events)
        return True

    def _drop(self, events: int, why: str) -> None:
        with self._lock:
            self._counts.dropped += events
        logger.error("emitter of %s: %d events dropped: %s", self.pipeline, events, why)

    # Batches.

    def _encode(self, events: list[Outgoing]) -> list[_Batch]:
        """Batches of these events, in order, each with a new id and within the byte limit."""
        batch_id = f"{self._id_prefix}{next(self._sequence):08d}"
        try:
            body = encode_batch(batch_id, self.pipeline, events)
        except (TypeError, ValueError) as exc:
            encodable = [event for event in events if _encodable(self.pipeline, event)]
            self._drop(len(events) - len(encodable), f"events that cannot be encoded as JSON ({exc})")
            return self._encode(encodable) if encodable else []
        if len(body) <= self.settings.max_batch_bytes:
            return [_Batch(batch_id, body, len(events))]
        if len(events) == 1:
            self._drop(1, f"an event of {len(body)} bytes is over the batch limit")
            return []
        half = len(events) // 2
        return self._encode(events[:half]) + self._encode(events[half:])

    def _shut_down(self) -> None:
        with self._lock:
            left = len(self._queue)
            self._take(left)
        if left:
            self._drop(left, "the emitter stopped before it could send or spool them")
        with self._spool_lock:
            self._spool.close()
        self._client.close()
        if self._registry is not None:
            self._registry.unregister(self._collector)
        with self._flushed:
            self._flushed.notify_all()


def _encodable(pipeline: str, event: Outgoing) -> bool:
    try:
        encode_batch("probe-id", pipeline, [event])
    except (TypeError, ValueError):
        return False
    return True
