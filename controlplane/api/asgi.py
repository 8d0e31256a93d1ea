"""A route answered straight from ASGI: its handler declares and documents it, a function of ``(scope, receive,
send)`` answers it.

``@post(..., middleware=[answered_by(endpoint)])`` keeps everything Litestar does for the route before it is reached
(the app's middlewares, routing, path parameters, OPTIONS and 405, the OpenAPI document) and everything it does
around an answer (its exception handlers, so a refusal is problem details; the route's guards), and skips what the
hottest route pays for and does not need: a `Request`, parameter parsing and a rendered `Response`.
The endpoint reads what it needs with :func:`header` and :func:`read_body`.

What such a route does not get, since its handler never runs: the ``before_request``, ``after_request`` and
``after_response`` hooks (the app's only one, OPTIONS answering, never sees a POST), dependencies and response
caching. A route that needs them stays an ordinary handler.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers import HTTPRouteHandler

# Litestar's exception-handling middleware, as it wraps every route (its public module does not export it); pinned
# by litestar<3 in pyproject.toml.
from litestar.middleware._internal.exceptions import ExceptionHandlerMiddleware
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

__all__ = ["ASGIEndpoint", "answered_by", "header", "read_body"]

#: What answers a route: called with the route's scope once its guards have let the request through.
ASGIEndpoint = Callable[[HTTPScope, Receive, Send], Awaitable[None]]


class _Endpoint:
    """The route's guards, then the endpoint."""

    __slots__ = ("_endpoint",)

    def __init__(self, endpoint: ASGIEndpoint) -> None:
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: Any = scope["route_handler"]
        guards = handler.resolve_guards()
        if guards:
            connection: ASGIConnection[Any, Any, Any, Any] = ASGIConnection(scope, receive=receive)
            # What `authorize_connection` does, but with the registered handler itself: Litestar hands each guard a
            # fresh copy of the handler, a cost of every request that no guard here needs (they only read it).
            for guard in guards:
                await guard(connection, handler)
        await self._endpoint(scope, receive, send)  # type: ignore[arg-type]


def answered_by(endpoint: ASGIEndpoint) -> Callable[[ASGIApp], ASGIApp]:
    """A route handler's middleware that answers the route with ``endpoint`` after the route's guards, with the
    app's exception handlers around both (the handler's own function is never called)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        return ExceptionHandlerMiddleware(app=_Endpoint(endpoint), debug=None)

    return middleware


def header(scope: HTTPScope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower-case, as ASGI servers give names), without building `Headers`."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def read_body(scope: HTTPScope, receive: Receive) -> bytes:
    """The whole request body, refused as `Request.body()` refuses it: 413 when the announced or the received size
    is over the route's `request_max_body_size`, 400 for an unreadable `Content-Length`, 500 when the client goes
    away mid-body."""
    handler = cast(HTTPRouteHandler, scope["route_handler"])
    maximum = handler.resolve_request_max_body_size() or math.inf
    announced = header(scope, b"content-length")
    if announced is not None:
        try:
            size = int(announced)
        except ValueError:
            raise ClientException(f"Invalid content-length: {announced!r}") from None
        if size > maximum:
            raise RequestEntityTooLarge
    chunks: list[bytes] = []
    received = 0
    while True:
        event: Any = await receive()
        if event["type"] == "http.request":
            chunk: bytes = event.get("body", b"")
            if chunk:
                received += len(chunk)
                if received > maximum:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not event.get("more_body", False):
                break
        elif event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
