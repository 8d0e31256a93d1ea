"""Which rules a committed ingest batch concerns, and when to evaluate them: the decision core of event-driven
guard evaluation (``guarding.trigger`` runs it on a thread; the periodic tick stays as the safety net).

A batch concerns the rules that read one of its (pipeline, event type) pairs from the windows. Triggers are
debounced: a trigger that arrives while nothing runs starts an evaluation at once (unless one started less than
``min_gap`` ago: then at that gap); triggers that arrive while an evaluation runs, or waits for its gap, join the
one queued run that follows. So at most one evaluation is in flight and one queued, at most one starts per
``min_gap`` whatever the rate of batches, and every trigger is covered by a run that starts after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from controlplane.catalog.rules import Rule, RuleSource
from controlplane.telemetry.service import PendingBatch

__all__ = ["EVERY_RULE", "Debouncer", "Reads", "batch_reads", "concerning"]

#: (pipeline, event type) pairs that committed batches added to.
Reads = frozenset[tuple[str, str]]
#: A trigger of every rule (a peer's trigger too large to say which).
EVERY_RULE: Reads | None = None


def batch_reads(batches: Iterable[PendingBatch]) -> Reads:
    """The (pipeline, event type) pairs ``batches`` added to: their series and their tails."""
    pairs: set[tuple[str, str]] = set()
    for batch in batches:
        aggregates = batch.aggregates
        pairs.update((batch.pipeline, key[1]) for key in aggregates.series)
        pairs.update((batch.pipeline, key[0]) for key in aggregates.tails)
    return frozenset(pairs)


def concerning(reads: Reads | None) -> Callable[[Rule], bool] | None:
    """The rules a trigger of ``reads`` evaluates: those that read one of the pairs from the windows (None: every
    rule). Prometheus rules are never concerned by a batch: the tick measures them."""
    if reads is None:
        return None
    wanted = reads

    def concerns(rule: Rule) -> bool:
        return rule.source is RuleSource.EVENTS and (rule.pipeline, rule.event) in wanted

    return concerns


def _merge(pending: Reads | None, reads: Reads | None) -> Reads | None:
    return None if pending is None or reads is None else pending | reads


@dataclass(slots=True)
class Debouncer:
    """The trigger's state; times are seconds of one monotonic clock the caller passes in (no clock of its own).

    The caller loop: ``offer`` on each trigger; when ``due_at()`` is not None and has come, ``start``, evaluate
    what it returned, then ``finish``. The decisions are this class's; the loop only waits and runs.
    """

    min_gap: float
    _queued: bool = False
    _pending: Reads | None = field(default_factory=frozenset)  # EVERY_RULE (None) once any trigger asked for all
    _running: bool = False
    _last_start: float | None = None

    def offer(self, reads: Reads | None) -> None:
        """A trigger: ``reads`` (EVERY_RULE for all) join the queued run, which is created if there is none."""
        if reads is not None and not reads:
            return
        self._pending = _merge(self._pending, reads) if self._queued else reads
        self._queued = True

    def due_at(self) -> float | None:
        """When the queued run may start: None while one runs or none is queued (it is due at ``finish``)."""
        if self._running or not self._queued:
            return None
        return self._last_start + self.min_gap if self._last_start is not None else float("-inf")

    def start(self, now: float) -> Reads | None:
        """Start the queued run: what it evaluates; nothing queued from now on until the next ``offer``."""
        due = self.due_at()
        if due is None or due > now:
            raise RuntimeError("no evaluation is due")
        reads = self._pending
        self._queued, self._pending, self._running, self._last_start = False, frozenset(), True, now
        return reads

    def finish(self) -> None:
        """The run ended (done or failed); a run queued meanwhile is due ``min_gap`` after this one started."""
        self._running = False

    @property
    def running(self) -> bool:
        """True between ``start`` and ``finish``."""
        return self._running

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing is queued."""
        return not self._running and not self._queued
