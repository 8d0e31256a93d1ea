"""The Vision step: the verdict, the local heuristic's rules at their edges, injected failures, the Cloud adapter."""

from __future__ import annotations

import importlib.util
import io
import random

import pytest
from PIL import Image

from pipeline.images import RejectionReason
from pipeline.vision import (
    ADULT_SHARE_BOUNDS,
    MIN_SIDE_PX,
    NEAR_UNIFORM_STDDEV,
    RACY_SHARE_BOUNDS,
    CloudVisionAnalyzer,
    CloudVisionUnavailableError,
    FaultyAnalyzer,
    ImageMeasurements,
    Likelihood,
    LocalAnalyzer,
    SafeSearch,
    SafetyPolicy,
    VisionAnalyzer,
    VisionError,
    VisionResult,
    assess_measurements,
    judge,
    likelihood_of_share,
    measure_image,
)

SKIN = (224, 172, 138)
SKY = (40, 80, 200)
TEXTURED = 30.0  # a luminance stddev well above the near-uniform edge


def measured(
    *, width: int = 200, height: int = 200, skin_share: float = 0.0, stddev: float = TEXTURED
) -> ImageMeasurements:
    return ImageMeasurements(width=width, height=height, skin_share=skin_share, luminance_stddev=stddev)


def textured(color: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    """``color`` at a random brightness: texture that keeps its chroma, so skin stays skin."""
    scale = rng.uniform(0.75, 1.1)
    r, g, b = (min(255, round(channel * scale)) for channel in color)
    return (r, g, b)


def skin_rows_png(skin_rows: int, *, width: int = 100, height: int = 100, seed: int = 5) -> bytes:
    """A PNG whose first ``skin_rows`` rows are textured skin tone and the rest textured sky blue."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    image.putdata([textured(SKIN if y < skin_rows else SKY, rng) for y in range(height) for _ in range(width)])
    return encoded(image, "PNG")


def encoded(image: Image.Image, pillow_format: str) -> bytes:
    out = io.BytesIO()
    image.save(out, pillow_format)
    return out.getvalue()


ACCEPTED = VisionResult(
    adult=Likelihood.VERY_UNLIKELY,
    violence=Likelihood.VERY_UNLIKELY,
    racy=Likelihood.VERY_UNLIKELY,
    medical=Likelihood.VERY_UNLIKELY,
    spoof=Likelihood.VERY_UNLIKELY,
    notes=(),
    accepted=True,
    reason=None,
)


class AlwaysAccepts:
    """A stand-in analyzer that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        self.calls += 1
        return ACCEPTED


# The verdict


def safe_search(**likelihoods: Likelihood) -> SafeSearch:
    values = dict.fromkeys(("adult", "violence", "racy", "medical", "spoof"), Likelihood.VERY_UNLIKELY)
    return SafeSearch(**(values | likelihoods))


@pytest.mark.parametrize("category", ["adult", "violence"])
def test_adult_or_violence_at_likely_is_unsafe_and_just_below_is_accepted(category: str) -> None:
    refused = judge(safe_search(**{category: Likelihood.LIKELY}))
    accepted = judge(safe_search(**{category: Likelihood.POSSIBLE}))

    assert (refused.accepted, refused.reason) == (False, RejectionReason.UNSAFE)
    assert any(category in note for note in refused.notes)
    assert (accepted.accepted, accepted.reason) == (True, None)


def test_racy_medical_and_spoof_only_inform_by_default() -> None:
    result = judge(
        safe_search(racy=Likelihood.VERY_LIKELY, medical=Likelihood.VERY_LIKELY, spoof=Likelihood.VERY_LIKELY)
    )

    assert result.accepted
    assert result.racy is Likelihood.VERY_LIKELY


def test_policy_can_refuse_racy() -> None:
    policy = SafetyPolicy(racy=Likelihood.LIKELY)

    assert judge(safe_search(racy=Likelihood.LIKELY), policy=policy).reason is RejectionReason.UNSAFE
    assert judge(safe_search(racy=Likelihood.POSSIBLE), policy=policy).accepted


def test_unknown_never_reaches_a_threshold() -> None:
    policy = SafetyPolicy(adult=Likelihood.UNKNOWN, violence=Likelihood.UNKNOWN)

    assert judge(safe_search(adult=Likelihood.UNKNOWN, violence=Likelihood.UNKNOWN), policy=policy).accepted


def test_unsafe_wins_over_unusable() -> None:
    result = judge(safe_search(adult=Likelihood.VERY_LIKELY), unusable="too small")

    assert result.reason is RejectionReason.UNSAFE


def test_unusable_image_is_refused_as_other_with_its_explanation() -> None:
    result = judge(safe_search(), notes=("a note",), unusable="too small")

    assert (result.accepted, result.reason, result.notes) == (False, RejectionReason.OTHER, ("a note", "too small"))


# The local rules, on measurements


@pytest.mark.parametrize("bounds", [RACY_SHARE_BOUNDS, ADULT_SHARE_BOUNDS])
def test_share_at_a_bound_is_in_the_higher_likelihood(bounds: tuple[float, float, float, float]) -> None:
    assert likelihood_of_share(0.0, bounds) is Likelihood.VERY_UNLIKELY
    assert likelihood_of_share(1.0, bounds) is Likelihood.VERY_LIKELY
    for step, bound in enumerate(bounds):
        assert likelihood_of_share(bound, bounds) == Likelihood.UNLIKELY + step
        assert likelihood_of_share(bound - 1e-9, bounds) == Likelihood.VERY_UNLIKELY + step


def test_seventy_percent_skin_is_adult_likely_and_unsafe() -> None:
    refused = assess_measurements(measured(skin_share=0.70))
    accepted = assess_measurements(measured(skin_share=0.6999))

    assert (refused.adult, refused.racy, refused.reason) == (
        Likelihood.LIKELY,
        Likelihood.VERY_LIKELY,
        RejectionReason.UNSAFE,
    )
    assert (accepted.adult, accepted.accepted) == (Likelihood.POSSIBLE, True)


def test_local_rules_cannot_see_violence_or_medical_content() -> None:
    result = assess_measurements(measured())

    assert (result.violence, result.medical) == (Likelihood.UNKNOWN, Likelihood.UNKNOWN)


def test_image_under_64_px_a_side_is_unusable_and_64_is_enough() -> None:
    assert MIN_SIDE_PX == 64
    small = assess_measurements(measured(width=63, height=500))
    enough = assess_measurements(measured(width=64, height=64))

    assert (small.accepted, small.reason) == (False, RejectionReason.OTHER)
    assert any("63x500" in note for note in small.notes)
    assert enough.accepted


def test_near_uniform_image_is_noted_as_spoof_unlikely_at_the_edge() -> None:
    blank = assess_measurements(measured(stddev=NEAR_UNIFORM_STDDEV - 0.01))
    textured_enough = assess_measurements(measured(stddev=NEAR_UNIFORM_STDDEV))

    assert blank.spoof is Likelihood.UNLIKELY
    assert blank.accepted
    assert any("near-uniform" in note for note in blank.notes)
    assert textured_enough.spoof is Likelihood.VERY_UNLIKELY
    assert not any("near-uniform" in note for note in textured_enough.notes)


def test_flat_skin_coloured_fill_is_not_judged_adult() -> None:
    result = assess_measurements(measured(skin_share=1.0, stddev=0.0))

    assert (result.adult, result.racy, result.accepted) == (Likelihood.UNLIKELY, Likelihood.UNLIKELY, True)


def test_aspect_ratio_beyond_four_to_one_is_noted_not_refused() -> None:
    at_edge = assess_measurements(measured(width=400, height=100))
    beyond = assess_measurements(measured(width=401, height=100))

    assert not any("aspect ratio" in note for note in at_edge.notes)
    assert any("aspect ratio 4.0:1" in note for note in beyond.notes)
    assert beyond.accepted


# The local analyzer, on real images


def test_skin_share_is_measured_pixel_for_pixel() -> None:
    measurements = measure_image(skin_rows_png(37), "image/png")

    assert (measurements.width, measurements.height) == (100, 100)
    assert measurements.skin_share == pytest.approx(0.37)
    assert measurements.luminance_stddev > NEAR_UNIFORM_STDDEV


def test_local_analyzer_refuses_seventy_percent_skin_and_accepts_sixty_nine() -> None:
    analyzer: VisionAnalyzer = LocalAnalyzer()

    refused = analyzer.analyze(skin_rows_png(70), "image/png")
    accepted = analyzer.analyze(skin_rows_png(69), "image/png")

    assert (refused.adult, refused.reason) == (Likelihood.LIKELY, RejectionReason.UNSAFE)
    assert (accepted.adult, accepted.accepted) == (Likelihood.POSSIBLE, True)


def test_landscape_without_skin_is_accepted_as_very_unlikely() -> None:
    result = LocalAnalyzer().analyze(skin_rows_png(0), "image/png")

    assert result == VisionResult(
        adult=Likelihood.VERY_UNLIKELY,
        violence=Likelihood.UNKNOWN,
        racy=Likelihood.VERY_UNLIKELY,
        medical=Likelihood.UNKNOWN,
        spoof=Likelihood.VERY_UNLIKELY,
        notes=(),
        accepted=True,
        reason=None,
    )


@pytest.mark.parametrize(("pillow_format", "content_type"), [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_lossy_formats_are_measured_close_to_their_content(pillow_format: str, content_type: str) -> None:
    image = Image.open(io.BytesIO(skin_rows_png(300, width=600, height=600)))

    measurements = measure_image(encoded(image, pillow_format), content_type)

    assert (measurements.width, measurements.height) == (600, 600)
    assert measurements.skin_share == pytest.approx(0.5, abs=0.05)


def test_blank_image_is_accepted_with_a_spoof_note() -> None:
    result = LocalAnalyzer().analyze(encoded(Image.new("RGB", (128, 128), SKIN), "PNG"), "image/png")

    assert (result.accepted, result.spoof, result.adult) == (True, Likelihood.UNLIKELY, Likelihood.UNLIKELY)
    assert any("near-uniform" in note for note in result.notes)


def test_transparent_pixels_are_not_skin() -> None:
    invisible_skin = Image.new("RGBA", (100, 100), (*SKIN, 0))

    assert measure_image(encoded(invisible_skin, "PNG"), "image/png").skin_share == 0.0


def test_tiny_real_image_is_refused_as_unusable() -> None:
    result = LocalAnalyzer().analyze(skin_rows_png(0, width=63, height=63), "image/png")

    assert (result.accepted, result.reason) == (False, RejectionReason.OTHER)


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"\x89PNG\r\n\x1a\n garbage", "image/png"), (b"GIF89a", "image/gif"), (b"", "image/jpeg")],
)
def test_undecodable_or_unsupported_input_is_an_analyzer_error(data: bytes, content_type: str) -> None:
    with pytest.raises(VisionError):
        LocalAnalyzer().analyze(data, content_type)


