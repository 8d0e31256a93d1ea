"""The Vision analysis step: SafeSearch-like likelihoods and a verdict, behind the ``VisionAnalyzer`` seam.

Analyzers:

- ``LocalAnalyzer`` (default): a **heuristic stand-in, not a classifier**. It decodes the image and measures what
  pixels can honestly tell: the share of skin-tone pixels (drives ``racy`` and ``adult``), how uniform the image is
  (a near-blank image gets ``spoof`` UNLIKELY and a note), its size (under 64 px a side it is unusable) and its
  aspect ratio (beyond 4:1 it is noted). It cannot see violence or medical content, so those are ``UNKNOWN``.
  Beige walls, sand and wood count as skin; a close-up face is mostly skin. Use it to exercise the pipeline.
- ``CloudVisionAnalyzer``: Google Cloud Vision SafeSearch, if ``google-cloud-vision`` is installed (it is not a
  dependency of this project).
- ``FaultyAnalyzer``: wraps another analyzer and fails at an injected rate, for load tests.

Every analyzer turns likelihoods into a verdict with the same pure ``judge`` and ``SafetyPolicy``. A failed analysis
raises ``VisionError`` (the pipeline reports it as a ``vision_analysis`` event with outcome ``error``); a refused
image is not an error but a result with ``accepted=False``.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from PIL import Image, ImageChops, ImageStat

from pipeline.images import BROKEN_IMAGE_ERRORS, MAX_IMAGE_PIXELS, RejectionReason

__all__ = [
    "ADULT_SHARE_BOUNDS",
    "MAX_ASPECT_RATIO",
    "MIN_SIDE_PX",
    "NEAR_UNIFORM_STDDEV",
    "RACY_SHARE_BOUNDS",
    "CloudVisionAnalyzer",
    "CloudVisionUnavailableError",
    "FaultyAnalyzer",
    "ImageMeasurements",
    "Likelihood",
    "LocalAnalyzer",
    "SafeSearch",
    "SafetyPolicy",
    "VisionAnalyzer",
    "VisionError",
    "VisionResult",
    "assess_measurements",
    "judge",
    "likelihood_of_share",
    "measure_image",
]


class Likelihood(IntEnum):
    """How likely an image is to show a category, ordered; the values are Cloud Vision's ``Likelihood``."""

    UNKNOWN = 0
    VERY_UNLIKELY = 1
    UNLIKELY = 2
    POSSIBLE = 3
    LIKELY = 4
    VERY_LIKELY = 5


@dataclass(frozen=True, slots=True)
class SafeSearch:
    """The five SafeSearch likelihoods of one image."""

    adult: Likelihood
    violence: Likelihood
    racy: Likelihood
    medical: Likelihood
    spoof: Likelihood


@dataclass(frozen=True, slots=True)
class VisionResult:
    """One analysis: the likelihoods, notes for a reviewer, and whether the image is accepted (and if not, why).

    ``reason`` is None when accepted, else a ``rejection_reason`` value: ``unsafe`` when a likelihood reaches the
    policy's threshold, ``other`` when the image is unusable (too small).
    """

    adult: Likelihood
    violence: Likelihood
    racy: Likelihood
    medical: Likelihood
    spoof: Likelihood
    notes: tuple[str, ...]
    accepted: bool
    reason: RejectionReason | None


class VisionError(Exception):
    """The analyzer failed: no verdict could be reached (timeout, quota, service error, undecodable input)."""


class CloudVisionUnavailableError(ImportError):
    """google-cloud-vision is not installed, so ``CloudVisionAnalyzer`` cannot be built."""


class VisionAnalyzer(Protocol):
    """Analyzes one image; raises ``VisionError`` when it cannot."""

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """Return the SafeSearch likelihoods of the image and the verdict."""
        ...


@dataclass(frozen=True, slots=True)
class SafetyPolicy:
    """The likelihood at or above which each category refuses an image as ``unsafe``; None never refuses.

    Defaults follow Cloud Vision's own guidance for moderation: block adult or violent content at LIKELY. Racy,
    medical and spoof only inform (their likelihoods are in the result for a reviewer).
    """

    adult: Likelihood | None = Likelihood.LIKELY
    violence: Likelihood | None = Likelihood.LIKELY
    racy: Likelihood | None = None
    medical: Likelihood | None = None
    spoof: Likelihood | None = None


