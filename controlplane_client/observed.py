"""Observe every HTTP request an ASGI app answers: its scope (route template, state), status and duration.

The one request observer of the server (its `/metrics` HTTP counters) and of an application (the pipeline's
`http_request` events): a subclass says what to do with each request in ``observe``. Plain ASGI, no framework:
Litestar puts the matched route's template in ``scope["path_template"]``, which keeps labels bounded.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["ASGIApp", "ObservedRequests", "Scope"]

#: ASGI's callables, loosely typed: each framework narrows the scope and messages in its own way.
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Receive, Send], Awaitable[None]]


class ObservedRequests:
    """ASGI middleware that sees every HTTP request's status and duration; subclasses say what to do with them."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Called once per HTTP request, after its response (500 when it raised before answering)."""
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observe(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, observe)
        finally:
            self.observe(scope, status, time.perf_counter() - started)
