"""Asset generation behind the ``AssetGenerator`` seam, and ``LocalGenerator``, which really composes PNGs.

``LocalGenerator`` makes ``request.variations`` (3) variations of a 512 x 512 canvas, each deterministic from
``(prompt, seed, index)``: a two-colour gradient, a few translucent shapes and the prompt as a caption.

- **Without references** (the legacy behaviour, flag off) that is all; every variation grades ``pass``.
- **With references** each variation composites every reference below the caption: ``character`` references in
  the left 55 % of the canvas, ``product`` references in the right 45 %, several of one role side by side in equal
  columns, each scaled to fit its column at 100 %, 80 % or 60 % (variation 0, 1, 2, then again).

**Review grade** (per variation): ``pass`` when every reference is visible enough, else ``review_failed``. A
reference is visible enough when both hold:

- its opaque pixels (alpha >= 128) cover at least ``min_visible_share`` (2 %) of the canvas, about 72 x 72 px; and
- the mean absolute RGB difference between the composite and the background under those pixels is at least
  ``min_contrast`` (12 of 255), so it does not vanish into the background.

So a very wide or mostly transparent reference, or many references of one role, fail review at the smaller scales.
A run's grade (``GenerationResult.grade``) is ``review_failed`` when any variation's is.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageStat

from pipeline.images import BROKEN_IMAGE_ERRORS, MAX_IMAGE_PIXELS

__all__ = [
    "VARIATIONS_PER_RUN",
    "AssetGenerator",
    "GenerationError",
    "GenerationRequest",
    "GenerationResult",
    "Grade",
    "LocalGenerator",
    "ReferenceAsset",
    "ReferenceImage",
    "ReferenceRole",
    "ReferenceVisibility",
    "Variation",
    "grade_references",
]

VARIATIONS_PER_RUN = 3


class ReferenceRole(StrEnum):
    """What a reference image shows, which decides where it is placed."""

    CHARACTER = "character"
    PRODUCT = "product"


class Grade(StrEnum):
    """The review grade of a variation or a run: the ``image_assets_generation`` outcomes other than ``error``."""

    PASS = "pass"  # noqa: S105 - an outcome name, not a password
    REVIEW_FAILED = "review_failed"


@dataclass(frozen=True, slots=True)
class ReferenceImage:
    """A reference image to follow: its asset id, its role and its (already checked) bytes."""

    asset_id: str
    role: ReferenceRole
    image_bytes: bytes


@dataclass(frozen=True, slots=True)
class ReferenceAsset:
    """A reference a variation used, by id and role."""

    asset_id: str
    role: ReferenceRole


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate: a prompt and seed (the variations are deterministic from them) and the references."""

    prompt: str
    seed: int
    references: tuple[ReferenceImage, ...] = ()
    variations: int = VARIATIONS_PER_RUN


@dataclass(frozen=True, slots=True)
class Variation:
    """One generated image: its index, PNG bytes, the references it carries, its grade and why."""

    index: int
    png: bytes
    reference_assets: tuple[ReferenceAsset, ...]
    grade: Grade
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The variations of one run."""

    variations: tuple[Variation, ...]

    @property
    def grade(self) -> Grade:
        """``review_failed`` when any variation failed review, else ``pass``."""
        failed = any(variation.grade is Grade.REVIEW_FAILED for variation in self.variations)
        return Grade.REVIEW_FAILED if failed else Grade.PASS

    @property
    def reference_images_present(self) -> bool:
        """Whether any variation carries references (the ``reference_images_present`` label)."""
        return any(variation.reference_assets for variation in self.variations)


class GenerationError(Exception):
    """Generation failed (a reference could not be decoded): the ``error`` outcome."""


class AssetGenerator(Protocol):
    """Generates a run's image assets; raises ``GenerationError`` when it cannot."""

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Return the run's variations."""
        ...


@dataclass(frozen=True, slots=True)
class ReferenceVisibility:
    """How one placed reference shows in a composite: canvas share of its opaque pixels and its mean contrast."""

    asset: ReferenceAsset
    visible_share: float
    contrast: float


