"""One send cycle of the emitter's thread: replay the spool, send new batches, and on an outage spool and back off.

When the spool holds anything, new batches go behind it rather than past it (order per emitter), so an outage is:
a batch fails ``max_attempts`` times with backoff and is spooled; from then on each cycle tries the spool's oldest
batch once, spools what has queued meanwhile, and waits a backoff; once the oldest is taken, the rest follow.
Refused batches (4xx but 408/429) are counted as rejected and logged, never retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import msgspec

from controlplane_client.emitter.delivery import Answer, BatchPoster, Verdict
from controlplane_client.emitter.events import read_spooled
from controlplane_client.emitter.outbox import Batch, Outbox
from controlplane_client.emitter.settings import EmitterSettings
from controlplane_client.retry import backoff_delay

__all__ = ["Shipper"]

logger = logging.getLogger(__name__)


class Shipper:
    """Ships what an outbox holds to the control plane; runs on the emitter's thread only."""

    def __init__(
        self,
        outbox: Outbox,
        poster: BatchPoster,
        settings: EmitterSettings,
        *,
        closing: threading.Event,
        sleep: Callable[[float], object],
        random: Callable[[], float],
    ) -> None:
        self._outbox = outbox
        self._poster = poster
        self._pipeline = outbox.pipeline
        self._settings = settings
        self._closing = closing
        self._sleep = sleep
        self._random = random
        self._failures = 0  # transient failures in a row, for the backoff
        self._last_failure: Answer | None = None

    def cycle(self, force: bool) -> None:
        """Replay the spool, then send new batches (full ones, or all when forced); on an outage, spool and wait."""
        if self._replay() and self._send_new(force):
            return
        self._outbox.spool_queue(self._closing)
        if not self._closing.is_set() and self._last_failure is not None:
            self._sleep(self._delay(self._last_failure))

    def _replay(self) -> bool:
        """Send spooled batches oldest first until none is left (True) or one was not taken (False)."""
        outbox = self._outbox
        while True:
            with outbox.spool_lock:
                body = outbox.spool.head()
            if body is None:
                return True
            try:
                spooled = read_spooled(body)
            except msgspec.DecodeError:
                logger.error("emitter of %s: an unreadable line in the spool was skipped", self._pipeline)
                with outbox.spool_lock:
                    outbox.spool.acknowledge(body)
                continue
            batch = Batch(spooled.batch_id, body, len(spooled.events))
            answer = self._poster.post(body)
            if answer.verdict is Verdict.TRANSIENT:
                self._note_failure(batch, answer)
                return False
            with outbox.spool_lock:
                outbox.spool.acknowledge(body)
            self._settle(batch, answer, replayed=True)

    def _send_new(self, force: bool) -> bool:
        """Send batches from the queue while the spool is empty; False once one had to be spooled."""
        outbox = self._outbox
        while True:
            with outbox.spool_lock:
                if not outbox.spool.is_empty:
                    return True  # the next cycle replays it first
                with outbox.lock:
                    queued = len(outbox.queue)
                    ready = queued >= outbox.max_batch or (force and queued > 0)
                    events = outbox.take(min(outbox.max_batch, queued)) if ready else []
                if not events:
                    return True
                outbox.in_flight = outbox.encode(events)
                outbox.in_flight_spooled = False
            while outbox.in_flight:
                batch = outbox.in_flight[0]
                answer = self._deliver(batch)
                with outbox.spool_lock:
                    outbox.in_flight.pop(0)
                    if outbox.in_flight_spooled:
                        # It went to the spool first, into an empty spool: it is the head.
                        if answer.verdict is not Verdict.TRANSIENT:
                            outbox.spool.acknowledge(batch.body)
                        else:
                            outbox.in_flight.clear()  # all in the spool already, in order
                            return False
                    elif answer.verdict is Verdict.TRANSIENT:
                        for waiting in [batch, *outbox.in_flight]:
                            outbox.write_spool(waiting)
                        outbox.in_flight.clear()
                        return False
                self._settle(batch, answer, replayed=False)

    def _deliver(self, batch: Batch) -> Answer:
        """Send a new batch, retrying transient failures with backoff up to ``max_attempts`` times."""
        attempts = 0
        while True:
            answer = self._poster.post(batch.body)
            attempts += 1
            if answer.verdict is not Verdict.TRANSIENT:
                return answer
            self._note_failure(batch, answer)
            if attempts >= self._settings.max_attempts or self._closing.is_set():
                return answer
            self._sleep(self._delay(answer))

    def _delay(self, answer: Answer) -> float:
        if answer.retry_after is not None:
            return min(answer.retry_after, self._settings.max_retry_after)
        settings = self._settings
        return backoff_delay(self._failures, base=settings.backoff_base, cap=settings.backoff_cap, random=self._random)

    def _note_failure(self, batch: Batch, answer: Answer) -> None:
        self._failures += 1
        self._last_failure = answer
        with self._outbox.lock:
            self._outbox.counts.transient_failures += 1
        logger.info("emitter of %s: batch %s not taken (%s)", self._pipeline, batch.batch_id, answer.reason)

    def _settle(self, batch: Batch, answer: Answer, *, replayed: bool) -> None:
        """Count a batch the control plane answered for good."""
        self._failures = 0
        counts = self._outbox.counts
        with self._outbox.lock:
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
                self._pipeline,
                batch.batch_id,
                batch.events,
                answer.reason,
            )
