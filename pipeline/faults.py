"""Faults injected into a running pipeline, for QA canaries, the load generator and the demo.

Off unless the service is started with ``PIPELINE_FAULTS_ENABLED=true``; then ``PUT /faults`` sets them:
a Vision error rate, an upload (storage) failure rate, and added latency per Vision call. Rates are drawn from a
seeded ``random.Random`` so a run can be repeated.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from pipeline.images import CheckedImage
from pipeline.storage import StoredReference
from pipeline.vision import VisionAnalyzer, VisionError, VisionResult

__all__ = ["FaultSettings", "Faults", "FaultyBucket", "FaultyVision"]

Rate = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class FaultSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """What to inject: shares of Vision calls and uploads that fail, and seconds added to each Vision call."""

    vision_error_rate: Rate = 0.0
    upload_failure_rate: Rate = 0.0
    vision_latency_seconds: Annotated[float, msgspec.Meta(ge=0.0, le=30.0)] = 0.0


@dataclass
class Faults:
    """The faults in force now; changed while the service runs."""

    rng: random.Random
    settings: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def set(self, settings: FaultSettings) -> None:
        """Replace the faults in force."""
        with self._lock:
            self.settings = settings

    def roll(self, rate: float) -> bool:
        """True with probability ``rate`` (0 never, 1 always)."""
        with self._lock:
            return self.rng.random() < rate


class FaultyVision:
    """An analyzer that is slow by the latency in force and fails at the Vision error rate in force."""

    def __init__(self, inner: VisionAnalyzer, faults: Faults, sleep: Callable[[float], None] = time.sleep) -> None:
        self._inner = inner
        self._faults = faults
        self._sleep = sleep

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """Delay, maybe fail, else delegate."""
        settings = self._faults.settings
        if settings.vision_latency_seconds:
            self._sleep(settings.vision_latency_seconds)
        if self._faults.roll(settings.vision_error_rate):
            raise VisionError(f"injected Vision failure (rate {settings.vision_error_rate})")
        return self._inner.analyze(image_bytes, content_type)


class FaultyBucket:
    """A reference store whose saves fail at the upload failure rate in force (as a storage outage would)."""

    def __init__(self, inner: Any, faults: Faults) -> None:
        self._inner = inner
        self._faults = faults

    def save(self, data: bytes, checked: CheckedImage, **kwargs: Any) -> StoredReference:
        """Maybe fail, else store."""
        if self._faults.roll(self._faults.settings.upload_failure_rate):
            raise ConnectionError("injected storage failure")
        stored: StoredReference = self._inner.save(data, checked, **kwargs)
        return stored

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
