"""Upload checks for reference images: size, sniffed type, decompression bombs and a whole decode."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from controlplane.definitions.loader import load_definition
from pipeline.images import (
    MAX_IMAGE_PIXELS,
    MAX_UPLOAD_BYTES,
    CheckedImage,
    ContentType,
    Rejection,
    RejectionReason,
    check_upload,
    sniff_content_type,
)

DEFINITIONS = Path(__file__).resolve().parents[2] / "definitions"


def encode(pillow_format: str, size: tuple[int, int] = (64, 48), *, seed: int = 1) -> bytes:
    """Encode a noisy RGB image of ``size`` in ``pillow_format``."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, pillow_format)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def padded_png(total_size: int) -> bytes:
    """A valid PNG of exactly ``total_size`` bytes: a small image plus a private ancillary chunk after IHDR."""
    small = encode("PNG", (16, 16))
    after_ihdr = 8 + 25  # signature, then IHDR: 4 length + 4 type + 13 data + 4 CRC
    padding = total_size - len(small) - 12
    # prVt: lowercase first letter = ancillary (decoders may skip it), lowercase second = private.
    chunk = png_chunk(b"prVt", b"\x00" * padding)
    data = small[:after_ihdr] + chunk + small[after_ihdr:]
    assert len(data) == total_size
    return data


