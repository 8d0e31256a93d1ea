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

The stream only says "refetch" (ADR-0008 style): a notice with a revision newer than the one held triggers a
conditional GET of the snapshot, and so does every reconnection (a 304 when nothing changed). Any successful answer
or stream line, keep-alive comments included, counts as contact with the server; the server sends a keep-alive
every 15 s, so ``stale_after`` should stay above that.

Overrides for incidents: ``ENABLE_REFERENCE_IMAGES=false`` forces ``enable-reference-images`` off in this process
(name: the key upper-cased, ``-`` and ``.`` turned into ``_``; an empty value means no override; the environment
is read once, when the provider is created, as an incident override is set when a process starts). The value is parsed
as the requested type (``true/false/1/0``, integers, floats, JSON arrays or objects, raw strings); a value that does
not parse is reported as ``PARSE_ERROR`` (code default served) and logged once, never silently ignored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason
from openfeature.provider import AbstractProvider, Metadata

from controlplane.evaluation.engine import CompiledFlag, Resolution, evaluate_flag, flag_not_found
from controlplane.evaluation.snapshot import Snapshot, compile_snapshot

__all__ = ["PROVIDER_NAME", "SNAPSHOT_PATH", "STREAM_PATH", "ControlPlaneProvider", "override_variable"]

logger = logging.getLogger(__name__)

PROVIDER_NAME = "controlplane-in-process"
# The routes of controlplane.evaluation.controller, repeated so that clients do not import the server (Litestar).
SNAPSHOT_PATH = "/evaluation/v1/snapshot"
STREAM_PATH = "/evaluation/v1/stream"
# The server's keep-alive interval (controller.KEEPALIVE_SECONDS): two missed in a row means the connection is dead.
STREAM_READ_TIMEOUT_SECONDS = 2 * 15.0
REQUEST_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
STREAM_TIMEOUT = httpx.Timeout(10.0, connect=5.0, read=STREAM_READ_TIMEOUT_SECONDS)
# Reading the stream, the thread wakes at once on shutdown; inside a snapshot request it finishes that first.
JOIN_TIMEOUT_SECONDS = 15.0
OVERRIDE_VARIANT = "override"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def override_variable(flag_key: str) -> str:
    """The environment variable that overrides a flag: ``enable-reference-images`` -> ``ENABLE_REFERENCE_IMAGES``."""
    return flag_key.upper().replace("-", "_").replace(".", "_")


# --- value kinds: what a typed resolve method accepts, and how an override string is read ------------------------


def _parse_boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in {"true", "1"}:
        return True
    if text in {"false", "0"}:
        return False
    raise ValueError("expected true, false, 1 or 0")


def _parse_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_object(raw: str) -> Any:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise ValueError(f"invalid JSON: {error}") from error
    if not isinstance(value, dict | list):
        raise ValueError("expected a JSON object or array")
    return value


def _is_number(value: Any) -> bool:
    # bool is an int in Python; a boolean flag is never a number.
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class _Kind:
    """One typed resolution (boolean, string, integer, float, object)."""

    name: str
    flag_type: str  # the control plane's FlagType whose values this kind can serve
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any]
    parse: Callable[[str], Any]  # raises ValueError


def _same(value: Any) -> Any:
    return value


_BOOLEAN = _Kind("boolean", "boolean", lambda v: isinstance(v, bool), _same, _parse_boolean)
_STRING = _Kind("string", "string", lambda v: isinstance(v, str), _same, _same)
_INTEGER = _Kind("integer", "number", lambda v: _is_number(v) and isinstance(v, int), _same, int)
# An integer value is a valid float: JSON does not keep 1 and 1.0 apart.
_FLOAT = _Kind("float", "number", _is_number, float, _parse_float)
_OBJECT = _Kind("object", "object", lambda v: isinstance(v, dict | list), _same, _parse_object)

_UNPARSED = object()


@dataclass(frozen=True, slots=True)
class _InvalidOverride:
    """An override value that does not parse as the requested type."""

    message: str


