"""HTTP route of event ingest: `POST /api/v1/events` with role `ingest`.

A batch is all or nothing and acknowledged only after its transaction commits; a repeated batch id counts once.
"""

from __future__ import annotations

import functools
import zlib
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
from litestar import Controller, Request, post
from litestar.exceptions import TooManyRequestsException

from controlplane.api.openapi import problems, request_body
from controlplane.api.rate_limits import RateLimiter
from controlplane.api.roles import Role
from controlplane.auth.schemas import Principal
from controlplane.db import in_thread
from controlplane.errors import BadRequest, InvalidInput, PayloadTooLarge
from controlplane.metrics import ControlPlaneMetrics
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import (
    Aggregates,
    BatchMalformed,
    BatchRefused,
    BatchUnreadable,
    aggregate,
    decode_batch,
)
from controlplane.telemetry.cache import CatalogCache
from controlplane.telemetry.digest import batch_digest, legacy_batch_digest
from controlplane.telemetry.metrics import EventMetrics
from controlplane.telemetry.schemas import EventBatch, EventError, IngestResult
from controlplane.telemetry.service import PendingBatch
from controlplane.telemetry.writer import BatchWriter

__all__ = ["EventController"]


async def _read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """Read the body, refusing it with 413 as soon as it passes ``limit`` bytes (never buffering more)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                "batch-too-large", f"the batch is over {limit} bytes; send smaller batches", limit_bytes=limit
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo a gzip Content-Encoding, refusing output over ``limit`` bytes (a small body can inflate hugely)."""
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise BadRequest("invalid-encoding", f"Content-Encoding `{encoding}` is not accepted; send gzip or none")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest("invalid-encoding", f"the body is not valid gzip: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            "batch-too-large", f"the batch is over {limit} bytes once decompressed", limit_bytes=limit
        )
    if not inflater.eof:
        raise BadRequest("invalid-encoding", "the gzip body is truncated")
    if inflater.unused_data:
        # A second gzip member or trailing bytes: refused rather than silently dropped.
        raise BadRequest("invalid-encoding", "the gzip body has data after its end; send one gzip member")
    return data


def _prepare(body: bytes, settings: Settings, cache: CatalogCache, now: Any) -> PendingBatch:
    """Decode, validate and aggregate a batch (CPU work, run off the event loop).

    The decoded events are freed when this returns, in the thread that just read them, while their thousands of
    objects are still in the processor's caches; freed on the event loop once the batch was committed, they cost
    ~0.5 ms more server CPU per batch of 1,000 events (bench.ingest).
    """
    try:
        batch = decode_batch(body)
    except BatchUnreadable as exc:
        raise BadRequest("invalid-json", str(exc)) from exc
    except BatchMalformed as exc:
        # Well-formed JSON of the wrong shape is 422 `invalid-body`, as on every other route (errors.py).
        raise InvalidInput("invalid-body", exc.reason, field=exc.field) from exc
    except BatchRefused as exc:
        _check_count(exc.total or 0, settings)
        raise _refused(_every_error(exc, settings, cache, now)) from exc
    _check_count(len(batch.events), settings)
    try:
        aggregates = _aggregate(batch, settings, cache, now)
    except BatchRefused as exc:
        raise _refused(exc.errors) from exc
    return PendingBatch(
        batch.batch_id,
        batch.pipeline,
        batch_digest(batch),
        aggregates,
        legacy_digest=functools.partial(legacy_batch_digest, body),
    )


def _check_count(events: int, settings: Settings) -> None:
    if events > settings.ingest_max_events:
        raise PayloadTooLarge(
            "batch-too-large",
            f"the batch has {events} events; at most {settings.ingest_max_events} per batch",
            limit_events=settings.ingest_max_events,
        )


def _aggregate(batch: EventBatch, settings: Settings, cache: CatalogCache, now: Any) -> Aggregates:
    view = cache.view()
    if batch.pipeline not in view.catalog.pipelines:
        cache.invalidate()  # maybe applied on another replica a moment ago
        view = cache.view()
    return aggregate(
        batch,
        view.catalog,
        environments=settings.environments,
        now=now,
        max_age=settings.event_max_age,
        max_future=settings.event_max_future,
        window=settings.telemetry_window,
        tail_events={
            event: segments for (pipeline, event), segments in view.tails.items() if pipeline == batch.pipeline
        },
    )


