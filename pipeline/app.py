"""The pipeline's HTTP service (Litestar): thin routes over ``Workflow``; errors are RFC 9457 problem details.

POST /upload/reference-image     multipart: file, role (character|product), user_id  -> 201 the stored reference
POST /run_preflight              JSON: user_id, prompt, reference_image_ids          -> 200 the run's state
POST /runs/{run_id}/generate_assets                                                   -> 200 the run's state
GET  /runs/{run_id}              the run's meta.json;  GET /healthz;  GET /metrics (the emitter's counters)
GET  /                           the upload page: the control shown while the flag is on for the user (upload_page)
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Litestar, Request, get, post, put
from litestar.datastructures import State, UploadFile
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.params import FromPath, JSONBody
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from controlplane_client.emitter import Emitter, EmitterCollector
from controlplane_client.observed import ASGIApp, ObservedRequests, Scope
from pipeline.faults import Faults, FaultSettings, FaultyBucket, FaultyVision
from pipeline.flag import FlagGate, OpenFeatureGate, StaticGate
from pipeline.generator import AssetGenerator, LocalGenerator
from pipeline.images import MAX_UPLOAD_BYTES
from pipeline.logs import get_logger
from pipeline.openapi import UPLOAD_REFUSALS, UploadOperation
from pipeline.problems import BadRequest, NotFound, problem_details
from pipeline.runs import RunStore
from pipeline.settings import FLAG_KEY, PIPELINE, PipelineSettings
from pipeline.storage import ReferenceStore, new_client, signing_credentials
from pipeline.telemetry import Telemetry
from pipeline.upload_page import upload_page_handlers
from pipeline.vision import LocalAnalyzer, VisionAnalyzer
from pipeline.workflow import ReferenceCache, Workflow

__all__ = ["Parts", "create_pipeline_app"]

#: Multipart framing on top of the largest accepted image; a bigger body is refused before it is read.
_BODY_LIMIT = MAX_UPLOAD_BYTES + 64 * 1024
_ROUTE_LABELS = {
    "/upload/reference-image": "upload_reference_image",
    "/run_preflight": "run_preflight",
    # Litestar's path templates carry no converter: `{run_id}`, not `{run_id:str}`.
    "/runs/{run_id}/generate_assets": "generate_assets",
}


class PreflightRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Start a run."""

    user_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    prompt: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    reference_image_ids: list[Annotated[str, msgspec.Meta(max_length=64)]] = msgspec.field(default_factory=list)


class Parts(msgspec.Struct, kw_only=True):
    """What the service is built from; tests inject their own."""

    gate: Any
    analyzer: Any
    generator: Any
    store: Any
    emitter: Any = None


def _workflow(request: Request[Any, Any, Any]) -> Workflow:
    workflow: Workflow = request.app.state.workflow
    return workflow


