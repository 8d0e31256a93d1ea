"""Asset generation: real PNG variations, deterministic, carrying their references and graded on visibility."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.generator import (
    VARIATIONS_PER_RUN,
    AssetGenerator,
    GenerationError,
    GenerationRequest,
    Grade,
    LocalGenerator,
    ReferenceAsset,
    ReferenceImage,
    ReferenceRole,
    ReferenceVisibility,
    grade_references,
)
from pipeline.images import CheckedImage, ContentType, check_upload

RED = (200, 30, 30)
GREEN = (20, 200, 30)
CANVAS_AREA = 512 * 512


def encoded(image: Image.Image, pillow_format: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, pillow_format)
    return out.getvalue()


def solid(size: tuple[int, int], colour: tuple[int, int, int], pillow_format: str = "PNG") -> bytes:
    return encoded(Image.new("RGB", size, colour), pillow_format)


def character(asset_id: str = "char-1", size: tuple[int, int] = (300, 400)) -> ReferenceImage:
    return ReferenceImage(asset_id, ReferenceRole.CHARACTER, solid(size, RED))


def product(asset_id: str = "prod-1", size: tuple[int, int] = (200, 200)) -> ReferenceImage:
    return ReferenceImage(asset_id, ReferenceRole.PRODUCT, solid(size, GREEN))


def decoded(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def share_of_colour(png: bytes, colour: tuple[int, int, int]) -> float:
    counts = decoded(png).convert("RGB").getcolors(maxcolors=CANVAS_AREA)
    assert counts is not None
    return sum(count for count, seen in counts if seen == colour) / CANVAS_AREA


def test_without_references_three_decodable_png_variations_pass() -> None:
    generator: AssetGenerator = LocalGenerator()

    result = generator.generate(GenerationRequest(prompt="a lighthouse at dusk", seed=42))

    assert VARIATIONS_PER_RUN == 3
    assert [variation.index for variation in result.variations] == [0, 1, 2]
    for variation in result.variations:
        checked = check_upload(variation.png)
        assert isinstance(checked, CheckedImage)
        assert (checked.content_type, checked.width, checked.height) == (ContentType.PNG, 512, 512)
        assert variation.reference_assets == ()
        assert variation.grade is Grade.PASS
    assert (result.grade, result.reference_images_present) == (Grade.PASS, False)
    assert len({variation.png for variation in result.variations}) == 3


def test_variations_are_deterministic_from_prompt_and_seed() -> None:
    generator = LocalGenerator()
    request = GenerationRequest(prompt="a lighthouse", seed=7, references=(character(),))

    first, again = generator.generate(request), generator.generate(request)
    other_seed = generator.generate(GenerationRequest(prompt="a lighthouse", seed=8, references=(character(),)))
    other_prompt = generator.generate(GenerationRequest(prompt="a harbour", seed=7, references=(character(),)))

    assert first == again
    assert first.variations[0].png != other_seed.variations[0].png
    assert first.variations[0].png != other_prompt.variations[0].png


def test_with_references_each_variation_carries_them_in_order() -> None:
    references = (product("bottle"), character("hero"))

    result = LocalGenerator().generate(GenerationRequest(prompt="ad", seed=1, references=references))

    expected = (ReferenceAsset("bottle", ReferenceRole.PRODUCT), ReferenceAsset("hero", ReferenceRole.CHARACTER))
    assert result.reference_images_present
    for variation in result.variations:
        assert variation.reference_assets == expected
        assert variation.grade is Grade.PASS
        assert isinstance(check_upload(variation.png), CheckedImage)
    assert result.grade is Grade.PASS


def test_references_are_really_composited_and_shrink_across_variations() -> None:
    result = LocalGenerator().generate(GenerationRequest(prompt="ad", seed=3, references=(character(), product())))

    red = [share_of_colour(variation.png, RED) for variation in result.variations]
    green = [share_of_colour(variation.png, GREEN) for variation in result.variations]

    assert red[0] > red[1] > red[2] > 0.10
    assert green[0] > green[1] > green[2] > 0.02


def test_wide_product_fails_review_once_scaled_down_to_sixty_percent() -> None:
    wide = product("banner", size=(400, 100))

    result = LocalGenerator().generate(GenerationRequest(prompt="ad", seed=5, references=(character(), wide)))

    assert [variation.grade for variation in result.variations] == [Grade.PASS, Grade.PASS, Grade.REVIEW_FAILED]
    assert any("product banner too small" in note for note in result.variations[2].notes)
    assert result.grade is Grade.REVIEW_FAILED


def test_mostly_transparent_reference_fails_review_in_every_variation() -> None:
    sticker = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    sticker.paste((*RED, 255), (140, 140, 160, 160))
    reference = ReferenceImage("sticker", ReferenceRole.CHARACTER, encoded(sticker))

    result = LocalGenerator().generate(GenerationRequest(prompt="ad", seed=5, references=(reference,)))

    assert all(variation.grade is Grade.REVIEW_FAILED for variation in result.variations)


def test_crowded_products_fail_review() -> None:
    products = tuple(product(f"p{number}") for number in range(4))

    result = LocalGenerator().generate(GenerationRequest(prompt="ad", seed=5, references=products))

    assert result.grade is Grade.REVIEW_FAILED
    assert len(result.variations[0].reference_assets) == 4


@pytest.mark.parametrize(("pillow_format", "mode"), [("JPEG", "RGB"), ("WEBP", "RGBA"), ("PNG", "P")])
def test_references_in_every_accepted_format_and_mode_are_composited(pillow_format: str, mode: str) -> None:
    image = Image.new("RGB", (256, 256), RED).convert(mode)
    reference = ReferenceImage("hero", ReferenceRole.CHARACTER, encoded(image, pillow_format))

    result = LocalGenerator().generate(GenerationRequest(prompt="ad", seed=9, references=(reference,)))

    assert result.grade is Grade.PASS


def test_undecodable_reference_is_a_generation_error() -> None:
    broken = ReferenceImage("broken", ReferenceRole.PRODUCT, b"\x89PNG\r\n\x1a\nnot really")

    with pytest.raises(GenerationError, match="broken"):
        LocalGenerator().generate(GenerationRequest(prompt="ad", seed=1, references=(broken,)))


def test_variation_count_is_the_requests_and_at_least_one() -> None:
    generator = LocalGenerator()

    assert len(generator.generate(GenerationRequest(prompt="ad", seed=1, variations=5)).variations) == 5
    with pytest.raises(ValueError, match="at least 1"):
        generator.generate(GenerationRequest(prompt="ad", seed=1, variations=0))


@settings(max_examples=10, deadline=None)
@given(prompt=st.text(max_size=120), seed=st.integers(min_value=-(2**63), max_value=2**63))
def test_any_prompt_and_seed_give_decodable_variations(prompt: str, seed: int) -> None:
    result = LocalGenerator(canvas_px=128).generate(GenerationRequest(prompt=prompt, seed=seed))

    assert all(decoded(variation.png).size == (128, 128) for variation in result.variations)


# The review rule, at its edges

HERO = ReferenceAsset("hero", ReferenceRole.CHARACTER)


def visibility(share: float, contrast: float) -> ReferenceVisibility:
    return ReferenceVisibility(asset=HERO, visible_share=share, contrast=contrast)


def test_reference_exactly_at_both_minimums_passes() -> None:
    grade, notes = grade_references([visibility(0.02, 12.0)], min_visible_share=0.02, min_contrast=12.0)

    assert grade is Grade.PASS
    assert notes == ("character hero visible: covers 2.0% of the canvas, contrast 12.0",)


def test_reference_just_under_the_visible_share_fails_review() -> None:
    grade, notes = grade_references([visibility(0.0199, 50.0)], min_visible_share=0.02, min_contrast=12.0)

    assert grade is Grade.REVIEW_FAILED
    assert "too small" in notes[0]


def test_reference_just_under_the_contrast_fails_review() -> None:
    grade, notes = grade_references([visibility(0.5, 11.99)], min_visible_share=0.02, min_contrast=12.0)

    assert grade is Grade.REVIEW_FAILED
    assert "blends into the background" in notes[0]


def test_one_failing_reference_fails_the_variation() -> None:
    grade, notes = grade_references(
        [visibility(0.3, 50.0), visibility(0.001, 50.0)], min_visible_share=0.02, min_contrast=12.0
    )

    assert grade is Grade.REVIEW_FAILED
    assert len(notes) == 2
