"""Group commit for ingest: batches that arrive together are recorded in one transaction.

Each request hands its validated batch to the writer and waits for the commit that records it, so an answer
still means "committed". While one transaction runs, the batches that arrive queue up; the next transaction takes
them all (up to ``max_group``). One write lock, one commit (one fsync) and one read-modify-write of each window
row then serve many batches: under load, far fewer transactions than batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker

from controlplane.clock import Clock
from controlplane.db import DatabaseTimeout, remaining, session_scope
from controlplane.errors import Conflict
from controlplane.telemetry.schemas import IngestResult
from controlplane.telemetry.service import PendingBatch, record_batches

__all__ = ["BatchWriter"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Waiting:
    batch: PendingBatch
    answer: asyncio.Future[IngestResult]


class BatchWriter:
    """Records pending batches in groups, one transaction at a time per process."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        clock: Clock,
        max_group: int = 64,
        record: Callable[..., list[IngestResult | Conflict]] = record_batches,
        deadline: float | None = None,
        committed: Callable[[list[PendingBatch]], None] | None = None,
    ) -> None:
        """``committed`` is told, after each commit and before the answers, the batches it newly recorded."""
        self._factory = factory
        self._committed = committed
        self._deadline = deadline
        self._clock = clock
        self._max_group = max_group
        self._record = record
        self._queue: list[_Waiting] = []
        self._draining: asyncio.Task[None] | None = None
        self.transactions = 0

    async def submit(self, batch: PendingBatch) -> IngestResult:
        """Record ``batch`` (with whatever else is waiting) and return its result once committed; past the
        ``deadline`` raise ``DatabaseTimeout`` without acknowledging it (it may still be committed later: the batch
        id makes the client's retry count once)."""
        answer: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(batch, answer))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain(), name="ingest-writer")
        try:
            return await asyncio.wait_for(asyncio.shield(answer), remaining(self._deadline))
        except TimeoutError as error:
            raise DatabaseTimeout(f"the batch was not committed within {self._deadline:g} s") from error

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[: self._max_group], self._queue[self._max_group :]
            try:
                results = await anyio.to_thread.run_sync(self._write, [item.batch for item in group])
            except BaseException as error:  # nothing of this group was committed: every waiter hears why
                for item in group:
                    if not item.answer.done():
                        item.answer.set_exception(error if isinstance(error, Exception) else RuntimeError(error))
                if not isinstance(error, Exception):
                    raise
                continue
            self._tell_committed(group, results)
            for item, result in zip(group, results, strict=True):
                if item.answer.done():
                    continue
                if isinstance(result, Conflict):
                    item.answer.set_exception(result)
                else:
                    item.answer.set_result(result)

    def _tell_committed(self, group: list[_Waiting], results: list[IngestResult | Conflict]) -> None:
        if self._committed is None:
            return
        recorded = [
            item.batch
            for item, result in zip(group, results, strict=True)
            if isinstance(result, IngestResult) and not result.duplicate
        ]
        if not recorded:
            return
        try:
            self._committed(recorded)
        except Exception:  # the batches are committed: their answers must not depend on the hook
            logger.exception("the ingest commit hook failed")

    def _write(self, batches: list[PendingBatch]) -> list[IngestResult | Conflict]:
        with session_scope(self._factory, timeout=self._deadline) as session:
            results = self._record(session, batches, now=self._clock())
        self.transactions += 1
        return results
