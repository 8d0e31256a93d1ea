"""What the pipeline service's tests share: images of every kind, an event sink, a log capture, fixed analyzers."""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import httpx
import structlog
from PIL import Image

from controlplane_client.emitter import Emitter
from pipeline.images import RejectionReason
from pipeline.logs import configure_logging
from pipeline.settings import PIPELINE
from pipeline.vision import Likelihood, VisionError, VisionResult

__all__ = [
    "EventSink",
    "FailingAnalyzer",
    "FixedAnalyzer",
    "LogCapture",
    "gif",
    "noisy",
    "padded_png",
    "recording_emitter",
    "truncated_jpeg",
]

#: Big enough for the local analyzer (64 px a side) and the generator's review (visible, contrasted).
IMAGE_SIZE = (96, 80)


def noisy(pillow_format: str = "PNG", size: tuple[int, int] = IMAGE_SIZE, *, seed: int = 1) -> bytes:
    """A noisy RGB image encoded in ``pillow_format``: deterministic per seed, accepted by every check."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, pillow_format)
    return out.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def padded_png(total_size: int) -> bytes:
    """A valid PNG of exactly ``total_size`` bytes: a noisy image plus a private ancillary chunk after IHDR."""
    small = noisy("PNG")
    after_ihdr = 8 + 25  # signature, then IHDR: 4 length + 4 type + 13 data + 4 CRC
    # prVt: lowercase first letter = ancillary (decoders skip it), lowercase second = private.
    chunk = _png_chunk(b"prVt", b"\x00" * (total_size - len(small) - 12))
    data = small[:after_ihdr] + chunk + small[after_ihdr:]
    assert len(data) == total_size
    return data


def truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its scan data."""
    whole = noisy("JPEG")
    return whole[: len(whole) // 2]


def gif() -> bytes:
    """A whole, valid GIF (a type the pipeline does not take)."""
    out = io.BytesIO()
    Image.new("P", IMAGE_SIZE, 3).save(out, "GIF")
    return out.getvalue()


class EventSink:
    """A fake control plane's `POST /api/v1/events`: acknowledges every batch and keeps its events in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        batch = json.loads(body)
        with self._lock:
            self._events.extend(batch["events"])
        answer = {"batch_id": batch["batch_id"], "pipeline": PIPELINE, "accepted": len(batch["events"])}
        return httpx.Response(200, json={**answer, "duplicate": False, "series": 1})

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received so far, as JSON objects."""
        with self._lock:
            return list(self._events)


def recording_emitter(spool_dir: Path, sink: EventSink) -> Emitter:
    """A real emitter whose control plane is ``sink`` (through httpx.MockTransport)."""
    return Emitter(
        "http://controlplane.test",
        "ingest-token",
        pipeline=PIPELINE,
        spool_dir=spool_dir,
        emitter_id="pipeline-test",
        transport=httpx.MockTransport(sink),
    )


class LogCapture:
    """The pipeline's JSON log lines, written to memory while the capture is open."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def __enter__(self) -> LogCapture:
        configure_logging(stream=self.stream)
        return self

    def __exit__(self, *exc_info: object) -> None:
        structlog.reset_defaults()

    @property
    def text(self) -> str:
        """Everything logged, raw."""
        return self.stream.getvalue()

    def lines(self, event: str | None = None) -> list[dict[str, Any]]:
        """The parsed log lines, all or those of one event name."""
        parsed = [json.loads(line) for line in self.text.splitlines() if line.strip()]
        return [line for line in parsed if event is None or line["event"] == event]

    def names(self) -> list[str]:
        """The event names logged, in order."""
        return [line["event"] for line in self.lines()]


class FixedAnalyzer:
    """A Vision analyzer that gives every image the same verdict."""

    def __init__(self, *, accepted: bool, reason: RejectionReason | None = None, notes: tuple[str, ...] = ()) -> None:
        self._result = VisionResult(
            adult=Likelihood.VERY_LIKELY if reason is RejectionReason.UNSAFE else Likelihood.VERY_UNLIKELY,
            violence=Likelihood.VERY_UNLIKELY,
            racy=Likelihood.UNLIKELY,
            medical=Likelihood.UNKNOWN,
            spoof=Likelihood.VERY_UNLIKELY,
            notes=notes,
            accepted=accepted,
            reason=reason,
        )
        self.calls = 0

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """The fixed verdict."""
        self.calls += 1
        return self._result


class FailingAnalyzer:
    """A Vision analyzer that is down: every call raises ``VisionError``."""

    def analyze(self, image_bytes: bytes, content_type: str) -> VisionResult:
        """Fail."""
        raise VisionError("Vision answered 503: backend unavailable")
