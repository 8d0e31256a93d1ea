"""The reference-image pipeline's steps, free of HTTP: upload, preflight, asset generation.

Each step checks the flag for the user, reports its events (``Telemetry``), logs the playbook's event names,
appends to the run's delivery audit trail and persists the run. Refusals raise problem-detail errors and store
nothing.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.flag import Decision, FlagGate
from pipeline.generator import AssetGenerator, GenerationRequest, ReferenceImage, ReferenceRole
from pipeline.images import CheckedImage, Rejection, RejectionReason, check_upload, sniff_content_type
from pipeline.logs import get_logger
from pipeline.problems import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from pipeline.runs import RunStore, append_delivery_audit_event, new_run_id
from pipeline.settings import FLAG_KEY
from pipeline.storage import ReferenceStore, StoredReference
from pipeline.telemetry import Telemetry
from pipeline.vision import VisionAnalyzer, VisionError, VisionResult

__all__ = ["MAX_REFERENCES", "ReferenceCache", "Workflow"]

MAX_REFERENCES = 8
_ROLES = tuple(role.value for role in ReferenceRole)
_REFUSAL_STATUS = {
    RejectionReason.TOO_LARGE: PayloadTooLarge,
    RejectionReason.UNSUPPORTED_TYPE: UnsupportedMediaType,
}


class ReferenceCache:
    """Resolved references by asset id, each kept for ``ttl`` from when it was resolved.

    ``clear`` drops every entry at once (the flag changed: see ``pipeline.flag.FlagGate.on_flag_change``) and moves
    the cache to a new generation: a resolve that began before the clear cannot put its answer back afterwards
    (``put`` with the generation read when the resolve began), so nothing read before a rollback outlives it.
    Safe to share between request threads and the provider's event thread.
    """

    def __init__(self, ttl: timedelta, clock: Callable[[], datetime]) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[StoredReference, datetime]] = {}
        self._generation = 0
        self.cleared = 0  # how many times ``clear`` ran (exported on the pipeline's /metrics)
        self.dropped = 0  # entries dropped because their object was no longer in the bucket

    @property
    def generation(self) -> int:
        """Moves on at every ``clear``: read it before resolving, hand it to ``put``."""
        with self._lock:
            return self._generation

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, asset_id: str) -> StoredReference | None:
        """The cached reference, unless its time is up."""
        with self._lock:
            entry = self._entries.get(asset_id)
            if entry is None or self._clock() >= entry[1]:
                self._entries.pop(asset_id, None)
                return None
            return entry[0]

    def put(self, reference: StoredReference, *, generation: int) -> bool:
        """Remember a resolved reference, unless the cache was cleared since ``generation`` was read (then the
        answer may predate a rollback and is not kept); True when kept. Bounded: a flood of ids must not grow
        memory without limit."""
        with self._lock:
            if generation != self._generation:
                return False
            if len(self._entries) >= 10_000:
                self._entries.clear()
            # Never past the URL's own expiry: a cached reference must not hand out a dead link.
            until = min(self._clock() + self._ttl, reference.signed_url_expires_at)
            self._entries[reference.asset_id] = (reference, until)
            return True

    def drop(self, asset_id: str) -> None:
        """Forget one entry (its object is gone from the bucket)."""
        with self._lock:
            if self._entries.pop(asset_id, None) is not None:
                self.dropped += 1

    def clear(self) -> int:
        """Forget every entry and start a new generation; return how many entries there were."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._generation += 1
            self.cleared += 1
            return count


@dataclass(frozen=True, slots=True)
class Upload:
    """What an accepted upload answers."""

    reference: StoredReference
    analysis: VisionResult
    variant: str


def _vision_summary(result: VisionResult) -> dict[str, str]:
    likelihoods = {name: getattr(result, name).name for name in ("adult", "violence", "racy", "medical", "spoof")}
    return {
        "safe_search": ",".join(f"{name}={value}" for name, value in likelihoods.items()),
        "notes": "; ".join(result.notes),
    }