def _every_error(refused: BatchRefused, settings: Settings, cache: CatalogCache, now: Any) -> list[EventError]:
    """The wire-type errors plus what the catalog says of the events that did decode: every bad event at once."""
    errors = list(refused.errors)
    if refused.decoded is not None and refused.decoded.events:
        try:
            _aggregate(refused.decoded, settings, cache, now)
        except BatchRefused as more:
            errors.extend(
                EventError(index=refused.indexes[error.index], reason=error.reason, field=error.field)
                for error in more.errors
            )
    return sorted(errors, key=lambda error: error.index)


def _refused(errors: list[EventError]) -> InvalidInput:
    first = errors[0]
    return InvalidInput(
        "invalid-events",
        f"{len(errors)} invalid events; nothing from this batch was recorded (first: event {first.index}: "
        f"{first.reason})",
        errors=[{"index": error.index, "field": error.field, "reason": error.reason} for error in errors],
    )


def _prepare_limiter(state: Any) -> anyio.CapacityLimiter:
    """One batch prepared at a time per process: it is CPU work under the GIL, and more threads preparing would
    only slow the thread that holds the database's write lock. Created on first use, inside the event loop."""
    limiter: anyio.CapacityLimiter | None = getattr(state, "ingest_prepare_limiter", None)
    if limiter is None:
        limiter = state.ingest_prepare_limiter = anyio.CapacityLimiter(1)
    return limiter


class EventController(Controller):
    """Event batches from pipelines."""

    path = "/events"
    tags = ["telemetry"]
    # The route reads its own body against the ingest limits (the management API's 32 KB cap is too small).
    request_max_body_size = None

    @post(
        "/",
        opt={"role": Role.INGEST},
        status_code=200,
        summary="Ingest a batch of events",
        operation_class=request_body(EventBatch, description="A batch of events (`Content-Encoding: gzip` accepted)"),
        responses=problems(409),
    )
    async def ingest(self, request: Request[Any, Any, Any]) -> IngestResult:
        """Validate every event, then record the whole batch or nothing; 422 lists each bad event by index."""
        # The caller and the app's objects straight from the request, not through injection (as OFREP's single
        # flag): Litestar resolves a route's dependencies as one task each in a task group, and the nine this route
        # had were a measurable share of its time on the event loop.
        principal: Principal = request.state.principal
        state = request.app.state
        settings: Settings = state.settings
        now: datetime = state.clock()
        ingest_limiter: RateLimiter = state.ingest_limiter
        catalog_cache: CatalogCache = state.catalog_cache
        batch_writer: BatchWriter = state.batch_writer
        metrics: ControlPlaneMetrics = state.metrics
        event_metrics: EventMetrics = state.event_metrics
        wait = ingest_limiter.retry_after(f"token:{principal.token_id}")
        if wait is not None:
            raise TooManyRequestsException(
                detail="ingest rate limit exceeded for this token", headers={"Retry-After": str(wait)}
            )
        try:
            raw = await _read_body(request, settings.ingest_max_bytes)
            body = _decompress(
                raw, request.headers.get("content-encoding", "").strip().lower(), settings.ingest_max_bytes
            )
            # Bounded like the commit: reading a stale catalog from a database that does not answer must not hang.
            pending = await in_thread(
                _prepare,
                body,
                settings,
                catalog_cache,
                now,
                deadline=settings.database_timeout_seconds,
                limiter=_prepare_limiter(state),
            )
            result = await batch_writer.submit(pending)
        except Exception:
            metrics.ingest_batches.labels("rejected").inc()
            raise
        if result.duplicate:
            metrics.ingest_batches.labels("duplicate").inc()
            metrics.ingest_events.labels("duplicate").inc(pending.aggregates.events)
            return result
        # Counted only once committed: /metrics never shows an event the database does not have.
        # The copy `_prepare` just used: no database read on the event loop.
        event_metrics.record(pending.pipeline, pending.aggregates, catalog_cache.loaded())
        metrics.ingest_batches.labels("accepted").inc()
        metrics.ingest_events.labels("accepted").inc(result.accepted)
        return result