def blank_bilevel_png(width: int, height: int) -> bytes:
    """A valid, all-black 1-bit PNG: tiny on disk, ``width * height`` pixels once decoded."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def rejected(result: CheckedImage | Rejection) -> RejectionReason:
    assert isinstance(result, Rejection), result
    return result.reason


@pytest.mark.parametrize(
    ("pillow_format", "content_type"),
    [("PNG", ContentType.PNG), ("JPEG", ContentType.JPEG), ("WEBP", ContentType.WEBP)],
)
def test_whole_png_jpeg_and_webp_are_accepted_with_their_measurements(
    pillow_format: str, content_type: ContentType
) -> None:
    data = encode(pillow_format, (64, 48))

    assert check_upload(data) == CheckedImage(
        content_type=content_type, width=64, height=48, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


def test_checked_image_is_frozen() -> None:
    checked = check_upload(encode("PNG"))
    assert isinstance(checked, CheckedImage)
    with pytest.raises(dataclasses.FrozenInstanceError):
        checked.size = 1  # type: ignore[misc]


def test_limit_is_five_mebibytes() -> None:
    assert MAX_UPLOAD_BYTES == 5_242_880


def test_valid_png_of_exactly_five_mebibytes_is_accepted() -> None:
    result = check_upload(padded_png(MAX_UPLOAD_BYTES))

    assert isinstance(result, CheckedImage)
    assert (result.content_type, result.size, result.width) == (ContentType.PNG, MAX_UPLOAD_BYTES, 16)


def test_valid_png_one_byte_over_five_mebibytes_is_too_large() -> None:
    result = check_upload(padded_png(MAX_UPLOAD_BYTES + 1))

    assert rejected(result) is RejectionReason.TOO_LARGE
    assert isinstance(result, Rejection)
    assert "5242881 bytes" in result.detail


def test_size_is_checked_before_the_type_so_oversized_garbage_is_too_large() -> None:
    assert rejected(check_upload(b"x" * (MAX_UPLOAD_BYTES + 1))) is RejectionReason.TOO_LARGE


def test_byte_limit_can_be_lowered_and_is_inclusive() -> None:
    data = encode("PNG")

    assert isinstance(check_upload(data, max_bytes=len(data)), CheckedImage)
    assert rejected(check_upload(data, max_bytes=len(data) - 1)) is RejectionReason.TOO_LARGE


def test_jpeg_uploaded_under_a_png_name_is_accepted_as_jpeg() -> None:
    # check_upload takes no filename nor declared type: "photo.png" and "Content-Type: image/png" never reach it.
    jpeg_named_png = encode("JPEG")

    result = check_upload(jpeg_named_png)

    assert isinstance(result, CheckedImage)
    assert result.content_type is ContentType.JPEG


@pytest.mark.parametrize("pillow_format", ["GIF", "BMP", "TIFF", "ICO"])
def test_other_image_formats_are_unsupported(pillow_format: str) -> None:
    assert rejected(check_upload(encode(pillow_format, (32, 32)))) is RejectionReason.UNSUPPORTED_TYPE


@pytest.mark.parametrize("data", [b"hello", b"%PDF-1.7\n", b"RIFF\x00\x00\x00\x00WAVEfmt ", b"\xff\xd8"])
def test_non_images_and_near_misses_of_a_signature_are_unsupported(data: bytes) -> None:
    assert sniff_content_type(data) is None
    assert rejected(check_upload(data)) is RejectionReason.UNSUPPORTED_TYPE


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x89PNG\r\n\x1a\n" + random.Random(2).randbytes(4000), id="png-signature-on-garbage"),
        pytest.param(b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(4000), id="jpeg-marker-on-garbage"),
        pytest.param(b"RIFF\xa0\x0f\x00\x00WEBPVP8 " + random.Random(4).randbytes(4000), id="webp-header-on-garbage"),
    ],
)
def test_image_signature_followed_by_garbage_is_corrupt(data: bytes) -> None:
    assert sniff_content_type(data) is not None
    assert rejected(check_upload(data)) is RejectionReason.CORRUPT


def test_png_with_a_damaged_data_chunk_is_corrupt() -> None:
    data = bytearray(encode("PNG"))
    idat = data.index(b"IDAT")
    data[idat + 20] ^= 0xFF  # the chunk's CRC no longer matches

    assert rejected(check_upload(bytes(data))) is RejectionReason.CORRUPT


SIGNATURE_LENGTHS = {"PNG": 8, "JPEG": 3, "WEBP": 12}
WHOLE_FILES = {name: encode(name, (40, 30)) for name in SIGNATURE_LENGTHS}


@settings(max_examples=150, deadline=None)
@given(pillow_format=st.sampled_from(sorted(WHOLE_FILES)), data=st.data())
def test_every_truncation_of_a_valid_image_is_refused(pillow_format: str, data: st.DataObject) -> None:
    whole = WHOLE_FILES[pillow_format]
    keep = data.draw(st.integers(min_value=0, max_value=len(whole) - 1), label="bytes kept")

    reason = rejected(check_upload(whole[:keep]))

    if keep == 0:
        expected = RejectionReason.EMPTY
    elif keep >= SIGNATURE_LENGTHS[pillow_format]:
        expected = RejectionReason.CORRUPT
    else:
        expected = RejectionReason.UNSUPPORTED_TYPE
    assert reason is expected


@pytest.mark.parametrize("pillow_format", sorted(WHOLE_FILES))
@pytest.mark.parametrize("cut", [1, 2, 4, 12])
def test_image_missing_its_last_bytes_is_corrupt(pillow_format: str, cut: int) -> None:
    # The last bytes are where Pillow is most lenient: the IEND CRC of a PNG, the EOI marker of a JPEG.
    assert rejected(check_upload(WHOLE_FILES[pillow_format][:-cut])) is RejectionReason.CORRUPT


def test_check_leaves_truncated_loading_off() -> None:
    check_upload(WHOLE_FILES["JPEG"][:-100])

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_check_refuses_to_run_when_truncated_loading_is_turned_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        check_upload(WHOLE_FILES["PNG"])


@pytest.mark.parametrize(
    ("width", "height"),
    [
        pytest.param(20_000, 20_000, id="over-twice-pillow-limit-raises"),
        pytest.param(10_000, 10_000, id="over-pillow-limit-warns"),
        pytest.param(7_000, 6_000, id="over-our-limit-only"),
    ],
)
def test_decompression_bomb_is_too_many_pixels_before_it_is_decoded(width: int, height: int) -> None:
    bomb = blank_bilevel_png(width, height)
    assert len(bomb) < 100_000

    result = check_upload(bomb)

    assert rejected(result) is RejectionReason.TOO_MANY_PIXELS
    assert isinstance(result, Rejection)
    assert "pixels" in result.detail or "decompression bomb" in result.detail


def test_pixel_limit_holds_even_when_pillows_own_guard_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)

    assert rejected(check_upload(blank_bilevel_png(7_000, 6_000))) is RejectionReason.TOO_MANY_PIXELS


def test_pixel_limit_is_inclusive() -> None:
    data = blank_bilevel_png(100, 100)

    assert isinstance(check_upload(data, max_pixels=10_000), CheckedImage)
    assert rejected(check_upload(data, max_pixels=9_999)) is RejectionReason.TOO_MANY_PIXELS
    assert MAX_IMAGE_PIXELS >= 6_000 * 6_000


def test_an_empty_file_is_empty_not_an_unsupported_type() -> None:
    result = check_upload(b"")

    assert rejected(result) is RejectionReason.EMPTY
    assert isinstance(result, Rejection) and result.detail == "the file is empty"


def jpeg_with_exif_thumbnail() -> bytes:
    """A JPEG whose EXIF carries a JPEG thumbnail: its own SOI and EOI markers sit inside APP1."""
    thumbnail = encode("JPEG", (16, 12), seed=5)
    exif = Image.Exif()
    image = Image.open(io.BytesIO(encode("JPEG", (64, 48))))
    out = io.BytesIO()
    # A private APP1 holding the thumbnail's bytes as they are: its EOI must not be taken for the image's end.
    image.save(out, "JPEG", exif=exif.tobytes() + thumbnail)
    data = out.getvalue()
    assert data.count(b"\xff\xd9") >= 2  # the thumbnail's end of image, then the image's own
    return data


def progressive_jpeg() -> bytes:
    """A progressive JPEG: several scans, each with its own start-of-scan marker, before the end of image."""
    out = io.BytesIO()
    Image.open(io.BytesIO(encode("JPEG"))).save(out, "JPEG", progressive=True)
    data = out.getvalue()
    assert data.count(b"\xff\xda") > 1
    return data


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(encode("PNG"), id="png"),
        pytest.param(encode("JPEG"), id="jpeg"),
        pytest.param(encode("WEBP"), id="webp"),
        pytest.param(jpeg_with_exif_thumbnail(), id="jpeg-with-thumbnail"),
        pytest.param(progressive_jpeg(), id="progressive-jpeg"),
    ],
)
def test_bytes_after_the_images_end_are_measured_and_left_out(image: bytes) -> None:
    # A polyglot: a valid image with a ZIP archive appended (the PNG after IEND, the JPEG after EOI).
    archive = b"PK\x03\x04" + random.Random(9).randbytes(2000) + b"PK\x05\x06" + b"\x00" * 18
    whole = check_upload(image)
    polyglot = check_upload(image + archive)

    assert isinstance(whole, CheckedImage) and isinstance(polyglot, CheckedImage)
    assert (whole.size, whole.trailing) == (len(image), 0)
    assert (polyglot.size, polyglot.trailing) == (len(image), len(archive))
    assert polyglot.sha256 == hashlib.sha256(image).hexdigest()  # of what is kept: the image proper


def test_rejection_reasons_are_the_values_the_definition_declares() -> None:
    definition = load_definition(DEFINITIONS / "reference-images.yaml", environments=("qa", "staging", "production"))
    upload = next(event for event in definition.events if event.name == "reference_image_upload")

    assert {reason.value for reason in RejectionReason} == set(upload.labels["rejection_reason"].values) - {"none"}
    assert {content_type.value for content_type in ContentType} == set(upload.labels["content_type"].values) - {"other"}
