"""Every error leaves as RFC 9457 problem details (`application/problem+json`) with a stable `type`."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from controlplane.db import UNAVAILABLE
from controlplane.errors import Conflict, DomainError, InvalidInput, problem_type

__all__ = ["DATABASE_RETRY_AFTER_SECONDS", "PROBLEM_MEDIA_TYPE", "exception_handlers"]

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: What a client is told to wait when the database does not answer: about one connect timeout and a retry.
DATABASE_RETRY_AFTER_SECONDS = 5
logger = logging.getLogger(__name__)

# Litestar's own refusals, by status, with the slug a client can switch on.
_HTTP_SLUGS = {
    400: ("malformed-request", "Malformed request"),
    401: ("unauthenticated", "Unauthenticated"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("rate-limited", "Too many requests"),
}


def _problem(
    request: Request[Any, Any, Any], body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    body.setdefault("instance", request.url.path)
    return Response(content=body, status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _domain_error(request: Request[Any, Any, Any], error: DomainError) -> Response[Any]:
    return _problem(request, error.to_problem(request.url.path))


def _stale_data(request: Request[Any, Any, Any], error: StaleDataError) -> Response[Any]:
    # The ORM's optimistic check lost a race that the service's own revision check could not see yet.
    conflict = Conflict("stale-revision", "another change was committed first; read the current revision and retry")
    return _domain_error(request, conflict)


def _integrity(request: Request[Any, Any, Any], error: IntegrityError) -> Response[Any]:
    # Two requests created the same thing at once; the loser sees what a sequential request would have seen.
    conflict = Conflict("concurrent-change", "a concurrent request changed the same thing first; read and retry")
    return _domain_error(request, conflict)


def _data(request: Request[Any, Any, Any], error: DataError) -> Response[Any]:
    # The database refused a value the schema let through (a NUL character in text, say): bad input, not a crash.
    invalid = InvalidInput("invalid-value", "a value in the request cannot be stored (for example a NUL character)")
    return _domain_error(request, invalid)


def _validation(request: Request[Any, Any, Any], error: ValidationException) -> Response[Any]:
    # Litestar reports well-formed JSON of the wrong shape as a ValidationException: that is 422, not 400.
    errors = error.extra if isinstance(error.extra, list) else []
    detail = "; ".join(str(item.get("message", item)) if isinstance(item, dict) else str(item) for item in errors)
    body = {
        "type": problem_type("invalid-body"),
        "title": "Unprocessable content",
        "status": 422,
        "detail": detail or error.detail,
        "errors": errors,
    }
    return _problem(request, body)


def _http(request: Request[Any, Any, Any], error: HTTPException) -> Response[Any]:
    slug, title = _HTTP_SLUGS.get(error.status_code, ("http-error", "HTTP error"))
    headers = dict(error.headers or {})
    if isinstance(error, TooManyRequestsException):
        # RFC 9110: Retry-After in whole seconds; Litestar gives the window's reset as RateLimit-Reset.
        headers.setdefault("Retry-After", str(max(1, int(headers.get("RateLimit-Reset", "1")))))
    if isinstance(error, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="controlplane"')
    body: dict[str, Any] = {
        "type": problem_type(slug),
        "title": title,
        "status": error.status_code,
        "detail": error.detail,
    }
    if isinstance(error.extra, dict):
        body.update(error.extra)
    return _problem(request, body, headers)


def _database_unavailable(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    # The database is down, unreachable, restarting or out of connections: a unit of work rolls back when it raises,
    # and the same request later may well succeed. Something to retry, not a bug of ours: 503 with Retry-After,
    # logged without a traceback.
    logger.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(error).__name__)
    body = {
        "type": problem_type("database-unavailable"),
        "title": "Database unavailable",
        "status": HTTP_503_SERVICE_UNAVAILABLE,
        "detail": (
            "the control plane lost its database during this request; retry after the seconds in Retry-After "
            "(ingest batches, by batch id, and revision-checked changes are safe to send again)"
        ),
    }
    return _problem(request, body, {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    body = {
        "type": problem_type("internal-error"),
        "title": "Internal server error",
        "status": HTTP_500_INTERNAL_SERVER_ERROR,
        "detail": "the control plane failed to handle this request; nothing was changed",
    }
    return _problem(request, body)


exception_handlers: ExceptionHandlersMap = {
    DomainError: _domain_error,
    StaleDataError: _stale_data,
    IntegrityError: _integrity,
    DataError: _data,
    **dict.fromkeys(UNAVAILABLE, _database_unavailable),
    ValidationException: _validation,
    NotAuthorizedException: _http,
    PermissionDeniedException: _http,
    HTTPException: _http,
    Exception: _unexpected,
}