# Injected failures


def test_faulty_analyzer_fails_at_its_rate_over_ten_thousand_calls() -> None:
    inner = AlwaysAccepts()
    analyzer = FaultyAnalyzer(inner, error_rate=0.1, rng=random.Random(7))
    failures = 0

    for _ in range(10_000):
        try:
            assert analyzer.analyze(b"", "image/png") is ACCEPTED
        except VisionError:
            failures += 1

    # Binomial(10,000, 0.1): standard deviation 30, so 5 sigma is 150.
    assert abs(failures - 1_000) <= 150
    assert inner.calls == 10_000 - failures


def test_faulty_analyzer_replays_the_same_failures_from_the_same_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        analyzer = FaultyAnalyzer(AlwaysAccepts(), error_rate=0.3, rng=random.Random(seed))
        outcomes = []
        for _ in range(200):
            try:
                analyzer.analyze(b"", "image/png")
                outcomes.append(True)
            except VisionError:
                outcomes.append(False)
        return outcomes

    assert pattern(11) == pattern(11)
    assert pattern(11) != pattern(12)


@pytest.mark.parametrize(("rate", "expected_failures"), [(0.0, 0), (1.0, 500)])
def test_faulty_analyzer_rates_zero_and_one_are_never_and_always(rate: float, expected_failures: int) -> None:
    analyzer = FaultyAnalyzer(AlwaysAccepts(), error_rate=rate, rng=random.Random(1))
    failures = 0
    for _ in range(500):
        try:
            analyzer.analyze(b"", "image/png")
        except VisionError:
            failures += 1

    assert failures == expected_failures


@pytest.mark.parametrize("rate", [-0.01, 1.01])
def test_faulty_analyzer_refuses_a_rate_outside_zero_to_one(rate: float) -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultyAnalyzer(AlwaysAccepts(), error_rate=rate, rng=random.Random(1))


# Cloud Vision


@pytest.mark.skipif(
    importlib.util.find_spec("google.cloud.vision") is not None, reason="google-cloud-vision is installed here"
)
def test_cloud_analyzer_says_clearly_that_google_cloud_vision_is_missing() -> None:
    with pytest.raises(CloudVisionUnavailableError, match="google-cloud-vision"):
        CloudVisionAnalyzer(client=object())