def judge(
    safe_search: SafeSearch,
    *,
    policy: SafetyPolicy = SafetyPolicy(),
    notes: tuple[str, ...] = (),
    unusable: str | None = None,
) -> VisionResult:
    """Decide acceptance: ``unsafe`` when a category reaches its threshold, else ``other`` when ``unusable``."""
    reached = [
        f"{category} is {likelihood.name}, at or above {threshold.name}"
        for category, likelihood, threshold in (
            ("adult", safe_search.adult, policy.adult),
            ("violence", safe_search.violence, policy.violence),
            ("racy", safe_search.racy, policy.racy),
            ("medical", safe_search.medical, policy.medical),
            ("spoof", safe_search.spoof, policy.spoof),
        )
        # UNKNOWN means "not measured": it never reaches a threshold, whatever the threshold.
        if threshold is not None and likelihood is not Likelihood.UNKNOWN and likelihood >= threshold
    ]
    reason: RejectionReason | None = None
    if reached:
        reason, notes = RejectionReason.UNSAFE, (*notes, *reached)
    elif unusable is not None:
        reason, notes = RejectionReason.OTHER, (*notes, unusable)
    return VisionResult(
        adult=safe_search.adult,
        violence=safe_search.violence,
        racy=safe_search.racy,
        medical=safe_search.medical,
        spoof=safe_search.spoof,
        notes=notes,
        accepted=reason is None,
        reason=reason,
    )


# The local heuristic's rules, each an inclusive lower edge: a share equal to a bound is in the higher likelihood.
MIN_SIDE_PX = 64
MAX_ASPECT_RATIO = 4.0
NEAR_UNIFORM_STDDEV = 4.0
RACY_SHARE_BOUNDS = (0.15, 0.30, 0.45, 0.60)
ADULT_SHARE_BOUNDS = (0.30, 0.50, 0.70, 0.85)
# Skin in YCbCr (Chai & Ngan, 1999): chroma only, so lighting changes Y but not the test.
_SKIN_CB = (77, 127)
_SKIN_CR = (133, 173)
_MEASURE_SIDE_PX = 256
_PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


@dataclass(frozen=True, slots=True)
class ImageMeasurements:
    """What ``LocalAnalyzer`` measures: pixel size, share of skin-tone pixels, luminance standard deviation."""

    width: int
    height: int
    skin_share: float
    luminance_stddev: float


def likelihood_of_share(share: float, bounds: tuple[float, float, float, float]) -> Likelihood:
    """Map a share in [0, 1] to VERY_UNLIKELY..VERY_LIKELY; ``bounds`` are the inclusive lower edges of the upper 4."""
    return Likelihood(Likelihood.VERY_UNLIKELY + sum(share >= bound for bound in bounds))


def assess_measurements(
    measurements: ImageMeasurements,
    policy: SafetyPolicy = SafetyPolicy(),
) -> VisionResult:
    """Apply the local SafeSearch-like rules to measurements and judge the result."""
    notes: list[str] = []
    racy = likelihood_of_share(measurements.skin_share, RACY_SHARE_BOUNDS)
    adult = likelihood_of_share(measurements.skin_share, ADULT_SHARE_BOUNDS)
    spoof = Likelihood.VERY_UNLIKELY
    if measurements.luminance_stddev < NEAR_UNIFORM_STDDEV:
        spoof = Likelihood.UNLIKELY
        notes.append(
            f"near-uniform image (luminance stddev {measurements.luminance_stddev:.1f}): blank or placeholder?"
        )
        # Skin has texture: a flat beige fill is a colour, not a body, so its skin share says little.
        racy, adult = min(racy, Likelihood.UNLIKELY), min(adult, Likelihood.UNLIKELY)
    if measurements.skin_share > 0:
        notes.append(f"skin-tone pixels: {measurements.skin_share:.0%}")
    short, long = sorted((measurements.width, measurements.height))
    if short > 0 and long / short > MAX_ASPECT_RATIO:
        notes.append(f"extreme aspect ratio {long / short:.1f}:1")
    unusable = None
    if short < MIN_SIDE_PX:
        unusable = f"too small to use: {measurements.width}x{measurements.height}, needs {MIN_SIDE_PX} px a side"
    safe_search = SafeSearch(
        adult=adult, violence=Likelihood.UNKNOWN, racy=racy, medical=Likelihood.UNKNOWN, spoof=spoof
    )
    return judge(safe_search, policy=policy, notes=tuple(notes), unusable=unusable)


