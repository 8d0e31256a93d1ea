"""Upload checks for reference images: pure functions over the uploaded bytes.

``check_upload(data)`` returns a ``CheckedImage`` or a ``Rejection``; it never raises for a bad upload, because a
refused upload is an expected outcome with a reason (the ``rejection_reason`` label of the
``reference_image_upload`` event), not an error. The checks run in this order, cheapest first:

1. ``too_large``: more than ``MAX_UPLOAD_BYTES`` (5 MiB = 5,242,880 bytes). Exactly 5 MiB is accepted. ``empty``:
   no bytes at all.
2. ``unsupported_type``: the content type is sniffed from the magic numbers (PNG, JPEG, WebP). The filename and the
   multipart ``Content-Type`` are not inputs at all, so they cannot be trusted by mistake.
3. ``too_many_pixels``: more than ``MAX_IMAGE_PIXELS`` pixels, read from the header before anything is decoded. This
   is the decompression-bomb guard; it holds even if Pillow's own ``Image.MAX_IMAGE_PIXELS`` is raised or turned
   off. Pillow's ``DecompressionBombError`` / ``DecompressionBombWarning`` (raised as an error under ``-W error``)
   map here too. Not ``too_large`` (a 34-byte bomb is not a large upload) nor ``corrupt``: such an image is valid,
   only too big to decode safely.
4. ``corrupt``: Pillow, restricted to the sniffed format, must identify it, ``verify()`` it, and fully ``load()`` a
   reopened copy; a PNG must also end with a whole IEND chunk (Pillow's ``verify()`` skips IEND's CRC, so a PNG
   cut inside its last 4 bytes would otherwise pass).

Only the first frame of an animated PNG or WebP is decoded.

What is checked is what is kept: ``CheckedImage.size`` is where the image ends (a PNG's IEND chunk, a WebP's RIFF
length, a JPEG's end-of-image marker after its last scan), and bytes after it (a ZIP appended to a PNG, say) are
not part of the image: the caller stores ``data[:size]``, never the trailing bytes.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = [
    "BROKEN_IMAGE_ERRORS",
    "MAX_IMAGE_PIXELS",
    "MAX_UPLOAD_BYTES",
    "CheckedImage",
    "ContentType",
    "Rejection",
    "RejectionReason",
    "check_upload",
    "sniff_content_type",
]

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
# 40 MP: a 6000 x 6000 photo passes; decoded as RGBA that is 160 MB, the most one upload may cost in memory.
MAX_IMAGE_PIXELS = 40_000_000


class ContentType(StrEnum):
    """The image types an upload may have, as the ``content_type`` label spells them."""

    PNG = "image/png"
    JPEG = "image/jpeg"
    WEBP = "image/webp"


class RejectionReason(StrEnum):
    """Why an upload is refused: the ``rejection_reason`` values the definition declares (``none`` excepted)."""

    TOO_LARGE = "too_large"
    TOO_MANY_PIXELS = "too_many_pixels"
    EMPTY = "empty"
    UNSUPPORTED_TYPE = "unsupported_type"
    CORRUPT = "corrupt"
    UNSAFE = "unsafe"
    FLAG_OFF = "flag_off"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An upload that passed every check: its sniffed type, pixel size, the byte size of the image proper (the
    upload up to the image's end: what is stored), its SHA-256 (hex), and how many bytes followed the image's end
    (dropped)."""

    content_type: ContentType
    width: int
    height: int
    size: int
    sha256: str
    trailing: int = 0


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused upload: a machine-readable reason and a human-readable detail."""

    reason: RejectionReason
    detail: str


# What Pillow raises for bytes that are not a whole image: OSError (truncated), SyntaxError (bad PNG chunks),
# ValueError and struct errors (bad headers, oversized text chunks), EOFError, IndexError.
BROKEN_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error)
_PILLOW_FORMAT = {ContentType.PNG: "PNG", ContentType.JPEG: "JPEG", ContentType.WEBP: "WEBP"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IEND has no data, so its whole chunk (length 0, type, CRC) is a constant.
_PNG_IEND_CHUNK = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"


def sniff_content_type(data: bytes) -> ContentType | None:
    """Return the image type named by the magic numbers at the start of ``data``, or None."""
    if data.startswith(_PNG_SIGNATURE):
        return ContentType.PNG
    if data.startswith(b"\xff\xd8\xff"):
        return ContentType.JPEG
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return ContentType.WEBP
    return None


def check_upload(
    data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_IMAGE_PIXELS
) -> CheckedImage | Rejection:
    """Check an uploaded reference image: size, sniffed type, pixel count and a full decode."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # Someone in this process turned it on: Pillow would then pad truncated images silently and this check
        # could no longer refuse them. Fail loudly (a 5xx) rather than accept broken uploads.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True: truncated uploads cannot be detected")
    if len(data) > max_bytes:
        return Rejection(RejectionReason.TOO_LARGE, f"{len(data)} bytes is over the limit of {max_bytes} bytes")
    if not data:
        return Rejection(RejectionReason.EMPTY, "the file is empty")
    content_type = sniff_content_type(data)
    if content_type is None:
        return Rejection(RejectionReason.UNSUPPORTED_TYPE, "not a PNG, JPEG or WebP image (by its magic numbers)")
    try:
        width, height = _decode(data, content_type, max_pixels)
        end = image_end(data, content_type)
    except _PixelLimitExceeded as exceeded:
        return Rejection(RejectionReason.TOO_MANY_PIXELS, str(exceeded))
    except _UndecodableImage as undecodable:
        return Rejection(RejectionReason.CORRUPT, str(undecodable))
    return CheckedImage(
        content_type=content_type,
        width=width,
        height=height,
        size=end,
        sha256=hashlib.sha256(data[:end]).hexdigest(),
        trailing=len(data) - end,
    )