def grade_references(
    visibilities: Sequence[ReferenceVisibility], *, min_visible_share: float, min_contrast: float
) -> tuple[Grade, tuple[str, ...]]:
    """Grade a variation: ``pass`` when every reference meets both minimums (inclusive), with a note each."""
    notes: list[str] = []
    grade = Grade.PASS
    for seen in visibilities:
        name = f"{seen.asset.role} {seen.asset.asset_id}"
        measured = f"covers {seen.visible_share:.1%} of the canvas, contrast {seen.contrast:.1f}"
        if seen.visible_share < min_visible_share:
            grade = Grade.REVIEW_FAILED
            notes.append(f"{name} too small: {measured}; needs {min_visible_share:.1%}")
        elif seen.contrast < min_contrast:
            grade = Grade.REVIEW_FAILED
            notes.append(f"{name} blends into the background: {measured}; needs contrast {min_contrast:.1f}")
        else:
            notes.append(f"{name} visible: {measured}")
    return grade, tuple(notes)


_SCALES = (1.0, 0.8, 0.6)
_CAPTION_BAND_PX = 56
_MARGIN_PX = 16
_CHARACTER_WIDTH_SHARE = 0.55
_OPAQUE = 128


class LocalGenerator:
    """Composes variations with Pillow (see the module docstring for the layout and the review rule)."""

    def __init__(self, *, canvas_px: int = 512, min_visible_share: float = 0.02, min_contrast: float = 12.0) -> None:
        self._canvas_px = canvas_px
        self._min_visible_share = min_visible_share
        self._min_contrast = min_contrast
        self._font = ImageFont.load_default(size=18)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Compose the request's variations."""
        if request.variations < 1:
            raise ValueError(f"variations must be at least 1, got {request.variations}")
        references = [(reference, _decode_reference(reference)) for reference in request.references]
        return GenerationResult(
            variations=tuple(self._compose(request, index, references) for index in range(request.variations))
        )

    def _compose(
        self, request: GenerationRequest, index: int, references: Sequence[tuple[ReferenceImage, Image.Image]]
    ) -> Variation:
        """Compose variation ``index``: background, shapes, caption, then the references, measured as placed."""
        rng = random.Random(hashlib.sha256(f"{request.prompt}\0{request.seed}\0{index}".encode()).digest())
        canvas = self._background(rng)
        self._caption(canvas, request.prompt)
        visibilities = [
            self._place(canvas, reference, image, box)
            for (reference, image), box in zip(references, self._boxes(references, index), strict=True)
        ]
        assets = tuple(ReferenceAsset(reference.asset_id, reference.role) for reference, _ in references)
        if references:
            grade, notes = grade_references(
                visibilities, min_visible_share=self._min_visible_share, min_contrast=self._min_contrast
            )
        else:
            grade, notes = Grade.PASS, ("no reference images: legacy generation, nothing to review",)
        out = io.BytesIO()
        canvas.convert("RGB").save(out, "PNG")
        return Variation(index=index, png=out.getvalue(), reference_assets=assets, grade=grade, notes=notes)

    def _background(self, rng: random.Random) -> Image.Image:
        """A vertical two-colour gradient with a few translucent ellipses and rectangles."""
        size = (self._canvas_px, self._canvas_px)
        top, bottom = (_random_colour(rng) for _ in range(2))
        ramp = Image.linear_gradient("L").resize(size)
        canvas = Image.composite(Image.new("RGBA", size, bottom), Image.new("RGBA", size, top), ramp)
        shapes = Image.new("RGBA", size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(shapes)
        for _ in range(rng.randint(3, 6)):
            x0, y0 = rng.randrange(self._canvas_px), rng.randrange(self._canvas_px)
            extent = rng.randint(self._canvas_px // 10, self._canvas_px // 3)
            bounds = (x0, y0, x0 + extent, y0 + rng.randint(extent // 2, extent))
            fill = (*_random_colour(rng), rng.randint(60, 140))
            if rng.random() < 0.5:
                draw.ellipse(bounds, fill=fill)
            else:
                draw.rectangle(bounds, fill=fill)
        return Image.alpha_composite(canvas, shapes)

    def _caption(self, canvas: Image.Image, prompt: str) -> None:
        """Write the prompt on a dark band across the top."""
        band = Image.new("RGBA", (self._canvas_px, _CAPTION_BAND_PX - _MARGIN_PX // 2), (0, 0, 0, 150))
        canvas.alpha_composite(band)
        caption = prompt if len(prompt) <= 44 else prompt[:43] + "…"
        if not isinstance(self._font, ImageFont.FreeTypeFont):
            # Pillow's bitmap fallback font (no FreeType) encodes text as Latin-1 only.
            caption = caption.encode("latin-1", "replace").decode("latin-1")
        ImageDraw.Draw(canvas).text((_MARGIN_PX, 14), caption, font=self._font, fill=(255, 255, 255, 255))

    def _boxes(
        self, references: Sequence[tuple[ReferenceImage, Image.Image]], index: int
    ) -> list[tuple[int, int, int, int]]:
        """The (left, top, width, height) box of each reference, in order: its role's region, its column, scaled."""
        scale = _SCALES[index % len(_SCALES)]
        top, bottom = _CAPTION_BAND_PX, self._canvas_px - _MARGIN_PX
        split = round(self._canvas_px * _CHARACTER_WIDTH_SHARE)
        regions = {
            ReferenceRole.CHARACTER: (_MARGIN_PX, split - _MARGIN_PX // 2),
            ReferenceRole.PRODUCT: (split + _MARGIN_PX // 2, self._canvas_px - _MARGIN_PX),
        }
        counts = {role: sum(reference.role is role for reference, _ in references) for role in ReferenceRole}
        seen = dict.fromkeys(ReferenceRole, 0)
        boxes = []
        for reference, image in references:
            left, right = regions[reference.role]
            column = (right - left) // counts[reference.role]
            width, height = _fit(image.size, (column * scale, (bottom - top) * scale))
            x = left + seen[reference.role] * column + (column - width) // 2
            # Characters stand on the bottom margin; products sit centred in their column.
            y = bottom - height if reference.role is ReferenceRole.CHARACTER else (top + bottom - height) // 2
            seen[reference.role] += 1
            boxes.append((x, y, width, height))
        return boxes

    def _place(
        self, canvas: Image.Image, reference: ReferenceImage, image: Image.Image, box: tuple[int, int, int, int]
    ) -> ReferenceVisibility:
        """Paste the reference into ``box`` and measure how visible it is there."""
        x, y, width, height = box
        fitted = image.resize((width, height), Image.Resampling.LANCZOS)
        area = (x, y, x + width, y + height)
        before = canvas.crop(area).convert("RGB")
        canvas.alpha_composite(fitted, dest=(x, y))
        opaque = fitted.getchannel("A").point([255 if alpha >= _OPAQUE else 0 for alpha in range(256)])
        opaque_pixels = opaque.histogram()[255]
        contrast = 0.0
        if opaque_pixels:
            difference = ImageChops.difference(canvas.crop(area).convert("RGB"), before)
            contrast = sum(ImageStat.Stat(difference, mask=opaque).mean) / 3
        return ReferenceVisibility(
            asset=ReferenceAsset(reference.asset_id, reference.role),
            visible_share=opaque_pixels / (self._canvas_px * self._canvas_px),
            contrast=contrast,
        )


def _decode_reference(reference: ReferenceImage) -> Image.Image:
    """Decode a reference to RGBA, or raise ``GenerationError``."""
    try:
        with Image.open(io.BytesIO(reference.image_bytes)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise GenerationError(f"reference {reference.asset_id} has too many pixels")
            return image.convert("RGBA")
    except (*BROKEN_IMAGE_ERRORS, Image.DecompressionBombError, Image.DecompressionBombWarning) as undecodable:
        raise GenerationError(f"reference {reference.asset_id} cannot be decoded: {undecodable}") from undecodable


def _fit(size: tuple[int, int], box: tuple[float, float]) -> tuple[int, int]:
    """The largest size with the aspect ratio of ``size`` that fits ``box`` (at least 1 x 1)."""
    ratio = min(box[0] / size[0], box[1] / size[1])
    return max(1, int(size[0] * ratio)), max(1, int(size[1] * ratio))


def _random_colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))
