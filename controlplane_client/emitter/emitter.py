"""The emitter: takes events on the request path without waiting, and ships them in batches from a thread.

Where an event goes::

    emit() --append--> queue (memory, bounded) --worker thread--> POST /api/v1/events --200--> sent / duplicate
                          | full: oldest batch                          | transient, max_attempts times: spool
                          v                                             v
                        spool (disk, capped) <--------------------------+
                          | replayed oldest first, before any newer batch, whenever the control plane answers
                          v
                        POST /api/v1/events (same batch id as the first attempt: a replay counts once)

Who an event is about (a user id, the flag's targeting key) is hashed here before it is queued (``emit``'s
``subject``, see ``subjects``): the raw key never leaves the process.

A batch's id is fixed when the batch is formed and goes with its body into the spool, so every retry and every
replay, also by a later process, sends the same id. Refused batches (4xx but 408/429) are counted as rejected and
logged, never retried. Events are dropped only when the spool cannot take them (its byte cap, a disk error) or
cannot be encoded.

The pieces: ``outbox`` (queue, spool, batches, counts), ``shipping`` (one send cycle of the thread: replay, send,
retry with backoff, spool on an outage), ``delivery`` (one POST and its verdict); this module is the public API and
the thread's loop.
"""

from __future__ import annotations

import functools
import logging
import random as random_module
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
from prometheus_client import CollectorRegistry

from controlplane_client.emitter.delivery import BatchPoster
from controlplane_client.emitter.events import Event, Outgoing
from controlplane_client.emitter.outbox import Outbox
from controlplane_client.emitter.settings import EmitterSettings
from controlplane_client.emitter.shipping import Shipper
from controlplane_client.emitter.stats import EmitterCollector, EmitterStats
from controlplane_client.emitter.subjects import subject_digest

__all__ = ["Emitter", "EmitterSettings"]

logger = logging.getLogger(__name__)

_EMITTER_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class Emitter:
    """Ships a pipeline's events to the control plane; ``emit`` never waits on the network.

    Locks: the outbox's ``spool_lock`` (spool, batches in flight) is taken before its ``lock`` (queue, counts);
    ``emit`` takes only ``lock``, and takes ``spool_lock`` only when the queue is full.
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
        self._clock = clock
        self._closing = threading.Event()
        self._outbox = outbox = Outbox(pipeline, emitter_id=emitter_id, spool_dir=Path(spool_dir), settings=settings)
        # The request path's view of the outbox, one attribute lookup each.
        self._lock = outbox.lock
        self._queue = outbox.queue
        self._capacity = settings.max_queue_events  # 0 once closed: every later emit takes the slow path
        self._max_batch = settings.max_batch_events
        secret = settings.subject_key.encode() if settings.subject_key else None
        # Users repeat: each one's digest is worked out once (kept in this process only, like the raw key).
        self._digest = functools.lru_cache(maxsize=4096)(functools.partial(subject_digest, secret=secret))

        self._client = httpx.Client(base_url=base_url, timeout=settings.request_timeout, transport=transport)
        self._shipper = Shipper(
            outbox,
            BatchPoster(self._client, token, gzip_min_bytes=settings.gzip_min_bytes),
            settings,
            closing=self._closing,
            # The default sleep wakes at close, so closing never waits out a backoff.
            sleep=sleep if sleep is not None else self._closing.wait,
            random=random,
        )

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

    def emit(self, event: Outgoing, *, subject: str | None = None) -> None:
        """Queue one event and return at once (only a full queue makes it write a batch to the spool).

        ``subject`` is the raw key of who the event is about (the user id the flag was evaluated for): it is hashed
        (``subject``) and only the digest is sent, as the event's ``subject``.
        """
        if subject is not None:
            digest = self._digest(subject)
            event = (
                msgspec.structs.replace(event, subject=digest)
                if isinstance(event, Event)
                else {**event, "subject": digest}
            )
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
        self._outbox.overflow(event)

    def subject(self, key: str) -> str:
        """The subject sent for the raw ``key`` (HMAC-SHA256 under the settings' ``subject_key``, else SHA-256, 32
        hex characters): for events built with their ``subject`` already set."""
        return self._digest(key)

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
            self._outbox.closed = True
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
        return self._outbox.stats()

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
                    self._shipper.cycle(forced or closing)
                except Exception:
                    logger.exception("emitter of %s: a send cycle failed", self.pipeline)
                    if closing:
                        # While closing it writes everything it can, rather than loop.
                        self._outbox.spool_queue(self._closing)
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

    def _shut_down(self) -> None:
        self._outbox.shut_down()
        self._client.close()
        if self._registry is not None:
            self._registry.unregister(self._collector)
        with self._flushed:
            self._flushed.notify_all()