def measure_image(image_bytes: bytes, content_type: str) -> ImageMeasurements:
    """Decode the image and measure it; raise ``VisionError`` when it cannot be decoded."""
    pillow_format = _PILLOW_FORMATS.get(content_type)
    if pillow_format is None:
        raise VisionError(f"cannot analyze {content_type!r}")
    try:
        with Image.open(io.BytesIO(image_bytes), formats=[pillow_format]) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise VisionError(f"{width}x{height} is too many pixels to analyze")
            # For a JPEG, draft() decodes at 1/2..1/8 scale directly: measuring needs no full-size decode.
            image.draft("RGB", (_MEASURE_SIDE_PX, _MEASURE_SIDE_PX))
            rgb = _flatten(image)
    except (*BROKEN_IMAGE_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as undecodable:
        raise VisionError(f"cannot decode the image: {undecodable}") from undecodable
    # An image no larger than 256 px a side is measured pixel for pixel (the tests rely on it).
    rgb.thumbnail((_MEASURE_SIDE_PX, _MEASURE_SIDE_PX), Image.Resampling.BILINEAR)
    luma, cb, cr = rgb.convert("YCbCr").split()
    skin = ImageChops.multiply(cb.point(_band_mask(*_SKIN_CB)), cr.point(_band_mask(*_SKIN_CR)))
    pixels = rgb.width * rgb.height
    return ImageMeasurements(
        width=width,
        height=height,
        skin_share=skin.histogram()[255] / pixels,
        luminance_stddev=ImageStat.Stat(luma).stddev[0],
    )


def _flatten(image: Image.Image) -> Image.Image:
    """Return an RGB copy, transparent parts laid on white (white is not skin and not blank-looking noise)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


def _band_mask(low: int, high: int) -> list[int]:
    """A lookup table: 255 for values in [low, high], 0 elsewhere."""
    return [255 if low <= value <= high else 0 for value in range(256)]


class LocalAnalyzer:
    """The heuristic stand-in for SafeSearch (see the module docstring): measures pixels, no model."""

    def __init__(self, policy: SafetyPolicy = SafetyPolicy()) -> None:
        self._policy = policy

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """Measure the image and apply the local rules."""
        return assess_measurements(measure_image(image_bytes, content_type), self._policy)


class FaultyAnalyzer:
    """Wraps an analyzer and raises ``VisionError`` instead of calling it, with probability ``error_rate``."""

    def __init__(self, inner: VisionAnalyzer, *, error_rate: float, rng: random.Random) -> None:
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be within [0, 1], got {error_rate}")
        self._inner = inner
        self._error_rate = error_rate
        self._rng = rng

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """Fail at the injected rate, else delegate."""
        # random() is in [0, 1): a rate of 0 never fails and a rate of 1 always does.
        if self._rng.random() < self._error_rate:
            raise VisionError(f"injected Vision failure (error rate {self._error_rate})")
        return self._inner.analyze(image_bytes, content_type)


class CloudVisionAnalyzer:
    """Google Cloud Vision SafeSearch; needs ``google-cloud-vision`` (not a dependency of this project)."""

    def __init__(
        self,
        client: Any = None,
        *,
        policy: SafetyPolicy = SafetyPolicy(),
        timeout: float = 10.0,
    ) -> None:
        try:
            from google.cloud import vision  # lazily: an optional library
        except ImportError as missing:
            raise CloudVisionUnavailableError(
                "CloudVisionAnalyzer needs google-cloud-vision, which is not installed; "
                "install it (pip install google-cloud-vision) or use LocalAnalyzer"
            ) from missing
        self._vision: Any = vision
        self._client: Any = client if client is not None else vision.ImageAnnotatorClient()
        self._policy = policy
        self._timeout = timeout

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """Ask Cloud Vision for SafeSearch and judge its likelihoods."""
        try:
            response = self._client.safe_search_detection(
                image=self._vision.Image(content=image_bytes), timeout=self._timeout
            )
        except Exception as failure:  # transport, quota, deadline: any failure means no verdict
            raise VisionError(f"Cloud Vision call failed: {failure}") from failure
        if response.error.message:
            raise VisionError(f"Cloud Vision error: {response.error.message}")
        annotation = response.safe_search_annotation
        safe_search = SafeSearch(
            adult=Likelihood(int(annotation.adult)),
            violence=Likelihood(int(annotation.violence)),
            racy=Likelihood(int(annotation.racy)),
            medical=Likelihood(int(annotation.medical)),
            spoof=Likelihood(int(annotation.spoof)),
        )
        return judge(safe_search, policy=self._policy)
