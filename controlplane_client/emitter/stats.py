"""What an emitter has done with its events, as a frozen snapshot and, optionally, on a Prometheus registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["EmitterCollector", "EmitterStats"]


@dataclass(frozen=True, slots=True)
class EmitterStats:
    """Counts since the emitter started; events unless named batches.

    Every emitted event ends in exactly one of sent, duplicate, rejected or dropped, or is still pending (in
    memory) or spooled and not yet replayed. ``replayed`` is the part of sent and duplicate that came back from
    the spool, including batches a previous emitter spooled (which this one never ``queued``).
    """

    queued: int = 0
    """Events taken by ``emit``."""
    sent: int = 0
    """Events the control plane acknowledged and counted."""
    duplicate: int = 0
    """Events of batches the control plane had already counted under the same id (a replay or a lost answer)."""
    spooled: int = 0
    """Events written to the spool."""
    replayed: int = 0
    """Events sent from the spool and acknowledged (counted or duplicate)."""
    dropped: int = 0
    """Events lost: the queue was full and the spool could not take them, or they could not be encoded."""
    rejected: int = 0
    """Events of batches refused for good (422 invalid events, 401, 403, ...)."""
    batches_sent: int = 0
    batches_duplicate: int = 0
    batches_spooled: int = 0
    batches_rejected: int = 0
    transient_failures: int = 0
    """Attempts that failed and will be made again (connection errors, timeouts, 5xx, 429)."""
    pending: int = 0
    """Events in memory now, not yet sent or spooled."""
    spool_bytes: int = 0
    """Bytes in the spool not yet acknowledged."""


_EVENT_OUTCOMES = ("queued", "sent", "duplicate", "spooled", "replayed", "dropped", "rejected")
_BATCH_OUTCOMES = ("sent", "duplicate", "spooled", "rejected")


class EmitterCollector(Collector):
    """Exposes an emitter's stats at scrape time, so ``emit`` pays nothing for metrics."""

    def __init__(self, stats: Callable[[], EmitterStats], pipeline: str) -> None:
        self._stats = stats
        self._pipeline = pipeline

    def collect(self) -> Iterator[Metric]:
        """Yield the emitter's counters and gauges."""
        stats = self._stats()
        events = CounterMetricFamily(
            "pipeline_emitter_events", "Events by what the emitter did with them.", labels=["pipeline", "outcome"]
        )
        for outcome in _EVENT_OUTCOMES:
            events.add_metric([self._pipeline, outcome], getattr(stats, outcome))
        batches = CounterMetricFamily(
            "pipeline_emitter_batches", "Batches by what became of them.", labels=["pipeline", "outcome"]
        )
        for outcome in _BATCH_OUTCOMES:
            batches.add_metric([self._pipeline, outcome], getattr(stats, f"batches_{outcome}"))
        failures = CounterMetricFamily(
            "pipeline_emitter_transient_failures", "Attempts that failed and will be made again.", labels=["pipeline"]
        )
        failures.add_metric([self._pipeline], stats.transient_failures)
        pending = GaugeMetricFamily("pipeline_emitter_pending_events", "Events in memory.", labels=["pipeline"])
        pending.add_metric([self._pipeline], stats.pending)
        spool = GaugeMetricFamily(
            "pipeline_emitter_spool_bytes", "Bytes in the spool not yet acknowledged.", labels=["pipeline"]
        )
        spool.add_metric([self._pipeline], stats.spool_bytes)
        yield from (events, batches, failures, pending, spool)
