"""Posting a batch to the control plane and reading its answer: acknowledged, rejected for good, or worth a retry.

What the control plane answers (controlplane/telemetry/controller.py): 200 after commit, with ``duplicate`` true
when the batch id was already counted; 429 with ``Retry-After`` seconds; 4xx problem details for a batch it will
never take; 5xx when it could not commit.
"""

from __future__ import annotations

import enum
import logging
import zlib
from dataclasses import dataclass

import httpx
import msgspec

from controlplane_client.retry import retry_after_seconds

__all__ = ["Answer", "BatchPoster", "Verdict", "read_answer"]

logger = logging.getLogger(__name__)

EVENTS_PATH = "/api/v1/events"


class Verdict(enum.StrEnum):
    """What to do with a batch after one attempt."""

    ACKNOWLEDGED = "acknowledged"  # committed (or already committed under this id): done
    REJECTED = "rejected"  # refused for good: sending it again would be refused again
    TRANSIENT = "transient"  # not committed this time: send it again, same id


@dataclass(frozen=True, slots=True)
class Answer:
    """The control plane's answer to one attempt (or the transport error in its place)."""

    verdict: Verdict
    status: int | None = None
    accepted: int = 0
    duplicate: bool = False
    retry_after: float | None = None
    reason: str = ""


class _Acknowledgement(msgspec.Struct):
    accepted: int = 0
    duplicate: bool = False


class _Problem(msgspec.Struct):
    type: str = ""
    detail: str = ""


def read_answer(response: httpx.Response) -> Answer:
    """Classify one HTTP answer."""
    status = response.status_code
    if 200 <= status < 300:
        try:
            ack = msgspec.json.decode(response.content, type=_Acknowledgement)
        except msgspec.DecodeError:
            # Committed all the same: a 200 comes only after the commit.
            ack = _Acknowledgement()
        return Answer(Verdict.ACKNOWLEDGED, status, accepted=ack.accepted, duplicate=ack.duplicate)
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    if status in (408, 429) or status >= 500:
        return Answer(Verdict.TRANSIENT, status, retry_after=retry_after, reason=f"HTTP {status}")
    return Answer(Verdict.REJECTED, status, reason=_problem_reason(response))


def _problem_reason(response: httpx.Response) -> str:
    """`type: detail` of a problem-details body, or the start of whatever else came back."""
    try:
        problem = msgspec.json.decode(response.content, type=_Problem)
    except msgspec.DecodeError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    return f"HTTP {response.status_code} {problem.type}: {problem.detail}"


class BatchPoster:
    """Posts batch bodies to one control plane with an ingest token, gzipped above a size."""

    def __init__(self, client: httpx.Client, token: str, *, gzip_min_bytes: int) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._gzip_headers = {**self._headers, "Content-Encoding": "gzip"}
        self._gzip_min_bytes = gzip_min_bytes

    def post(self, body: bytes) -> Answer:
        """Send one batch body once."""
        if len(body) >= self._gzip_min_bytes:
            content, headers = _gzip(body), self._gzip_headers
        else:
            content, headers = body, self._headers
        try:
            response = self._client.post(EVENTS_PATH, content=content, headers=headers)
        except httpx.TransportError as exc:
            # Connection refused, reset, timeout: the batch may or may not have committed; its id makes a resend safe.
            return Answer(Verdict.TRANSIENT, reason=f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            # Anything else the client or transport raises is not a verdict on the batch: keep it and try again.
            logger.exception("posting a batch failed unexpectedly")
            return Answer(Verdict.TRANSIENT, reason=f"{type(exc).__name__}: {exc}")
        return read_answer(response)


def _gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(level=6, wbits=31)  # wbits=31: a gzip member, as Content-Encoding: gzip means
    return compressor.compress(body) + compressor.flush()
