"""A unit of work for HTTP handlers: the whole transaction, commit included, runs in one worker thread.

Why not a session dependency committed in its cleanup: that commit would run in a second thread hop while the
first still holds SQLite's write lock, and with every worker thread busy waiting for that lock nobody could
commit it (a deadlock until the busy timeout). Doing the work and the commit in one call avoids it; an
acknowledged change is still committed before the response leaves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TypeVar

from sqlalchemy.orm import Session, sessionmaker

from controlplane.db import in_thread, session_scope

__all__ = ["UnitOfWork"]

T = TypeVar("T")


class UnitOfWork:
    """Runs a function of a session in a transaction, off the event loop. With a ``deadline`` (seconds), a
    transaction that has not finished by then raises ``DatabaseTimeout`` (503 to the client) and, on PostgreSQL,
    its statements are cancelled by the server after the same time."""

    def __init__(
        self,
        writer: sessionmaker[Session],
        reader: sessionmaker[Session],
        after_commit: Callable[[], Awaitable[None]] | None = None,
        *,
        deadline: float | None = None,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._after_commit = after_commit
        self._deadline = deadline

    async def write(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a read-write transaction; commit if it returns, roll back if it raises."""
        result = await in_thread(partial(_run, self._writer, work, self._deadline), deadline=self._deadline)
        # Side effects (refreshing the configuration feed) only after the commit that justifies them.
        if self._after_commit is not None:
            await self._after_commit()
        return result

    async def read(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a read-only transaction."""
        return await in_thread(partial(_run, self._reader, work, self._deadline), deadline=self._deadline)


def _run(factory: sessionmaker[Session], work: Callable[[Session], T], timeout: float | None) -> T:
    with session_scope(factory, timeout=timeout) as session:
        return work(session)