class _Refused(Exception):
    """The server answered with a status that is not a snapshot."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}")
        self.status_code = response.status_code

    @property
    def is_fatal(self) -> bool:
        """True for answers that retrying cannot change: bad credentials, unknown environment, wrong URL."""
        return 400 <= self.status_code < 500 and self.status_code not in {408, 429}


# Failures after which the provider keeps what it has and tries again.
_TRANSIENT: tuple[type[Exception], ...] = (httpx.HTTPError, msgspec.DecodeError, _Refused)


class _Notice(msgspec.Struct):
    """A stream message: `refetchEvaluation` with the environment's current revision."""

    type: str
    revision: int


class _CacheFile(msgspec.Struct):
    """What ``cache_path`` holds: the last snapshot and the ETag it was served with."""

    etag: str | None
    snapshot: Snapshot


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
        # Read once: overrides are set when a process starts (incident use), and os.environ lookups are slow on
        # the evaluation path. Only non-empty values matter.
        source = os.environ if environ is None else environ
        self._environ: dict[str, str] = {name: value for name, value in source.items() if value}
        self._use_overrides = use_environment_overrides
        self._transport = transport
        self._reconnect_delay = reconnect_delay
        self._override_names: dict[str, str] = {}
        self._override_values: dict[str, Any] = {}
        # Built details by outcome; the Resolution is kept beside them so its id cannot be reused meanwhile.
        self._details: dict[tuple[int, str, bool], tuple[Resolution, FlagResolutionDetails[Any]]] = {}
        self._parsed_overrides: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()  # guards the hand-over of the open stream between the thread and shutdown
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: httpx.Client | None = None
        self._stream: httpx.Response | None = None
        self._reset()

    def _reset(self) -> None:
        # Replaced whole, never mutated: evaluations read `_flags` once, without a lock.
        self._flags: dict[str, CompiledFlag] | None = None
        self._revision = -1
        self._etag: str | None = None
        self._last_contact: datetime | None = None
        self._stale_at: datetime | None = None  # last contact + stale_after, precomputed for the hot path
        self._connected = False  # the stream is open: its loss is logged once per outage
        # The trouble event last emitted (STALE or ERROR), so each outage is announced once and its end once.
        self._announced: ProviderEvent | None = None

    # --- OpenFeature lifecycle ----------------------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        """The provider's name (spec 2.1.1)."""
        return Metadata(name=PROVIDER_NAME)

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Load the environment's snapshot (server first, cache as fallback) and start following its changes."""
        self._reset()
        self._stop = threading.Event()
        self._client = httpx.Client(base_url=self._url, transport=self._transport, timeout=REQUEST_TIMEOUT)
        cached = self._read_cache()
        if cached is not None:
            # Held but not yet trusted: `_last_contact` stays None (stale) until the server confirms or replaces it.
            self._install(cached.snapshot, cached.etag, persist=False)
        try:
            self._refetch(announce=False, accept_older=True)
        except _Refused as error:
            if not error.is_fatal:
                self._start_from_failure(error)
                return
            self._client.close()
            self._client = None
            self._reset()
            # Spec 2.4.2.1: an initialization that cannot succeed terminates abnormally; bad credentials or an
            # unknown environment are irrecoverable, hence PROVIDER_FATAL.
            raise ProviderFatalError(f"the control plane refused the snapshot request: {error}") from error
        except _TRANSIENT as error:
            self._start_from_failure(error)
            return
        self._start_following(back_off=False)

    def _start_from_failure(self, error: Exception) -> None:
        logger.warning("control plane at %s unreachable at start (%s); retrying in the background", self._url, error)
        if self._flags is None:
            self._announced = ProviderEvent.PROVIDER_ERROR  # the SDK emits it for the exception raised below
        # Back off before the first retry: the SDK emits READY or ERROR for initialize() in the meantime, so the
        # thread's own events (STALE, then READY on recovery) arrive after it.
        self._start_following(back_off=True)
        if self._flags is None:
            # Spec 2.4.2.1 and 5.3.2: abnormal termination, but not fatal: the thread emits READY once it connects.
            raise ProviderNotReadyError(
                f"control plane at {self._url} unreachable and no cached snapshot ({error}); retrying in the background"
            )
        # A cached snapshot makes the provider usable: initialize returns (READY), the thread then emits STALE.

    def shutdown(self) -> None:
        """Stop following the stream, join the thread, and forget the snapshot (spec 2.5.2: back to NOT_READY)."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            _interrupt(stream)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=JOIN_TIMEOUT_SECONDS)
            if thread.is_alive():
                logger.warning("the provider's stream thread did not stop in time; it exits after its request")
        client, self._client = self._client, None
        if client is not None:
            client.close()
        self._reset()

    # --- typed resolution (spec 2.2) ----------------------------------------------------------------------------

    def resolve_boolean_details(
        self, flag_key: str, default_value: bool, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag."""
        return self._resolve(flag_key, default_value, evaluation_context, _BOOLEAN)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag."""
        return self._resolve(flag_key, default_value, evaluation_context, _STRING)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        """Resolve a number flag as an integer; a fractional value is a type mismatch."""
        return self._resolve(flag_key, default_value, evaluation_context, _INTEGER)

    def resolve_float_details(
        self, flag_key: str, default_value: float, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[float]:
        """Resolve a number flag as a float; integer values are converted."""
        return self._resolve(flag_key, default_value, evaluation_context, _FLOAT)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Resolve an object flag (a JSON object or array)."""
        return self._resolve(flag_key, default_value, evaluation_context, _OBJECT)

    def _resolve(
        self, key: str, default: Any, evaluation_context: EvaluationContext | None, kind: _Kind
    ) -> FlagResolutionDetails[Any]:
        flags = self._flags  # read once: the thread may install a new dict meanwhile
        flag = flags.get(key) if flags is not None else None
        # One dict lookup per evaluation: the override variable of each key is looked up once, then remembered.
        raw = self._override_values.get(key, _UNPARSED) if self._use_overrides else None
        if raw is _UNPARSED:
            raw = self._override_values[key] = self._environ.get(override_variable(key))
        if raw:
            forced = self._override(key, default, flag, kind)
            if forced is not None:
                return forced
        if flags is None:
            return _error(default, ErrorCode.PROVIDER_NOT_READY, "no snapshot of the control plane yet")
        if flag is None:
            return _error(default, ErrorCode.FLAG_NOT_FOUND, flag_not_found(key).error_message)
        resolution = evaluate_flag(flag, _context(evaluation_context))
        if resolution.error_code is not None:
            return _error(default, resolution.error_code, resolution.error_message)
        if not kind.accepts(resolution.value):
            return _mismatch(default, flag, kind)
        stale = self._is_stale()
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

    def _override(
        self, key: str, default: Any, flag: CompiledFlag | None, kind: _Kind
    ) -> FlagResolutionDetails[Any] | None:
        name = self._override_names.get(key)
        if name is None:
            name = self._override_names[key] = override_variable(key)
        raw = self._environ.get(name)
        if not raw:
            return None
        if flag is not None and flag.type != kind.flag_type:
            return _mismatch(default, flag, kind)
        memo = (raw, kind.name)
        value = self._parsed_overrides.get(memo, _UNPARSED)
        if value is _UNPARSED:
            try:
                value = kind.parse(raw)
            except ValueError as error:
                value = _InvalidOverride(
                    f"{name}={raw!r} is not a valid {kind.name} override ({error}); the code default is served"
                )
                # Once per value, not per evaluation: the error code on every resolution is the lasting signal.
                logger.warning("%s", value.message)
            self._parsed_overrides[memo] = value
        if isinstance(value, _InvalidOverride):
            return _error(default, ErrorCode.PARSE_ERROR, value.message)
        # Reason STATIC: no dynamic evaluation happened; the variable is named in the metadata (spec 2.2.9).
        return FlagResolutionDetails(
            value=kind.convert(value),
            variant=OVERRIDE_VARIANT,
            reason=Reason.STATIC,
            flag_metadata={"override": name},
        )

    def _is_stale(self) -> bool:
        stale_at = self._stale_at
        return stale_at is None or self._clock() > stale_at

    # --- syncing ------------------------------------------------------------------------------------------------

    def _start_following(self, *, back_off: bool) -> None:
        self._thread = threading.Thread(
            target=self._follow, args=(self._stop, back_off), name="controlplane-provider-stream", daemon=True
        )
        self._thread.start()

    def _follow(self, stop: threading.Event, back_off: bool) -> None:
        """The background thread: read the change stream, refetch on notices, reconnect after any failure."""
        if back_off and stop.wait(self._reconnect_delay):
            return
        # Right after a successful initialize the snapshot is fresh; after any failure it may not be.
        refetch = back_off
        while not stop.is_set():
            try:
                if refetch:
                    # Conditional (304 when unchanged); also keeps the provider current, by polling, on a network
                    # that breaks event streams.
                    self._refetch(announce=True, accept_older=False)
                self._read_stream(stop)
                cause = "the stream ended"
            except _Refused as error:
                cause = str(error)
                if error.is_fatal:
                    # Not PROVIDER_FATAL here: the last known values keep being served (and go STALE) rather than the
                    # SDK switching every evaluation to code defaults because, say, a token was revoked too early.
                    message = f"the control plane refused the provider: {error}"
                    if self._announce(ProviderEvent.PROVIDER_ERROR, message, ErrorCode.GENERAL):
                        logger.error("%s; retrying every %ss", message, self._reconnect_delay)
            except _TRANSIENT as error:
                cause = str(error) or type(error).__name__
            except Exception as error:
                # The thread must survive anything, or the provider silently stops following changes.
                logger.exception("unexpected failure following the control plane stream")
                cause = repr(error)
            if stop.is_set():
                return
            refetch = True
            self._connection_lost(cause)
            if stop.wait(self._reconnect_delay):
                return

    def _connection_lost(self, cause: str) -> None:
        # One warning per outage, not one per reconnection attempt.
        if self._connected:
            logger.warning("lost the control plane at %s (%s); reconnecting", self._url, cause)
        else:
            logger.debug("control plane at %s still unreachable (%s)", self._url, cause)
        self._connected = False
        self._announce_if_stale(cause)

    def _read_stream(self, stop: threading.Event) -> None:
        client = self._client
        if client is None:
            return
        headers = {**self._headers, "Accept": "text/event-stream"}
        with client.stream("GET", STREAM_PATH, headers=headers, timeout=STREAM_TIMEOUT) as response:
            if response.status_code != 200:
                response.read()
                raise _Refused(response)
            with self._lock:
                if stop.is_set():
                    return
                self._stream = response
            try:
                self._connected = True
                self._record_contact()
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    # Any line, keep-alive comments included, proves the server is there.
                    self._record_contact()
                    if line.startswith("data:"):
                        self._on_notice(line.removeprefix("data:").strip())
            finally:
                with self._lock:
                    self._stream = None

    def _on_notice(self, data: str) -> None:
        try:
            notice = msgspec.json.decode(data, type=_Notice)
        except msgspec.DecodeError:
            logger.warning("ignoring an unreadable stream message: %.200s", data)
            return
        # Only a newer revision: a lagging replica behind a load balancer must not roll the client back.
        if notice.type == "refetchEvaluation" and notice.revision > self._revision:
            self._refetch(announce=True, accept_older=False)

    def _refetch(self, *, announce: bool, accept_older: bool) -> None:
        """GET the snapshot (conditional on the held ETag) and install it when it is new."""
        client = self._client
        if client is None:
            return
        headers = dict(self._headers)
        if self._etag is not None:
            headers["If-None-Match"] = self._etag
        response = client.get(SNAPSHOT_PATH, headers=headers)
        if response.status_code == 304:
            self._record_contact()
            return
        if response.status_code != 200:
            raise _Refused(response)
        snapshot = msgspec.json.decode(response.content, type=Snapshot)
        if not accept_older and snapshot.revision < self._revision:
            logger.warning("ignoring snapshot revision %s older than the held %s", snapshot.revision, self._revision)
            self._record_contact()
            return
        changed = self._install(snapshot, response.headers.get("ETag"), persist=True)
        # After the install, so that a recovering provider announces READY with its flags in place, then the change.
        self._record_contact()
        if announce and changed:
            self.emit_provider_configuration_changed(
                ProviderEventDetails(
                    flags_changed=changed,
                    message=f"configuration revision {snapshot.revision}",
                    metadata={"revision": snapshot.revision},
                )
            )

    def _install(self, snapshot: Snapshot, etag: str | None, *, persist: bool) -> list[str]:
        """Serve ``snapshot`` from now on; return the keys whose configuration differs from the previous one."""
        compiled = compile_snapshot(snapshot)
        previous = self._flags or {}
        self._flags = compiled  # one assignment: evaluations see the old dict or the new one, never a mix
        self._details = {}  # built details belong to the old flags
        self._revision = snapshot.revision
        self._etag = etag
        if persist:
            self._write_cache(_CacheFile(etag=etag, snapshot=snapshot))
        return sorted(key for key in previous.keys() | compiled.keys() if previous.get(key) != compiled.get(key))

    def _record_contact(self) -> None:
        self._last_contact = self._clock()
        self._stale_at = self._last_contact + self._stale_after
        if self._announced is not None and self._flags is not None:
            # Back after STALE or ERROR: READY moves the SDK's status back (spec 5.3.2 allows READY after a failure).
            self._announced = None
            self.emit_provider_ready(ProviderEventDetails(message="connected to the control plane"))

    def _announce_if_stale(self, cause: str) -> None:
        if self._flags is not None and self._is_stale():
            age = "never confirmed" if self._last_contact is None else f"last contact {self._last_contact.isoformat()}"
            self._announce(
                ProviderEvent.PROVIDER_STALE,
                f"serving configuration revision {self._revision} ({age}): {cause}",
                None,
            )

    def _announce(self, event: ProviderEvent, message: str, error_code: ErrorCode | None) -> bool:
        """Emit a trouble event unless it is the one already announced; True when emitted."""
        if self._announced == event:
            return False
        self._announced = event
        self.emit(event, ProviderEventDetails(message=message, error_code=error_code))
        return True

    # --- cache file ---------------------------------------------------------------------------------------------

    def _read_cache(self) -> _CacheFile | None:
        path = self._cache_path
        if path is None or not path.exists():
            return None
        try:
            cached = msgspec.json.decode(path.read_bytes(), type=_CacheFile)
        except (OSError, msgspec.DecodeError) as error:
            logger.warning("ignoring unreadable snapshot cache %s: %s", path, error)
            return None
        if self._environment is not None and cached.snapshot.environment != self._environment:
            logger.warning(
                "ignoring snapshot cache %s: it holds %s, not %s", path, cached.snapshot.environment, self._environment
            )
            return None
        return cached

    def _write_cache(self, cached: _CacheFile) -> None:
        path = self._cache_path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target, then rename: a reader (or a crash) sees the old file or the new, never half.
            descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        except OSError as error:
            logger.warning("could not write the snapshot cache %s: %s", path, error)
            return
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(msgspec.json.encode(cached))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except OSError as error:
            logger.warning("could not write the snapshot cache %s: %s", path, error)
            with contextlib.suppress(OSError):
                os.unlink(temporary)


def _context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    """The engine's flat context: the attributes, plus ``targetingKey`` when the context has one."""
    if evaluation_context is None:
        return {}
    context: dict[str, Any] = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key is not None:
        context["targetingKey"] = evaluation_context.targeting_key
    return context


def _error(default: Any, code: ErrorCode, message: str | None) -> FlagResolutionDetails[Any]:
    # Spec 2.2.7: errors are reported through the error code; the SDK serves the caller's default with it.
    return FlagResolutionDetails(value=default, reason=Reason.ERROR, error_code=code, error_message=message)


def _mismatch(default: Any, flag: CompiledFlag, kind: _Kind) -> FlagResolutionDetails[Any]:
    message = f"flag `{flag.key}` (a {flag.type} flag) cannot be resolved as {kind.name}"
    return _error(default, ErrorCode.TYPE_MISMATCH, message)


def _interrupt(stream: httpx.Response) -> None:
    """Wake a thread blocked reading ``stream``: shut its socket down (closing it alone does not wake the read)."""
    network = stream.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    else:
        with contextlib.suppress(Exception):
            stream.close()