@post("/upload/reference-image", status_code=201, operation_class=UploadOperation, responses=UPLOAD_REFUSALS)
async def upload_reference_image(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Store a reference image (flag on for the user), answered with a signed URL valid for the TTL."""
    form = await request.form()
    upload, role, user_id = form.get("file"), form.get("role"), form.get("user_id")
    if not isinstance(upload, UploadFile):
        raise BadRequest("file-missing", "send the image as the multipart field `file`", field="file")
    if not isinstance(user_id, str) or not user_id.strip():
        raise BadRequest("user-id-missing", "send the uploader as the multipart field `user_id`", field="user_id")
    workflow = _workflow(request)
    decision = workflow.gate.decide(user_id)
    request.state.variant = decision.variant
    request.state.subject = user_id  # the flag's targeting key: the request event's subject (hashed by the emitter)
    data = await upload.read(MAX_UPLOAD_BYTES + 1)
    result = await anyio.to_thread.run_sync(
        lambda: workflow.upload(data=data, role=str(role or ""), user_id=user_id, decision=decision)
    )
    reference, analysis = result.reference, result.analysis
    return {
        "asset_id": reference.asset_id,
        "role": reference.role,
        "content_type": reference.content_type,
        "size": reference.size,
        "sha256": reference.sha256,
        "signed_url": reference.signed_url,
        "signed_url_expires_at": reference.signed_url_expires_at.isoformat(),
        "safe_search": {
            name: getattr(analysis, name).name for name in ("adult", "violence", "racy", "medical", "spoof")
        },
        "notes": list(analysis.notes),
        "variant": result.variant,
    }


@post("/run_preflight", status_code=200)
async def run_preflight(request: Request[Any, Any, Any], data: JSONBody[PreflightRequest]) -> dict[str, Any]:
    """Start a run: resolve its reference images when the flag is on, ignore them when it is off."""
    workflow = _workflow(request)
    decision = workflow.gate.decide(data.user_id)
    request.state.variant = decision.variant
    request.state.subject = data.user_id
    return await anyio.to_thread.run_sync(
        lambda: workflow.preflight(
            user_id=data.user_id, prompt=data.prompt, reference_image_ids=data.reference_image_ids, decision=decision
        )
    )


@post("/runs/{run_id:str}/generate_assets", status_code=200)
async def generate_assets(request: Request[Any, Any, Any], run_id: FromPath[str]) -> dict[str, Any]:
    """Generate a preflighted run's variations and persist them."""
    workflow = _workflow(request)
    state = await anyio.to_thread.run_sync(workflow.generate, run_id)
    request.state.variant = state["flag"]["variant"]
    request.state.subject = state["user_id"]
    return state


@get("/runs/{run_id:str}")
async def read_run(request: Request[Any, Any, Any], run_id: FromPath[str]) -> dict[str, Any]:
    """A run's meta.json (sanitised: no signed URLs)."""
    runs: RunStore = request.app.state.runs
    state = runs.load(run_id)
    if state is None:
        raise NotFound("run-not-found", f"no run {run_id}", run=run_id)
    return state


@get("/faults")
async def read_faults(request: Request[Any, Any, Any]) -> FaultSettings:
    """The faults in force (404 unless the service was started with faults enabled)."""
    return _faults(request).settings


@put("/faults")
async def set_faults(request: Request[Any, Any, Any], data: JSONBody[FaultSettings]) -> FaultSettings:
    """Inject faults: Vision error rate, upload failure rate, Vision latency (test and demo deployments only)."""
    faults = _faults(request)
    faults.set(data)
    get_logger().warning("faults_set", **msgspec.structs.asdict(data))
    return faults.settings


def _faults(request: Request[Any, Any, Any]) -> Faults:
    faults: Faults | None = request.app.state.faults
    if faults is None:
        raise NotFound("faults-disabled", "fault injection is off; start the service with PIPELINE_FAULTS_ENABLED=true")
    return faults


@get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive."""
    return {"status": "ok"}


@get("/metrics", media_type="text/plain; version=0.0.4")
async def metrics(request: Request[Any, Any, Any]) -> bytes:
    """The emitter's counters (queued, sent, spooled, dropped, ...) for Prometheus."""
    registry: CollectorRegistry = request.app.state.registry
    return generate_latest(registry)


class RequestEvents(ObservedRequests):
    """Report every request as an `http_request` event: route, status class, duration, the user's variant, and the
    user as its subject once a route has read who it is (a request refused before that carries none)."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        super().__init__(app)
        self._telemetry = telemetry

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Emit the request's event (and a size refusal's upload event)."""
        route = _ROUTE_LABELS.get(scope.get("path_template", ""), "other")
        state = scope.get("state", {})
        # Before the flag was evaluated (a malformed request) the cohort is unknown: counted with `off`.
        variant = state.get("variant", "off") if isinstance(state, dict) else "off"
        user = state.get("subject") if isinstance(state, dict) else None
        if route != "other":
            self._telemetry.http(variant, route, status, seconds, user=user if isinstance(user, str) else None)
        if route == "upload_reference_image" and status == 413 and "variant" not in state:
            # Refused for its size before the handler could read it: still an upload rejected as too large.
            size = int(dict(scope.get("headers", [])).get(b"content-length", b"0") or 0)
            self._telemetry.upload(variant, "rejected", content_type="other", reason="too_large", size=size)


class ReferenceCacheCollector(Collector):
    """The reference cache on /metrics: entries held, clears (flag changes) and entries of deleted objects dropped."""

    def __init__(self, cache: ReferenceCache) -> None:
        self._cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Read the cache's counts at scrape time."""
        yield GaugeMetricFamily(
            "pipeline_reference_cache_entries", "Resolved references held in the cache", value=len(self._cache)
        )
        yield CounterMetricFamily(
            "pipeline_reference_cache_clears",
            "Times the cache was cleared because the flag's configuration changed",
            value=self._cache.cleared,
        )
        yield CounterMetricFamily(
            "pipeline_reference_cache_dropped",
            "Cached references dropped because their object was no longer in the bucket",
            value=self._cache.dropped,
        )


def default_parts(settings: PipelineSettings) -> Parts:
    """The real parts: the in-process provider, the local analyzer and generator, the bucket, the emitter."""
    gate: FlagGate = (
        OpenFeatureGate(
            settings.controlplane_url,
            settings.evaluate_token,
            environment=settings.environment,
            cache_path=settings.spool_dir / "flags-snapshot.json",
        )
        if settings.flags_enabled
        else StaticGate(True)
    )
    emulated = bool(os.environ.get("STORAGE_EMULATOR_HOST"))
    store = ReferenceStore(
        new_client(settings.gcs_project),
        settings.bucket,
        ttl=settings.image_signed_url_ttl,
        credentials=signing_credentials(settings.signing_key_file, emulated=emulated),
    )
    emitter = (
        Emitter(
            settings.controlplane_url,
            settings.ingest_token,
            pipeline=PIPELINE,
            spool_dir=settings.spool_dir / "events",
            emitter_id=f"pipeline-{os.getpid()}",
        )
        if settings.telemetry_enabled
        else None
    )
    return Parts(gate=gate, analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=store, emitter=emitter)


def create_pipeline_app(settings: PipelineSettings | None = None, parts: Parts | None = None) -> Litestar:
    """Build the pipeline service."""
    settings = settings or PipelineSettings.from_env()
    parts = parts or default_parts(settings)
    registry = CollectorRegistry()
    if parts.emitter is not None:
        registry.register(EmitterCollector(parts.emitter.stats, PIPELINE))
    telemetry = Telemetry(parts.emitter, settings.environment)
    runs = RunStore(settings.runs_dir)
    analyzer: VisionAnalyzer = parts.analyzer
    generator: AssetGenerator = parts.generator
    store = parts.store
    faults = Faults(random.Random(settings.faults_seed)) if settings.faults_enabled else None
    if faults is not None:
        analyzer, store = FaultyVision(analyzer, faults), FaultyBucket(store, faults)
    cache = ReferenceCache(timedelta(seconds=settings.reference_cache_ttl_seconds), lambda: datetime.now(UTC))
    registry.register(ReferenceCacheCollector(cache))

    def clear_cache() -> None:
        # The flag changed (a rollback turns it off): nothing resolved before it is handed out after it.
        get_logger().info("reference_cache_cleared", entries=cache.clear(), flag=FLAG_KEY)

    gate: FlagGate = parts.gate
    gate.on_flag_change(clear_cache)
    workflow = Workflow(
        gate=parts.gate,
        analyzer=analyzer,
        generator=generator,
        store=store,
        runs=runs,
        telemetry=telemetry,
        environment=settings.environment,
        cache=cache,
    )

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # Whatever is queued is sent (or spooled for the next start) before the process goes.
            if parts.emitter is not None:
                await anyio.to_thread.run_sync(parts.emitter.close)
            parts.gate.close()

    return Litestar(
        route_handlers=[
            upload_reference_image,
            run_preflight,
            generate_assets,
            read_run,
            read_faults,
            set_faults,
            healthz,
            metrics,
            *upload_page_handlers(),
        ],
        plugins=[problem_details()],
        middleware=[lambda app: RequestEvents(app, telemetry)],
        lifespan=[lifespan],
        request_max_body_size=_BODY_LIMIT,
        # The document only, at /schema/openapi.json: Litestar's default docs page loads its scripts from a CDN and
        # renders blank offline. The control plane's own /schema page (assets in its package) can display it.
        openapi_config=OpenAPIConfig(
            title="Reference-image pipeline", version="1", path="/schema", render_plugins=[JsonRenderPlugin()]
        ),
        state=State({"workflow": workflow, "runs": runs, "registry": registry, "settings": settings, "faults": faults}),
    )