def image_end(data: bytes, content_type: ContentType) -> int:
    """Where the image in ``data`` ends (bytes after it are not the image's); raises ``_UndecodableImage`` when no
    end can be found. Called on bytes Pillow decoded whole."""
    if content_type is ContentType.PNG:
        return _png_end(data)
    if content_type is ContentType.WEBP:
        end: int = 8 + int(struct.unpack_from("<I", data, 4)[0])
        end += end % 2  # a RIFF chunk is padded to an even length
        if end > len(data):
            raise _UndecodableImage("WebP is shorter than its RIFF header says")
        return end
    return _jpeg_end(data)


def _png_end(data: bytes) -> int:
    """After the IEND chunk, found by walking the chunks (an IEND inside another chunk's data is not the end)."""
    at = len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        at += 12 + int(length)
        if kind == b"IEND":
            return at
    raise _UndecodableImage("PNG has no IEND chunk")


# JPEG markers without a length: TEM, RST0-7, SOI, EOI.
_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}


def _jpeg_end(data: bytes) -> int:
    """After the end-of-image marker that closes the last scan: segments are skipped by their lengths (so an EXIF
    thumbnail's own markers inside APP1 do not count), entropy-coded data is scanned for the next real marker
    (0xFF followed by neither 0x00 stuffing nor a restart marker), as many scans as there are."""
    at = 2  # after SOI
    while at + 1 < len(data):
        if data[at] != 0xFF:
            raise _UndecodableImage(f"JPEG has no marker at byte {at}")
        marker = data[at + 1]
        if marker == 0xFF:  # fill bytes before a marker
            at += 1
            continue
        if marker == 0xD9:
            return at + 2
        if marker in _STANDALONE:
            at += 2
            continue
        if at + 4 > len(data):
            break
        at += 2 + int(struct.unpack_from(">H", data, at + 2)[0])
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next real marker
            while at + 1 < len(data) and not (data[at] == 0xFF and data[at + 1] not in _ENTROPY_CONTINUES):
                at += 1
    raise _UndecodableImage("JPEG has no end-of-image marker")


# After 0xFF inside entropy-coded data: a stuffed zero byte, or a restart marker, the data goes on.
_ENTROPY_CONTINUES = {0x00, *range(0xD0, 0xD8)}


class _PixelLimitExceeded(Exception):
    """The image has more pixels than may be decoded."""


class _UndecodableImage(Exception):
    """The image cannot be decoded whole as its sniffed type."""


def _decode(data: bytes, content_type: ContentType, max_pixels: int) -> tuple[int, int]:
    """Decode ``data`` fully as ``content_type`` and return its size, or raise one of the two errors above."""
    pillow_format = _PILLOW_FORMAT[content_type]
    if content_type is ContentType.PNG and _PNG_IEND_CHUNK not in data:
        raise _UndecodableImage("PNG has no complete IEND chunk (truncated)")
    try:
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            width, height = image.size
            if image.format != pillow_format:
                raise _UndecodableImage(f"sniffed as {content_type}, but Pillow reads {image.format}")
            if width * height > max_pixels:
                raise _PixelLimitExceeded(f"{width}x{height} is {width * height} pixels, over {max_pixels}")
            image.verify()
        # verify() leaves the image unusable, so the full decode needs a fresh open.
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as image:
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as bomb:
        raise _PixelLimitExceeded(f"decompression bomb: {bomb}") from bomb
    except UnidentifiedImageError as unidentified:
        raise _UndecodableImage(f"not a decodable {pillow_format} image") from unidentified
    except BROKEN_IMAGE_ERRORS as broken:
        raise _UndecodableImage(f"{pillow_format} does not decode: {broken}") from broken
    return width, height
