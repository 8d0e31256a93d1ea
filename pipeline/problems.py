"""The pipeline's refusals, as RFC 9457 problem details (the control plane's error types and handlers, reused)."""

from __future__ import annotations

from controlplane.errors import BadRequest, DomainError, InvalidInput, NotFound, PayloadTooLarge

__all__ = [
    "BadRequest",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "UnsupportedMediaType",
]


class Forbidden(DomainError):
    """The caller may not do this now (the flag is off for them)."""

    status_code = 403
    title = "Forbidden"


class UnsupportedMediaType(DomainError):
    """The bytes are not an image type the pipeline takes."""

    status_code = 415
    title = "Unsupported media type"


class ServiceUnavailable(DomainError):
    """A dependency (Vision, the bucket) failed; retrying later may work. Nothing was stored."""

    status_code = 503
    title = "Service unavailable"
