"""The pipeline's refusals as RFC 9457 problem details, on Litestar's problem-details plugin.

    Problem                       a ProblemDetailsException: status, stable `type` slug, a sentence, extra members
    ├── BadRequest                400 file-missing, run-already-generated, ...
    ├── Forbidden                 403 reference-images-disabled
    ├── NotFound                  404 run-not-found, faults-disabled
    ├── PayloadTooLarge           413 image-too-large
    ├── UnsupportedMediaType      415 image-unsupported-type
    ├── InvalidInput              422 invalid-role, image-corrupt, image-rejected, unknown-reference-images, ...
    └── ServiceUnavailable        503 vision-unavailable, storage-unavailable, generation-failed

``problem_details()`` is the app's plugin: it answers these, Litestar's own refusals (a body of the wrong shape, a
malformed or oversized body, an unknown route) and unexpected errors alike as ``application/problem+json``. The
``type`` URIs are in the control plane's problem namespace, so a client of both switches on one set of slugs.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import ProblemDetailsConfig, ProblemDetailsException, ProblemDetailsPlugin

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_TYPE_BASE",
    "BadRequest",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "Problem",
    "ServiceUnavailable",
    "UnsupportedMediaType",
    "problem_details",
]

PROBLEM_TYPE_BASE = "https://controlplane.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
logger = logging.getLogger(__name__)

# Litestar's own refusals in this app, by status, with the slug a client can switch on.
_HTTP_SLUGS = {
    400: ("malformed-request", "Malformed request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


class Problem(ProblemDetailsException):
    """A refusal the caller can act on: an HTTP status, a stable slug, a sentence and optional extra members."""

    status_code = 400
    summary: ClassVar[str] = "Bad request"

    def __init__(self, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail=detail, extra=extra, type_=PROBLEM_TYPE_BASE + slug, title=self.summary)
        self.slug = slug
        self.extra: dict[str, Any] = extra

    def __str__(self) -> str:
        return self.detail

    def to_response(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        """The RFC 9457 body, its ``instance`` the request's path."""
        body: dict[str, Any] = {
            "type": self.type_,
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
            "instance": self.instance or request.url.path,
            **self.extra,
        }
        return Response(body, status_code=self.status_code, media_type=PROBLEM_MEDIA_TYPE, headers=self.headers)


class BadRequest(Problem):
    """The request cannot be used as sent (a multipart field missing, a run already generated)."""

    status_code = 400
    summary = "Bad request"


class Forbidden(Problem):
    """The caller may not do this now (the flag is off for them)."""

    status_code = 403
    summary = "Forbidden"


class NotFound(Problem):
    """The named run does not exist, or fault injection is off."""

    status_code = 404
    summary = "Not found"


class Conflict(Problem):
    """Another request is doing the same thing to the same run right now."""

    status_code = 409
    summary = "Conflict"


class PayloadTooLarge(Problem):
    """The image is over the upload limit."""

    status_code = 413
    summary = "Payload too large"


class UnsupportedMediaType(Problem):
    """The bytes are not an image type the pipeline takes."""

    status_code = 415
    summary = "Unsupported media type"


class InvalidInput(Problem):
    """The request is readable but its content is not acceptable."""

    status_code = 422
    summary = "Unprocessable content"


class ServiceUnavailable(Problem):
    """A dependency (Vision, the bucket) failed; retrying later may work. Nothing was stored."""

    status_code = 503
    summary = "Service unavailable"


class _Unexpected(Problem):
    """An error nothing expected; logged with the request it broke when it is answered."""

    status_code = 500
    summary = "Internal server error"

    def to_response(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        # The conversion sees only the error; the request is known here, so the log line is written here.
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=self.__cause__)
        return super().to_response(request)


def _from_validation(error: ValidationException) -> Problem:
    # Litestar reports well-formed JSON of the wrong shape as a ValidationException: that is 422, not 400.
    errors = error.extra if isinstance(error.extra, list) else []
    detail = "; ".join(str(item.get("message", item)) if isinstance(item, dict) else str(item) for item in errors)
    return InvalidInput("invalid-body", detail or error.detail, errors=errors)


def _from_http(error: HTTPException) -> Problem:
    slug, title = _HTTP_SLUGS.get(error.status_code, ("http-error", "HTTP error"))
    problem = Problem(slug, error.detail)
    problem.status_code, problem.title, problem.headers = error.status_code, title, error.headers
    if isinstance(error.extra, dict):
        problem.extra = dict(error.extra)
    return problem


def _from_unexpected(error: Exception) -> Problem:
    problem = _Unexpected("internal-error", "the pipeline failed to handle this request; nothing was changed")
    problem.__cause__ = error
    return problem


def problem_details() -> ProblemDetailsPlugin:
    """The plugin that answers every refusal and failure of the app as problem details."""
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                ValidationException: _from_validation,
                HTTPException: _from_http,
                Exception: _from_unexpected,
            }
        )
    )