class Workflow:
    """The pipeline's steps over injected parts (flag, analyzer, generator, bucket, runs, telemetry, clock)."""

    def __init__(
        self,
        *,
        gate: FlagGate,
        analyzer: VisionAnalyzer,
        generator: AssetGenerator,
        store: ReferenceStore,
        runs: RunStore,
        telemetry: Telemetry,
        environment: str,
        cache: ReferenceCache,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.gate = gate
        self._analyzer = analyzer
        self._generator = generator
        self._store = store
        self._runs = runs
        self._telemetry = telemetry
        self._environment = environment
        self._cache = cache
        self._clock = clock
        self._log = get_logger()

    # --- upload ---------------------------------------------------------------------------------------------------

    def upload(self, *, data: bytes, role: str, user_id: str, decision: Decision) -> Upload:
        """Check, analyse and store one reference image for ``user_id``; refusals raise and store nothing."""
        sniffed = sniff_content_type(data)
        content_type = sniffed.value if sniffed is not None else "other"
        log = self._log.bind(user=user_id, size=len(data), content_type=content_type, role=role)
        if role not in _ROLES:
            raise InvalidInput("invalid-role", f"role must be one of {', '.join(_ROLES)}, got {role!r}", field="role")
        if not decision.enabled:
            self._reject(log, decision, user_id, content_type, RejectionReason.FLAG_OFF, len(data))
            raise Forbidden(
                "reference-images-disabled",
                f"reference images are not enabled for user {user_id}: flag `{FLAG_KEY}` serves "
                f"`{decision.variant}` to them in {self._environment}; nothing was stored",
                flag=FLAG_KEY,
                variant=decision.variant,
            )
        log.info("reference_image_upload_start")
        checked = check_upload(data)
        if isinstance(checked, Rejection):
            self._reject(log, decision, user_id, content_type, checked.reason, len(data), checked.detail)
            error = _REFUSAL_STATUS.get(checked.reason, InvalidInput)
            raise error(f"image-{checked.reason.value.replace('_', '-')}", checked.detail, reason=checked.reason.value)
        if checked.trailing:
            # Bytes after the image's end (an archive appended to a PNG, say) were not checked: they are not kept.
            log.info("reference_image_trailing_bytes_dropped", trailing=checked.trailing)
            data = data[: checked.size]
        analysis = self._analyse(log, decision, user_id, checked, data)
        if not analysis.accepted:
            reason = analysis.reason or RejectionReason.OTHER
            why = "; ".join(analysis.notes) or "the image was not accepted"
            self._reject(log, decision, user_id, content_type, reason, len(data), why)
            raise InvalidInput(
                "image-rejected", f"Vision rejected the image ({reason.value}): {why}", reason=reason.value
            )
        try:
            reference = self._store.save(data, checked, role=role, uploader=user_id, vision=_vision_summary(analysis))
        except Exception as error:
            log.error("reference_image_upload_failed", error=f"{type(error).__name__}: {error}")
            self._telemetry.upload(
                decision.variant, "failed", content_type=content_type, reason="other", size=len(data), user=user_id
            )
            raise ServiceUnavailable("storage-unavailable", "the image could not be stored; retry later") from error
        log.info("reference_image_upload_success", asset_id=reference.asset_id, sha256=reference.sha256)
        self._telemetry.upload(
            decision.variant, "success", content_type=content_type, reason="none", size=len(data), user=user_id
        )
        return Upload(reference=reference, analysis=analysis, variant=decision.variant)

    def _reject(
        self,
        log: Any,
        decision: Decision,
        user_id: str,
        content_type: str,
        reason: RejectionReason,
        size: int,
        detail: str = "",
    ) -> None:
        log.info("reference_image_upload_rejected", reason=reason.value, detail=detail)
        self._telemetry.upload(
            decision.variant, "rejected", content_type=content_type, reason=reason.value, size=size, user=user_id
        )

    def _analyse(self, log: Any, decision: Decision, user_id: str, checked: CheckedImage, data: bytes) -> VisionResult:
        started = time.perf_counter()
        try:
            result = self._analyzer.analyze(data, checked.content_type.value)
        except VisionError as error:
            seconds = time.perf_counter() - started
            self._telemetry.vision(decision.variant, "error", seconds, user=user_id)
            log.error("vision_analysis_error", error=str(error), seconds=round(seconds, 4))
            log.error("reference_image_upload_failed", error="vision analysis failed")
            self._telemetry.upload(
                decision.variant,
                "failed",
                content_type=checked.content_type.value,
                reason="other",
                size=len(data),
                user=user_id,
            )
            raise ServiceUnavailable(
                "vision-unavailable", f"the Vision analysis failed ({error}); nothing was stored, retry later"
            ) from error
        self._telemetry.vision(decision.variant, "ok", time.perf_counter() - started, user=user_id)
        return result

    # --- preflight ------------------------------------------------------------------------------------------------

    def preflight(
        self, *, user_id: str, prompt: str, reference_image_ids: Sequence[str], decision: Decision
    ) -> dict[str, Any]:
        """Start a run: with the flag on, resolve its reference images; with it off, ignore them."""
        if len(reference_image_ids) > MAX_REFERENCES:
            raise InvalidInput("too-many-references", f"at most {MAX_REFERENCES} reference images per run")
        now = self._clock()
        state: dict[str, Any] = {
            "run_id": new_run_id(),
            "user_id": user_id,
            "prompt": prompt,
            "environment": self._environment,
            "created_at": now.isoformat(),
            "flag": {"key": FLAG_KEY, "variant": decision.variant, "enabled": decision.enabled},
            "requested_reference_image_ids": list(reference_image_ids),
            "reference_images_present": False,
            "reference_images": [],
            "image_assets": None,
            "signed_url_expires_at": None,
            "delivery_audit_trail": [],
        }
        append_delivery_audit_event(state, "run_started", at=now, user=user_id, variant=decision.variant)
        log = self._log.bind(run=state["run_id"], user=user_id)
        if decision.enabled:
            references = self._resolve(reference_image_ids)
            state["reference_images"] = [_reference_entry(reference) for reference in references]
            state["reference_images_present"] = bool(references)
            if references:
                # When the run's links stop working: its earliest URL's expiry.
                state["signed_url_expires_at"] = min(r.signed_url_expires_at for r in references).isoformat()
            ids = [reference.asset_id for reference in references]
            log.info("preflight_reference_images_resolved", reference_images=ids, count=len(ids))
            append_delivery_audit_event(state, "preflight_reference_images_resolved", at=now, reference_images=ids)
            self._telemetry.preflight(decision.variant, "resolved", user=user_id)
        else:
            ignored = list(reference_image_ids)
            log.info("preflight_reference_images_ignored", ignored=ignored, flag=FLAG_KEY, variant=decision.variant)
            append_delivery_audit_event(
                state, "preflight_reference_images_ignored", at=now, ignored=ignored, reason=f"{FLAG_KEY} is off"
            )
            self._telemetry.preflight(decision.variant, "ignored", user=user_id)
        self._runs.save(state)
        return state

    def _resolve(self, asset_ids: Sequence[str]) -> list[StoredReference]:
        resolved: list[StoredReference] = []
        missing: list[str] = []
        generation = self._cache.generation  # read before any resolve: a clear meanwhile voids what we read
        for asset_id in dict.fromkeys(asset_ids):  # each once, in the order given
            reference = self._cache.get(asset_id)
            if reference is not None and not self._store.exists(reference.object_name):
                # Deleted since it was cached (a rollback's purge, the expiry cleanup, anyone): never handed out.
                # One metadata read of the exact object, cheaper than the resolve it saves (list, patch, sign).
                self._cache.drop(asset_id)
                self._log.info("reference_cache_entry_dropped", asset_id=asset_id, reason="object deleted")
                reference = None
            if reference is None:
                reference = self._store.resolve(asset_id)
                if reference is not None:
                    self._cache.put(reference, generation=generation)
            if reference is None:
                missing.append(asset_id)
            else:
                resolved.append(reference)
        if missing:
            raise InvalidInput(
                "unknown-reference-images",
                f"no reference image with id {', '.join(missing)}; upload it first (or it was cleaned up)",
                missing=missing,
            )
        return resolved

    # --- generation -----------------------------------------------------------------------------------------------

    def generate(self, run_id: str) -> dict[str, Any]:
        """Generate a preflighted run's variations: 3 without references (the legacy behaviour), or following them.

        One generation per run: the run is claimed for the whole generation, so of concurrent requests one
        generates and the others answer 409 `run-generating`; once it is done, 400 `run-already-generated`."""
        if self._runs.load(run_id) is None:
            raise NotFound("run-not-found", f"no run {run_id}; start one with POST /run_preflight", run=run_id)
        with self._runs.exclusive(run_id, "generate") as held:
            if not held:
                raise Conflict(
                    "run-generating",
                    f"run {run_id} is being generated by another request; read it with GET /runs/{run_id}",
                    run=run_id,
                )
            return self._generate(run_id)

    def _generate(self, run_id: str) -> dict[str, Any]:
        state = self._runs.load(run_id)
        if state is None:
            raise NotFound("run-not-found", f"no run {run_id}; start one with POST /run_preflight", run=run_id)
        if state.get("image_assets") is not None:
            raise BadRequest("run-already-generated", f"run {run_id} already has its assets", run=run_id)
        variant = state["flag"]["variant"]
        references = state["reference_images"]
        used = [reference["asset_id"] for reference in references]
        log = self._log.bind(run=run_id, user=state["user_id"])
        now = self._clock()
        log.info("image_assets_generation_start", references_used=used)
        append_delivery_audit_event(state, "image_assets_generation_start", at=now, references_used=used)
        started = time.perf_counter()
        try:
            images = tuple(
                ReferenceImage(r["asset_id"], ReferenceRole(r["role"]), self._store.download(r["object_name"]))
                for r in references
            )
            seed = int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:4], "big")
            result = self._generator.generate(GenerationRequest(prompt=state["prompt"], seed=seed, references=images))
        except Exception as error:  # GenerationError, or a reference that could not be read back
            seconds = time.perf_counter() - started
            critical = [f"{type(error).__name__}: {error}"]
            state["image_assets"] = {
                "status": "error",
                "variations": [],
                "references_used": used,
                "critical_errors": critical,
            }
            log.error("image_assets_generation_complete", references_used=used, critical_errors=critical)
            append_delivery_audit_event(
                state, "image_assets_generation_complete", at=self._clock(), status="error", critical_errors=critical
            )
            self._telemetry.generation(
                variant, "error", references=bool(references), seconds=seconds, user=state["user_id"]
            )
            self._runs.save(state)
            raise ServiceUnavailable(
                "generation-failed", f"asset generation failed: {critical[0]}", run=run_id
            ) from error
        seconds = time.perf_counter() - started
        notes = {r["asset_id"]: r.get("vision", {}) for r in references}
        variations = []
        for variation in result.variations:
            assets = [{"asset_id": a.asset_id, "role": a.role.value} for a in variation.reference_assets]
            variations.append(
                {
                    "index": variation.index,
                    "status": variation.grade.value,
                    "reference_assets": assets,
                    "notes": list(variation.notes),
                }
            )
            self._runs.save_final_asset(
                run_id,
                variation.index,
                {
                    "run_id": run_id,
                    "variation": variation.index,
                    "visual": {
                        "reference_assets": assets,
                        "grade": variation.grade.value,
                        "notes": list(variation.notes),
                    },
                },
                variation.png,
            )
        state["image_assets"] = {
            "status": result.grade.value,
            "variations": variations,
            "references_used": used,
            "safe_search_notes": notes,
            "critical_errors": [],
        }
        log.info(
            "image_assets_generation_complete",
            references_used=used,
            status=result.grade.value,
            critical_errors=[],
            seconds=round(seconds, 3),
        )
        append_delivery_audit_event(
            state, "image_assets_generation_complete", at=self._clock(), status=result.grade.value
        )
        self._telemetry.generation(
            variant, result.grade.value, references=bool(references), seconds=seconds, user=state["user_id"]
        )
        self._runs.save(state)
        return state


def _reference_entry(reference: StoredReference) -> dict[str, Any]:
    return {
        "asset_id": reference.asset_id,
        "role": reference.role,
        "content_type": reference.content_type,
        "sha256": reference.sha256,
        "size": reference.size,
        "object_name": reference.object_name,
        "signed_url": reference.signed_url,
        "signed_url_expires_at": reference.signed_url_expires_at.isoformat(),
        "vision": reference.vision,
    }
