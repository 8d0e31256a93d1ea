"""HTTP/1.1 connections recycled after a number of requests, so processes sharing a listening socket even out.

Several uvicorn workers accept from one socket. Keep-alive clients that connect in a burst (a load generator, every
emitter reconnecting after a deploy) are often all accepted by one worker, which then serves them for as long as
they stay connected while the others idle. Ending a connection after a number of requests, as nginx
`keepalive_requests` and Envoy `max_requests_per_connection` do, makes clients reconnect, and the worker that is
least busy accepts first. The limit is ``CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from controlplane.settings import Settings

__all__ = ["PROTOCOL_IMPORT_STRING", "RecyclingHttpToolsProtocol", "ends_connection", "limit_from_environment"]

#: How uvicorn is told to use the protocol in a process of its own (`--http`, or ``http=`` with workers).
PROTOCOL_IMPORT_STRING = f"{__name__}:RecyclingHttpToolsProtocol"


def ends_connection(served: int, limit: int) -> bool:
    """Whether the ``served``-th request of a connection (counted from 1) is its last; a ``limit`` of 0: never."""
    return limit > 0 and served >= limit


def limit_from_environment(environ: Mapping[str, str] | None = None) -> int:
    """``CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION`` as Settings reads and checks it (the process environment
    when ``environ`` is None)."""
    return Settings.from_env(environ).http_max_requests_per_connection


@functools.cache
def _configured_limit() -> int:
    # Once per process: uvicorn makes a protocol per connection, and the environment does not change meanwhile.
    return limit_from_environment()


class RecyclingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that answers a connection's last allowed request with `connection: close`.

    uvicorn loads it by import string (``--http controlplane.api.connections:RecyclingHttpToolsProtocol``) in each
    worker process, so it reads its limit from the environment, once per process; ``limited_to`` makes a class
    with a limit given in code. The response that ends a connection is served whole: a server-sent event stream is
    one request and runs to its end, and only then is the connection closed.
    """

    #: Requests per connection; None: the environment's ``CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION``.
    max_requests: ClassVar[int | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limit = _configured_limit() if self.max_requests is None else self.max_requests
        self._served = 0

    @classmethod
    def limited_to(cls, max_requests: int) -> type[RecyclingHttpToolsProtocol]:
        """This protocol with ``max_requests`` requests per connection (0: never close), whatever the environment."""
        if max_requests < 0:
            raise ValueError(f"max_requests must be 0 (never close) or positive, got {max_requests}")
        return type(f"{cls.__name__}{max_requests}", (cls,), {"max_requests": max_requests})

    def on_headers_complete(self) -> None:
        """Start the request as uvicorn does; on the connection's last allowed one, say it closes after it."""
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is before:
            # No request started: a WebSocket upgrade hands the connection to another protocol, which owns it.
            return
        self._served += 1
        if ends_connection(self._served, self._limit):
            # uvicorn then sends `connection: close` with this response and closes the connection once the
            # response is complete; a client that pipelined more requests sends them again on a new connection
            # (RFC 9112 section 9.3.2).
            self.cycle.keep_alive = False
