"""The in-process OpenFeature provider: evaluates locally over a synced snapshot of one environment.

Lifecycle (OpenFeature spec §2.4, §2.5, §5):

- ``initialize`` loads the last snapshot from ``cache_path`` (if any), then fetches the environment's snapshot with
  ``If-None-Match``. On success it returns (the SDK emits READY) and one daemon thread follows the SSE change stream.
- Server unreachable, cache present: the cached snapshot is served, ``initialize`` returns (READY), and the thread
  emits STALE and keeps reconnecting. Resolutions carry reason ``STALE`` until the server answers again.
- Server unreachable, no cache: ``initialize`` raises ``ProviderNotReadyError`` (a non-fatal code: the SDK marks the
  provider ERROR, still calls it, and the caller gets code defaults with ``PROVIDER_NOT_READY``; environment
  overrides still apply). The thread keeps retrying and emits READY with the first snapshot.
- The server refuses the request (bad token, unknown environment: 4xx other than 408/429): ``initialize`` raises
  ``ProviderFatalError`` and nothing retries. Later in the provider's life the same answer only emits
  PROVIDER_ERROR: the last known values stay served (and go STALE) rather than falling back to code defaults.
- Every new snapshot emits CONFIGURATION_CHANGED naming the flags whose configuration changed (none named: no event)
  and is written to ``cache_path`` atomically.

The pieces: ``sync`` (the held snapshot, its fetching and freshness, the events), ``served`` (the snapshot's flags
with the details of their outcomes built ahead, per kind), ``stream`` (the thread following the change stream),
``cache_file``, ``overrides`` (incident overrides from environment variables, e.g. ``ENABLE_REFERENCE_IMAGES=false``),
``kinds`` (the typed values); this module is the OpenFeature surface over them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

from controlplane_client.provider import kinds
from controlplane_client.provider.cache_file import read_cache_file
from controlplane_client.provider.engine import flag_not_found
from controlplane_client.provider.kinds import Kind, error_details, mismatch_details
from controlplane_client.provider.overrides import UNREAD, EnvironmentOverrides
from controlplane_client.provider.served import resolution_details
from controlplane_client.provider.stream import StreamWatcher
from controlplane_client.provider.sync import REQUEST_TIMEOUT, TRANSIENT, Refused, SnapshotSync

__all__ = ["PROVIDER_NAME", "ControlPlaneProvider"]

logger = logging.getLogger(__name__)

PROVIDER_NAME = "controlplane-in-process"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ControlPlaneProvider(AbstractProvider):
    """OpenFeature provider that evaluates flags in-process over a live snapshot of one environment."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        environment: str | None = None,
        cache_path: Path | None = None,
        stale_after: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] | None = None,
        environ: Mapping[str, str] | None = None,
        use_environment_overrides: bool = True,
        transport: httpx.BaseTransport | None = None,
        reconnect_delay: float = 1.0,
    ) -> None:
        super().__init__()
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        if environment is not None:
            self._headers["X-Environment"] = environment
        self._environment = environment
        self._cache_path = cache_path
        self._stale_after = stale_after
        self._clock = _utcnow if clock is None else clock
        # Freshness is checked on every evaluation: on the monotonic clock by default (reading the wall clock as a
        # datetime would cost more than the rest of an evaluation), on an injected clock's own time otherwise.
        self._ticks: Callable[[], float] = time.monotonic if clock is None else (lambda: clock().timestamp())
        self._overrides = EnvironmentOverrides(environ, enabled=use_environment_overrides)
        self._transport = transport
        self._reconnect_delay = reconnect_delay
        self._watcher: StreamWatcher | None = None
        self._sync = self._new_sync(None)

    def _new_sync(self, client: httpx.Client | None) -> SnapshotSync:
        # A fresh one per initialize and at shutdown: nothing of an earlier life (flags, contact, events) carries over.
        return SnapshotSync(
            client,
            self._headers,
            cache_path=self._cache_path,
            stale_after=self._stale_after,
            clock=self._clock,
            ticks=self._ticks,
            emit=self.emit,
        )

    # --- OpenFeature lifecycle ----------------------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        """The provider's name (spec 2.1.1)."""
        return Metadata(name=PROVIDER_NAME)

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Load the environment's snapshot (server first, cache as fallback) and start following its changes."""
        client = httpx.Client(base_url=self._url, transport=self._transport, timeout=REQUEST_TIMEOUT)
        self._sync = sync = self._new_sync(client)
        cached = read_cache_file(self._cache_path, self._environment)
        if cached is not None:
            # Held but not yet trusted: no contact recorded (stale) until the server confirms or replaces it.
            sync.install(cached.snapshot, cached.etag, persist=False)
        try:
            sync.refetch(announce=False, accept_older=True)
        except Refused as error:
            if not error.is_fatal:
                self._start_from_failure(error)
                return
            sync.close()
            self._sync = self._new_sync(None)
            # Spec 2.4.2.1: an initialization that cannot succeed terminates abnormally; bad credentials or an
            # unknown environment are irrecoverable, hence PROVIDER_FATAL.
            raise ProviderFatalError(f"the control plane refused the snapshot request: {error}") from error
        except TRANSIENT as error:
            self._start_from_failure(error)
            return
        self._start_following(back_off=False)

    def _start_from_failure(self, error: Exception) -> None:
        logger.warning("control plane at %s unreachable at start (%s); retrying in the background", self._url, error)
        sync = self._sync
        if sync.flags is None:
            sync.announced = ProviderEvent.PROVIDER_ERROR  # the SDK emits it for the exception raised below
        # Back off before the first retry: the SDK emits READY or ERROR for initialize() in the meantime, so the
        # thread's own events (STALE, then READY on recovery) arrive after it.
        self._start_following(back_off=True)
        if sync.flags is None:
            # Spec 2.4.2.1 and 5.3.2: abnormal termination, but not fatal: the thread emits READY once it connects.
            raise ProviderNotReadyError(
                f"control plane at {self._url} unreachable and no cached snapshot ({error}); retrying in the background"
            )
        # A cached snapshot makes the provider usable: initialize returns (READY), the thread then emits STALE.

    def _start_following(self, *, back_off: bool) -> None:
        self._watcher = StreamWatcher(self._sync, url=self._url, reconnect_delay=self._reconnect_delay)
        self._watcher.start(back_off=back_off)

    def shutdown(self) -> None:
        """Stop following the stream, join the thread, and forget the snapshot (spec 2.5.2: back to NOT_READY)."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
        self._sync.close()
        self._sync = self._new_sync(None)

    # --- typed resolution (spec 2.2) ----------------------------------------------------------------------------

    # The five methods share one shape. The fast path is written out in each rather than in a shared helper: it is
    # the whole evaluation of a prepared flag (see served.py), and a further call would be a sizeable part of it.
    # Anything else (no snapshot, unknown key, an override, a type mismatch, no context) goes through _resolve.

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag."""
        sync = self._sync
        prepared = sync.served.boolean.get(flag_key)
        if prepared is None or evaluation_context is None:
            return self._resolve(flag_key, default_value, evaluation_context, kinds.BOOLEAN)
        served = prepared.stale if sync.ticks() > sync.stale_at else prepared.fresh
        return served[prepared.decide(evaluation_context.targeting_key, evaluation_context.attributes)]

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag."""
        sync = self._sync
        prepared = sync.served.string.get(flag_key)
        if prepared is None or evaluation_context is None:
            return self._resolve(flag_key, default_value, evaluation_context, kinds.STRING)
        served = prepared.stale if sync.ticks() > sync.stale_at else prepared.fresh
        return served[prepared.decide(evaluation_context.targeting_key, evaluation_context.attributes)]

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        """Resolve a number flag as an integer; a fractional value is a type mismatch."""
        sync = self._sync
        prepared = sync.served.integer.get(flag_key)
        if prepared is None or evaluation_context is None:
            return self._resolve(flag_key, default_value, evaluation_context, kinds.INTEGER)
        served = prepared.stale if sync.ticks() > sync.stale_at else prepared.fresh
        return served[prepared.decide(evaluation_context.targeting_key, evaluation_context.attributes)]

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        """Resolve a number flag as a float; integer values are converted."""
        sync = self._sync
        prepared = sync.served.float.get(flag_key)
        if prepared is None or evaluation_context is None:
            return self._resolve(flag_key, default_value, evaluation_context, kinds.FLOAT)
        served = prepared.stale if sync.ticks() > sync.stale_at else prepared.fresh
        return served[prepared.decide(evaluation_context.targeting_key, evaluation_context.attributes)]

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Resolve an object flag (a JSON object or array)."""
        sync = self._sync
        prepared = sync.served.object.get(flag_key)
        if prepared is None or evaluation_context is None:
            return self._resolve(flag_key, default_value, evaluation_context, kinds.OBJECT)
        served = prepared.stale if sync.ticks() > sync.stale_at else prepared.fresh
        return served[prepared.decide(evaluation_context.targeting_key, evaluation_context.attributes)]

    def _resolve(
        self, key: str, default: Any, evaluation_context: EvaluationContext | None, kind: Kind
    ) -> FlagResolutionDetails[Any]:
        sync = self._sync
        served = sync.served  # read once: the thread may install a new snapshot meanwhile
        flags = served.flags
        flag = flags.get(key) if flags is not None else None
        # One dict lookup per evaluation: the override variable of each key is looked up once, then remembered.
        overrides = self._overrides
        raw = overrides.values.get(key, UNREAD) if overrides.enabled else None
        if raw is UNREAD:
            raw = overrides.read(key)
        if raw:
            forced = overrides.resolve(key, default, flag, kind)
            if forced is not None:
                return forced
        if flags is None:
            return error_details(default, ErrorCode.PROVIDER_NOT_READY, "no snapshot of the control plane yet")
        if flag is None:
            return error_details(default, ErrorCode.FLAG_NOT_FOUND, flag_not_found(key).error_message)
        if evaluation_context is None:
            outcome = flag.decide(None, _NO_ATTRIBUTES)
        else:
            outcome = flag.decide(evaluation_context.targeting_key, evaluation_context.attributes)
        stale = sync.is_stale()
        # No override from here on, so the flag can join the fast path of its kind (in this snapshot only).
        prepared = served.prepare(flag, kind)
        if prepared is not None:
            return (prepared.stale if stale else prepared.fresh)[outcome]
        resolution = flag.outcomes[outcome]
        if not kind.accepts(resolution.value):
            return mismatch_details(default, flag, kind)
        return resolution_details(resolution, kind, stale=stale)


_NO_ATTRIBUTES: Mapping[str, Any] = MappingProxyType({})
