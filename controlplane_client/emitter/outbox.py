"""Where an emitter's events wait: the bounded queue in memory, the spool on disk behind it, and the counts.

Locks: ``spool_lock`` (spool, batches in flight) is taken before ``lock`` (queue, counts). The request path takes
only ``lock``, and ``spool_lock`` only when the queue is full (``overflow``).

A batch's id is fixed when the batch is formed (``encode``) and goes with its body into the spool, so every retry and
every replay, also by a later process, sends the same id.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from controlplane_client.emitter.events import Outgoing, encode_batch
from controlplane_client.emitter.settings import EmitterSettings
from controlplane_client.emitter.spool import Spool, SpoolFull
from controlplane_client.emitter.stats import EmitterStats

__all__ = ["Batch", "Counts", "Outbox"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Batch:
    """One encoded batch: its id, its body (as sent and as spooled), and how many events it holds."""

    batch_id: str
    body: bytes
    events: int


@dataclass
class Counts:
    """What became of the events so far (``EmitterStats`` without the gauges)."""

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


class Outbox:
    """The queue and the spool of one emitter, and the batches taken from the queue and being sent."""

    def __init__(self, pipeline: str, *, emitter_id: str, spool_dir: Path, settings: EmitterSettings) -> None:
        self.pipeline = pipeline
        # A fresh part per instance: a restarted process must never reuse an id the control plane has counted.
        self._id_prefix = f"{emitter_id}-{uuid.uuid4().hex[:12]}-"
        self._sequence = itertools.count(1)
        self._max_batch_bytes = settings.max_batch_bytes

        self.lock = threading.Lock()
        self.queue: deque[Outgoing] = deque()
        self.max_queue = settings.max_queue_events
        self.max_batch = settings.max_batch_events
        self.closed = False
        self.counts = Counts()
        # Events ever taken out of the queue: `queued` is this plus what is in it, so emit counts nothing.
        self.taken = 0

        self.spool_lock = threading.Lock()
        self.spool = Spool(
            spool_dir,
            max_bytes=settings.spool_max_bytes,
            segment_bytes=settings.spool_segment_bytes,
            fsync=settings.spool_fsync,
        )
        # Batches taken from the queue and being sent; if the queue overflows meanwhile they are spooled first.
        self.in_flight: list[Batch] = []
        self.in_flight_spooled = False

    def stats(self) -> EmitterStats:
        """A snapshot of the counts."""
        with self.spool_lock:
            spool_bytes = self.spool.pending_bytes
            with self.lock:
                counts = asdict(self.counts) | {"queued": self.taken + len(self.queue)}
                return EmitterStats(**counts, pending=len(self.queue), spool_bytes=spool_bytes)

    def take(self, count: int) -> list[Outgoing]:
        """Remove the ``count`` oldest events from the queue (caller holds ``lock``)."""
        self.taken += count
        popleft = self.queue.popleft
        return [popleft() for _ in range(count)]

    def overflow(self, event: Outgoing) -> None:
        """Queue ``event`` on a full queue by moving the oldest batch to the spool (on the caller's thread)."""
        with self.spool_lock:
            with self.lock:
                if self.closed:
                    self.counts.dropped += 1
                    self.taken += 1  # taken, and dropped at once
                    spill: list[Outgoing] | None = None
                elif len(self.queue) < self.max_queue:
                    spill = []  # the worker made room meanwhile
                else:
                    spill = self.take(self.max_batch)
                if spill is not None:
                    self.queue.append(event)
            if spill is None:
                logger.warning("emitter of %s: an event emitted after close was dropped", self.pipeline)
                return
            if not spill:
                return
            # Order: what is in flight is older than anything queued, so it goes to the spool first.
            if self.in_flight and not self.in_flight_spooled:
                self.in_flight_spooled = all(self.write_spool(batch) for batch in self.in_flight)
                if not self.in_flight_spooled:
                    self.drop(len(spill), "the spool cannot take the batches in flight")
                    return
            for batch in self.encode(spill):
                self.write_spool(batch)

    def spool_queue(self, closing: threading.Event) -> None:
        """Move everything queued to the spool (the control plane is away); stop, keeping the rest, if it is full.

        Once ``closing`` is set it writes all it can instead: what the spool cannot take is dropped, not kept.
        """
        with self.spool_lock:
            while True:
                with self.lock:
                    events = self.take(min(self.max_batch, len(self.queue)))
                if not events:
                    return
                batches = self.encode(events)
                if not closing.is_set() and not self._fits(batches):
                    with self.lock:
                        self.queue.extendleft(reversed(events))  # kept in memory, in order, for later
                        self.taken -= len(events)
                    return
                for batch in batches:
                    self.write_spool(batch)

    def _fits(self, batches: list[Batch]) -> bool:
        size = sum(len(batch.body) + 1 for batch in batches)  # +1: each line's newline
        return self.spool.pending_bytes + size <= self.spool.max_bytes

    def write_spool(self, batch: Batch) -> bool:
        """Append one batch to the spool (caller holds ``spool_lock``); count it spooled, or dropped."""
        try:
            self.spool.append(batch.body)
        except (SpoolFull, OSError) as exc:
            self.drop(batch.events, f"batch {batch.batch_id} could not be spooled: {exc}")
            return False
        with self.lock:
            self.counts.spooled += batch.events
            self.counts.batches_spooled += 1
        logger.warning("emitter of %s: batch %s spooled (%d events)", self.pipeline, batch.batch_id, batch.events)
        return True

    def drop(self, events: int, why: str) -> None:
        """Count ``events`` as lost, saying why."""
        with self.lock:
            self.counts.dropped += events
        logger.error("emitter of %s: %d events dropped: %s", self.pipeline, events, why)

    def encode(self, events: list[Outgoing]) -> list[Batch]:
        """Batches of these events, in order, each with a new id and within the byte limit."""
        batch_id = f"{self._id_prefix}{next(self._sequence):08d}"
        try:
            body = encode_batch(batch_id, self.pipeline, events)
        except (TypeError, ValueError) as exc:
            encodable = [event for event in events if _encodable(self.pipeline, event)]
            self.drop(len(events) - len(encodable), f"events that cannot be encoded as JSON ({exc})")
            return self.encode(encodable) if encodable else []
        if len(body) <= self._max_batch_bytes:
            return [Batch(batch_id, body, len(events))]
        if len(events) == 1:
            self.drop(1, f"an event of {len(body)} bytes is over the batch limit")
            return []
        half = len(events) // 2
        return self.encode(events[:half]) + self.encode(events[half:])

    def shut_down(self) -> None:
        """Count what is still queued as dropped and release the spool."""
        with self.lock:
            left = len(self.queue)
            self.take(left)
        if left:
            self.drop(left, "the emitter stopped before it could send or spool them")
        with self.spool_lock:
            self.spool.close()


def _encodable(pipeline: str, event: Outgoing) -> bool:
    try:
        encode_batch("probe-id", pipeline, [event])
    except (TypeError, ValueError):
        return False
    return True
