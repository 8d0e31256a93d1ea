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

The pieces: ``sync`` (the held snapshot, its fetching and freshness, the events), ``stream`` (the thread following
the change stream), ``cache_file``, ``overrides`` (incident overrides from environment variables, e.g.
``ENABLE_REFERENCE_IMAGES=false``), ``kinds`` (the typed values); this module is the OpenFeature surface over them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from controlplane_client.provider import kinds
from controlplane_client.provider.cache_file import read_cache_file
from controlplane_client.provider.engine import Resolution, evaluate_flag, flag_not_found
from controlplane_client.provider.kinds import Kind, error_details, mismatch_details
from controlplane_client.provider.overrides import UNREAD, EnvironmentOverrides
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
        clock: Callable[[], datetime] = _utcnow,
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
        self._clock = clock
        self._overrides = EnvironmentOverrides(environ, enabled=use_environment_overrides)
        self._transport = transport
        self._reconnect_delay = reconnect_delay
        # Built details by outcome; the Resolution is kept beside them so its id cannot be reused meanwhile.
        self._details: dict[tuple[int, str, bool], tuple[Resolution, FlagResolutionDetails[Any]]] = {}
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
            emit=self.emit,
            on_install=self._forget_details,
        )

    def _forget_details(self) -> None:
        self._details = {}  # built details belong to the old flags

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
        self._details = {}

    # --- typed resolution (spec 2.2) ----------------------------------------------------------------------------

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag."""
        return self._resolve(flag_key, default_value, evaluation_context, kinds.BOOLEAN)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag."""
        return self._resolve(flag_key, default_value, evaluation_context, kinds.STRING)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        """Resolve a number flag as an integer; a fractional value is a type mismatch."""
        return self._resolve(flag_key, default_value, evaluation_context, kinds.INTEGER)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        """Resolve a number flag as a float; integer values are converted."""
        return self._resolve(flag_key, default_value, evaluation_context, kinds.FLOAT)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Resolve an object flag (a JSON object or array)."""
        return self._resolve(flag_key, default_value, evaluation_context, kinds.OBJECT)

    def _resolve(
        self, key: str, default: Any, evaluation_context: EvaluationContext | None, kind: Kind
    ) -> FlagResolutionDetails[Any]:
        sync = self._sync
        flags = sync.flags  # read once: the thread may install a new dict meanwhile
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
        resolution = evaluate_flag(flag, _context(evaluation_context))
        if resolution.error_code is not None:
            return error_details(default, resolution.error_code, resolution.error_message)
        if not kind.accepts(resolution.value):
            return mismatch_details(default, flag, kind)
        stale = sync.is_stale()
        # The engine hands out one Resolution per outcome, so the details are built once per outcome too.
        memo = (id(resolution), kind.name, stale)
        cached = self._details.get(memo)
        if cached is not None and cached[0] is resolution:
            return cached[1]
        metadata: dict[str, str | int | float | bool] = dict(resolution.metadata)
        reason: Reason = resolution.reason
        if stale:
            # Keep value and variant: the last known configuration beats the code default. The engine's own reason
            # stays visible in the metadata (spec 2.2.9).
            metadata["evaluated_reason"] = str(reason)
            reason = Reason.STALE
        details: FlagResolutionDetails[Any] = FlagResolutionDetails(
            value=kind.convert(resolution.value),
            variant=resolution.variant,
            reason=reason,
            flag_metadata=metadata,
        )
        self._details[memo] = (resolution, details)
        return details


def _context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """The engine's flat context: the attributes, plus ``targetingKey`` when the context has one."""
    if evaluation_context is None:
        return {}
    context: dict[str, Any] = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key is not None:
        context["targetingKey"] = evaluation_context.targeting_key
    return context
