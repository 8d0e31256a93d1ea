"""Event-driven guard evaluation, wired: committed ingest batches trigger the evaluation of the rules they concern.

The decisions are ``guarding.debounce``'s; this runs them on one daemon thread per replica. When a run is due the
thread hands it to its ``act``: on the leader that evaluates (through the leader's one ``GuardEvaluator``); on any
other replica on PostgreSQL it tells the leader with a NOTIFY on ``EVALUATION_CHANNEL``, which the leader's
``LeaderListener`` turns into a trigger of its own. (SQLite has one replica.) The periodic tick stays the safety
net: a trigger lost with a connection or a leader is evaluated at the next tick.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable

import psycopg
from sqlalchemy import Engine, func, select

from controlplane.guarding.debounce import EVERY_RULE, Debouncer, Reads, batch_reads
from controlplane.scheduling.failures import FailureStreak
from controlplane.telemetry.service import PendingBatch

__all__ = ["EVALUATION_CHANNEL", "EvaluationTrigger", "LeaderListener", "guard_action", "leader_notifier"]

logger = logging.getLogger(__name__)

#: The PostgreSQL channel on which replicas that do not lead tell the leader which (pipeline, event) pairs grew.
EVALUATION_CHANNEL = "controlplane_evaluate"
# PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more: a larger trigger is sent as "every rule".
_MAX_PAYLOAD = 7900
JOIN_TIMEOUT_SECONDS = 30.0

Act = Callable[[Reads | None], object]


class EvaluationTrigger:
    """Debounced triggers, acted on by one thread: at most one ``act`` in flight and one queued (see ``debounce``)."""

    def __init__(self, *, min_gap: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._debouncer = Debouncer(min_gap=min_gap)
        self._monotonic = monotonic
        self._changed = threading.Condition()
        self._act: Act | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.acted = 0  # runs ended so far, done or failed
        self._failures = FailureStreak(logger, "triggered alert evaluation")

    def committed(self, batches: Iterable[PendingBatch]) -> None:
        """Ingest committed ``batches`` (the batch writer's hook): trigger the rules that read what they added."""
        self.offer(batch_reads(batches))

    def offer(self, reads: Reads | None) -> None:
        """Trigger the rules that read ``reads`` (EVERY_RULE: all); returns at once, safe from any thread."""
        with self._changed:
            self._debouncer.offer(reads)
            self._changed.notify_all()

    def start(self, act: Act) -> None:
        """Act on triggers from now on (those offered before are acted on first)."""
        self._act = act
        self._stopping = False
        self._thread = threading.Thread(target=self._follow, name="alert-trigger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread once the run in flight, if any, has ended; a queued run is left to the tick."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=JOIN_TIMEOUT_SECONDS)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing runs or is queued; False if ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._debouncer.idle, timeout=timeout)

    def wait_acted(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` runs have ended since start; False if ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self.acted >= count, timeout=timeout)

    def run_due(self) -> bool:
        """Act on the queued trigger if it is due now, in this thread; True if it did (the thread's one step)."""
        with self._changed:
            now = self._monotonic()
            due = self._debouncer.due_at()
            if due is None or due > now or self._act is None:
                return False
            reads = self._debouncer.start(now)
        try:
            self._act(reads)
        except Exception as error:
            self._failures.failed(error)
        else:
            self._failures.succeeded()
        finally:
            with self._changed:
                self._debouncer.finish()
                self.acted += 1
                self._changed.notify_all()
        return True

    def _follow(self) -> None:
        while True:
            with self._changed:
                if self._stopping:
                    return
                due = self._debouncer.due_at()
                wait = None if due is None else due - self._monotonic()
                if wait is None or wait > 0:
                    self._changed.wait(timeout=wait)
                    continue
            self.run_due()


def guard_action(
    evaluate: Callable[[Reads | None], object] | None,
    is_leader: Callable[[], bool],
    tell_leader: Callable[[Reads | None], None] | None,
) -> Act:
    """What a due trigger does: evaluate here if this replica leads, else tell the leader (if it can be told)."""

    def act(reads: Reads | None) -> None:
        if evaluate is not None and is_leader():
            evaluate(reads)
        elif tell_leader is not None:
            tell_leader(reads)

    return act


def _payload(reads: Reads | None) -> str:
    """The NOTIFY payload: the pairs as JSON, or "" (every rule) when absent or too long for a NOTIFY."""
    if reads is None:
        return ""
    text = json.dumps(sorted(reads), separators=(",", ":"))
    return text if len(text.encode()) <= _MAX_PAYLOAD else ""


def _reads(payload: str) -> Reads | None:
    """The pairs a payload names; EVERY_RULE for "" or anything unreadable (evaluating more is always safe)."""
    try:
        pairs = json.loads(payload) if payload else None
        return frozenset((str(pipeline), str(event)) for pipeline, event in pairs) if pairs else EVERY_RULE
    except (ValueError, TypeError):
        return EVERY_RULE


def leader_notifier(engine: Engine) -> Callable[[Reads | None], None]:
    """Tell the leader, through PostgreSQL, which pairs grew (a NOTIFY on ``EVALUATION_CHANNEL``)."""

    def tell(reads: Reads | None) -> None:
        with engine.connect() as connection:
            connection.execute(select(func.pg_notify(EVALUATION_CHANNEL, _payload(reads))))
            connection.commit()

    return tell


class LeaderListener:
    """LISTENs on ``EVALUATION_CHANNEL`` and, while this replica leads, offers what it hears to its trigger."""

    def __init__(self, engine: Engine, trigger: EvaluationTrigger) -> None:
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._trigger = trigger
        self._is_leader: Callable[[], bool] = lambda: False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set once LISTEN is in place (tests wait for it)

    def start(self, is_leader: Callable[[], bool]) -> None:
        """Listen on a thread of its own, reconnecting every second after a failure."""
        self._is_leader = is_leader
        self._stop = threading.Event()  # a new one: a thread stopped a moment ago still sees its own, set
        self._thread = threading.Thread(
            target=self._listen, args=(self._stop,), name="alert-trigger-listener", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: the thread closes its connection within the second it waits for notifications (not
        joined, as the configuration feed's: it holds nothing of the engine, and shutdown need not wait for it)."""
        self._stop.set()
        self._thread = None

    def _listen(self, stop: threading.Event) -> None:
        lost = False  # told once per outage, not at every reconnect attempt
        while not stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {EVALUATION_CHANNEL}")
                    self.listening.set()
                    if lost:
                        logger.warning("alert trigger LISTEN connection back")
                        lost = False
                    while not stop.is_set():
                        for notice in connection.notifies(timeout=1.0, stop_after=1):
                            # A follower ignores it: the leader heard the same notice.
                            if self._is_leader():
                                self._trigger.offer(_reads(notice.payload))
            except psycopg.Error as error:
                self.listening.clear()
                if stop.is_set():
                    return
                if not lost:
                    logger.warning("alert trigger LISTEN connection lost (%s); reconnecting every second", error)
                    lost = True
                stop.wait(1.0)
