"""Domain errors and their RFC 9457 problem-details form.

    DomainError                      (status, stable `type` slug)
    ├── BadRequest                   400 invalid-json, invalid-encoding
    ├── NotFound                     404 flag-not-found, environment-not-found, token-not-found, ...
    ├── Conflict                     409 stale-revision, illegal-transition, promotion-order, rollout-in-progress
    ├── InvalidInput                 422 invalid-definition, invalid-flag, invalid-query
    ├── PayloadTooLarge              413 batch-too-large
    └── PreconditionRequired         428 revision-required

Services raise these; `problem_response` turns any of them (and Litestar's own HTTP errors) into
`application/problem+json` with a `type` URI that clients can switch on.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "PROBLEM_TYPE_BASE",
    "BadRequest",
    "Conflict",
    "DomainError",
    "InvalidInput",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionRequired",
    "problem_type",
]

PROBLEM_TYPE_BASE = "https://controlplane.dev/problems/"


def problem_type(slug: str) -> str:
    """The stable `type` URI of a problem."""
    return PROBLEM_TYPE_BASE + slug


class DomainError(Exception):
    """A refusal the caller can act on: an HTTP status, a stable slug, a sentence and optional details."""

    status_code = 400
    title = "Bad request"

    def __init__(self, slug: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 body of this error."""
        body: dict[str, Any] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class NotFound(DomainError):
    """The named flag, environment, token or rollout does not exist."""

    status_code = 404
    title = "Not found"


class Conflict(DomainError):
    """The request is well-formed but the current state refuses it."""

    status_code = 409
    title = "Conflict"


class InvalidInput(DomainError):
    """The request is well-formed JSON but its content is not acceptable."""

    status_code = 422
    title = "Unprocessable content"


class PreconditionRequired(DomainError):
    """The operation needs the revision the caller last saw."""

    status_code = 428
    title = "Precondition required"


class BadRequest(DomainError):
    """The request cannot be read at all (not JSON, bad encoding)."""

    status_code = 400
    title = "Bad request"


class PayloadTooLarge(DomainError):
    """The request is over a configured size limit."""

    status_code = 413
    title = "Payload too large"
