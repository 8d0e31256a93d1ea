"""The configuration feed: each replica's in-memory copy of every environment's snapshot, and who to tell.

Evaluation requests read the copy, never the database. The feed refreshes it when woken: by a commit in this
process, by a PostgreSQL NOTIFY from any replica (listened to on a dedicated connection), or by a periodic poll
of the revisions (the only way on SQLite, and a safety net on PostgreSQL). Every refresh that finds a new
revision tells the stream subscribers of that environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio.to_thread
import msgspec
import psycopg
from litestar.response.base import ASGIResponse
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.db import UNAVAILABLE, session_scope
from controlplane.evaluation import service
from controlplane.evaluation.ofrep import success_body
from controlplane.flags.models import CONFIGURATION_CHANNEL
from controlplane_client.provider.engine import CompiledFlag, Resolution
from controlplane_client.provider.snapshot import Snapshot, compile_snapshot

__all__ = ["ConfigurationFeed", "EnvironmentConfiguration"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EnvironmentConfiguration:
    """One environment's configuration at one revision, ready to serve."""

    environment: str
    revision: int
    flags: dict[str, CompiledFlag]
    snapshot_json: bytes
    # OFREP answers by resolution: the engine hands out one object per outcome, so each is encoded, and its headers
    # built, once. An ASGIResponse holds no per-request state (its headers are listed anew for each send), so one
    # serves every request that resolves to it.
    _answers: dict[int, tuple[Resolution, ASGIResponse]] = field(default_factory=dict, compare=False, repr=False)

    def success_answer(self, resolution: Resolution) -> ASGIResponse:
        """The OFREP 200 answer of a resolution, made once per configuration and outcome."""
        cached = self._answers.get(id(resolution))
        if cached is None or cached[0] is not resolution:
            body = msgspec.json.encode(success_body(resolution))
            cached = (resolution, ASGIResponse(body=body, media_type="application/json"))
            self._answers[id(resolution)] = cached
        return cached[1]

    @property
    def etag(self) -> str:
        """The strong ETag of this configuration."""
        return f'"{self.environment}-{self.revision}"'


class ConfigurationFeed:
    """Keeps every environment's configuration in memory and streams revision notices to subscribers."""

    def __init__(
        self,
        reader: sessionmaker[Session],
        engine: Engine,
        environments: tuple[str, ...],
        *,
        poll_seconds: float,
        refreshed: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self._refreshed = refreshed  # told after every successful read of the configuration
        self._failing_since: float | None = None  # monotonic time of the first failed refresh of a run of them
        self._engine = engine
        self._environments = environments
        self._poll_seconds = poll_seconds
        self._configurations: dict[str, EnvironmentConfiguration] = {}
        self._subscribers: dict[str, set[asyncio.Queue[int]]] = {env: set() for env in environments}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop = threading.Event()

    def current(self, environment: str) -> EnvironmentConfiguration | None:
        """The configuration this replica serves for ``environment`` (None before the first load)."""
        return self._configurations.get(environment)

    def refresh(self) -> list[str]:
        """Reload every environment whose revision moved; return those environments (runs in a worker thread)."""
        changed = []
        with session_scope(self._reader) as session:
            revisions = service.configuration_revisions(session)
            for environment in self._environments:
                known = self._configurations.get(environment)
                if known is not None and known.revision == revisions.get(environment, 0):
                    continue
                snapshot = service.load_snapshot(session, environment)
                self._configurations[environment] = _prepare(snapshot)
                changed.append(environment)
        return changed

    async def catch_up(self) -> None:
        """Refresh now and tell subscribers: a replica's own writes are visible to its next evaluation."""
        changed = await anyio.to_thread.run_sync(self.refresh)
        if self._refreshed is not None:
            self._refreshed()
        for environment in changed:
            self._publish(environment)

    def wake(self) -> None:
        """Ask for a refresh now; safe from any thread, and a no-op once the feed has stopped."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(event.set)

    @contextlib.contextmanager
    def subscription(self, environment: str) -> Iterator[asyncio.Queue[int]]:
        """A queue that receives every new revision of ``environment`` while the block runs."""
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=16)
        self._subscribers[environment].add(queue)
        try:
            yield queue
        finally:
            self._subscribers[environment].discard(queue)

    async def run(self) -> None:
        """Refresh on every wake-up or poll interval, and tell subscribers; runs until stopped (or cancelled)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stop.clear()
        if self._engine.dialect.name == "postgresql":
            threading.Thread(target=self._listen, name="config-listener", daemon=True).start()
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)
                self._wake.clear()
                if self._stop.is_set():
                    break
                try:
                    await self.catch_up()
                except Exception as error:
                    self._failed(error)
                else:
                    self._recovered()
        finally:
            self._stop.set()
            self._loop = None

    def _failed(self, error: Exception) -> None:
        """Log the first failure of a run of them (a traceback only for what is not the database being away);
        at a poll every 0.25 s an outage would otherwise log four tracebacks a second."""
        if self._failing_since is not None:
            return
        self._failing_since = time.monotonic()
        logger.warning(
            "configuration refresh failed (%s); serving the last known configuration until it works again",
            type(error).__name__,
            exc_info=not isinstance(error, UNAVAILABLE),
        )

    def _recovered(self) -> None:
        if self._failing_since is None:
            return
        logger.warning("configuration refresh works again after %.1f s", time.monotonic() - self._failing_since)
        self._failing_since = None

    def stop(self) -> None:
        """Ask :meth:`run` to return once a refresh in flight has finished.

        Cancelling the task instead would abandon a refresh thread that still holds a pooled connection; the
        engine may be disposed before that thread hands it back, and the connection would then never be closed.
        """
        self._stop.set()
        self.wake()

    def _publish(self, environment: str) -> None:
        configuration = self._configurations[environment]
        for queue in list(self._subscribers.get(environment, ())):
            if queue.full():
                # A slow subscriber only needs the newest revision: drop what it has not read yet.
                with contextlib.suppress(asyncio.QueueEmpty):
                    while True:
                        queue.get_nowait()
            queue.put_nowait(configuration.revision)

    def _listen(self) -> None:
        """LISTEN for changes committed by any replica; reconnect after failures (the poll covers the gap)."""
        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        lost = False  # told once per outage, not at every reconnect attempt (one a second)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f"LISTEN {CONFIGURATION_CHANNEL}")
                    if lost:
                        logger.warning("configuration LISTEN connection back")
                        lost = False
                    while not self._stop.is_set():
                        for _ in connection.notifies(timeout=1.0, stop_after=1):
                            self.wake()
            except psycopg.Error as error:
                if self._stop.is_set():
                    return
                if not lost:
                    logger.warning("configuration LISTEN connection lost (%s); reconnecting every second", error)
                    lost = True
                self._stop.wait(1.0)


def _prepare(snapshot: Snapshot) -> EnvironmentConfiguration:
    return EnvironmentConfiguration(
        environment=snapshot.environment,
        revision=snapshot.revision,
        flags=compile_snapshot(snapshot),
        snapshot_json=msgspec.json.encode(snapshot),
    )
