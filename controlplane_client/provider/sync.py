"""The provider's copy of one environment's configuration: fetched, installed, cached on disk, its freshness tracked.

A new snapshot replaces the served flags in one assignment and is written to the cache file; CONFIGURATION_CHANGED
names the flags whose configuration changed. Any answer of the server counts as contact: without contact for
``stale_after`` the configuration is stale. Trouble (STALE, ERROR) is announced once per outage, and READY once when
it ends.

Freshness is read on every evaluation, so it is kept as a deadline in seconds on ``ticks`` (a monotonic clock in
production), compared as ``ticks() > stale_at``; ``clock`` only dates the contacts for humans.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import msgspec
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode

from controlplane_client.provider.cache_file import CacheFile, write_cache_file
from controlplane_client.provider.engine import CompiledFlag
from controlplane_client.provider.served import ServedFlags
from controlplane_client.provider.snapshot import Snapshot, compile_snapshot

__all__ = ["REQUEST_TIMEOUT", "SNAPSHOT_PATH", "TRANSIENT", "Refused", "SnapshotSync"]

logger = logging.getLogger(__name__)

# The route of controlplane.evaluation.controller, repeated here as clients do not import the server (Litestar).
SNAPSHOT_PATH = "/evaluation/v1/snapshot"
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class Refused(Exception):
    """The server answered with a status that is not a snapshot."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}")
        self.status_code = response.status_code

    @property
    def is_fatal(self) -> bool:
        """True for answers that retrying cannot change: bad credentials, unknown environment, wrong URL."""
        return 400 <= self.status_code < 500 and self.status_code not in {408, 429}


#: Failures after which the provider keeps what it has and tries again.
TRANSIENT: tuple[type[Exception], ...] = (httpx.HTTPError, msgspec.DecodeError, Refused)

Emit = Callable[[ProviderEvent, ProviderEventDetails], None]


class SnapshotSync:
    """The snapshot a provider serves, and its dealings with the server (one per initialize).

    ``served`` is replaced whole with each snapshot: evaluations read it once, without a lock.
    """

    def __init__(
        self,
        client: httpx.Client | None,
        headers: dict[str, str],
        *,
        cache_path: Path | None,
        stale_after: timedelta,
        clock: Callable[[], datetime],
        ticks: Callable[[], float],
        emit: Emit,
    ) -> None:
        self.client = client
        self.headers = headers
        self._cache_path = cache_path
        self._stale_after = stale_after.total_seconds()
        self._clock = clock
        self.ticks = ticks
        self._emit = emit
        self.served = ServedFlags(None)
        self.revision = -1
        self._etag: str | None = None
        self.last_contact: datetime | None = None
        self.stale_at = -math.inf  # on ticks: last contact + stale_after; stale until the first contact
        # The trouble event last emitted (STALE or ERROR), so each outage is announced once and its end once.
        self.announced: ProviderEvent | None = None

    def close(self) -> None:
        """Close the connection; a refetch after it does nothing."""
        client, self.client = self.client, None
        if client is not None:
            client.close()

    @property
    def flags(self) -> dict[str, CompiledFlag] | None:
        """The compiled flags served, by key; None before the first snapshot."""
        return self.served.flags

    def is_stale(self) -> bool:
        """True when the server has not been heard from within ``stale_after`` (or never)."""
        return self.ticks() > self.stale_at

    def refetch(self, *, announce: bool, accept_older: bool) -> None:
        """GET the snapshot (conditional on the held ETag) and install it when it is new."""
        client = self.client
        if client is None:
            return
        headers = dict(self.headers)
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        response = client.get(SNAPSHOT_PATH, headers=headers)
        if response.status_code == 304:
            self.record_contact()
            return
        if response.status_code != 200:
            raise Refused(response)
        snapshot = msgspec.json.decode(response.content, type=Snapshot)
        if not accept_older and snapshot.revision < self.revision:
            logger.warning("ignoring snapshot revision %s older than the held %s", snapshot.revision, self.revision)
            self.record_contact()
            return
        changed = self.install(snapshot, response.headers.get("ETag"), persist=True)
        # After the install, so that a recovering provider announces READY with its flags in place, then the change.
        self.record_contact()
        if announce and changed:
            self._emit(
                ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                ProviderEventDetails(
                    flags_changed=changed,
                    message=f"configuration revision {snapshot.revision}",
                    metadata={"revision": snapshot.revision},
                ),
            )

    def install(self, snapshot: Snapshot, etag: str | None, *, persist: bool) -> list[str]:
        """Serve ``snapshot`` from now on; return the keys whose configuration differs from the previous one."""
        compiled = compile_snapshot(snapshot)
        previous = self.flags or {}
        self.served = ServedFlags(compiled)  # one assignment: evaluations see the old flags or the new, never a mix
        self.revision = snapshot.revision
        self._etag = etag
        if persist:
            write_cache_file(self._cache_path, CacheFile(etag=etag, snapshot=snapshot))
        return sorted(key for key in previous.keys() | compiled.keys() if previous.get(key) != compiled.get(key))

    def record_contact(self) -> None:
        """The server answered: fresh again, and READY if trouble had been announced."""
        self.last_contact = self._clock()
        self.stale_at = self.ticks() + self._stale_after
        if self.announced is not None and self.flags is not None:
            # Back after STALE or ERROR: READY moves the SDK's status back (spec 5.3.2 allows READY after a failure).
            self.announced = None
            self._emit(ProviderEvent.PROVIDER_READY, ProviderEventDetails(message="connected to the control plane"))

    def announce_if_stale(self, cause: str) -> None:
        """Announce STALE (once) when the held configuration has gone stale."""
        if self.flags is not None and self.is_stale():
            age = "never confirmed" if self.last_contact is None else f"last contact {self.last_contact.isoformat()}"
            self.announce(
                ProviderEvent.PROVIDER_STALE,
                f"serving configuration revision {self.revision} ({age}): {cause}",
                None,
            )

    def announce(self, event: ProviderEvent, message: str, error_code: ErrorCode | None) -> bool:
        """Emit a trouble event unless it is the one already announced; True when emitted."""
        if self.announced == event:
            return False
        self.announced = event
        self._emit(event, ProviderEventDetails(message=message, error_code=error_code))
        return True
