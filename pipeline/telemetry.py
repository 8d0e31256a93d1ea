"""The events the pipeline reports, as definitions/reference-images.yaml declares them, handed to the emitter.

Every event names the environment and the variant of `enable-reference-images` the request was served, so the
control plane can compare the flag-on and flag-off cohorts, and, where a user is known, that user as its subject:
the user id the flag was evaluated for (its targeting key), which the emitter hashes before anything leaves the
process, so guards can count each user at most a few times. ``emit`` never blocks: it queues (see
controlplane_client.emitter).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from controlplane_client.emitter import Emitter, Event

__all__ = ["ROUTES", "Telemetry"]

#: Route labels the definition allows; anything else is `other`.
ROUTES = frozenset({"upload_reference_image", "run_preflight", "generate_assets"})


class Telemetry:
    """Typed constructors of the pipeline's events; with no emitter (telemetry off) they do nothing."""

    def __init__(
        self, emitter: Emitter | None, environment: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._emitter = emitter
        self._environment = environment
        self._clock = clock

    def _emit(self, event_type: str, variant: str, subject: str | None, **fields: object) -> None:
        if self._emitter is None:
            return
        self._emitter.emit(
            Event(type=event_type, time=self._clock(), environment=self._environment, variant=variant, **fields),  # type: ignore[arg-type]
            subject=subject,
        )

    def upload(
        self, variant: str, outcome: str, *, content_type: str, reason: str, size: int, user: str | None = None
    ) -> None:
        """A reference-image upload: success, failed (our fault) or rejected (the image's)."""
        labels = {"content_type": content_type, "rejection_reason": reason}
        self._emit("reference_image_upload", variant, user, outcome=outcome, labels=labels, value=float(size))

    def vision(self, variant: str, outcome: str, seconds: float, *, user: str | None = None) -> None:
        """One Vision analysis: ok or error."""
        self._emit("vision_analysis", variant, user, outcome=outcome, value=seconds)

    def preflight(self, variant: str, outcome: str, *, user: str | None = None) -> None:
        """A preflight: references resolved (flag on) or ignored (flag off)."""
        self._emit("preflight_reference_images", variant, user, outcome=outcome)

    def generation(
        self, variant: str, outcome: str, *, references: bool, seconds: float, user: str | None = None
    ) -> None:
        """A run's asset generation: pass, review_failed or error."""
        labels = {"reference_images_present": "true" if references else "false"}
        self._emit("image_assets_generation", variant, user, outcome=outcome, labels=labels, value=seconds)

    def http(self, variant: str, route: str, status: int, seconds: float, *, user: str | None = None) -> None:
        """One HTTP request to the service (``user``: who sent it, when the route knows)."""
        labels = {"route": route if route in ROUTES else "other", "status_class": f"{status // 100}xx"}
        self._emit("http_request", variant, user, labels=labels, value=seconds)
