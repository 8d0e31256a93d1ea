"""HTTP/1.1 connections recycled after a number of requests or an age, so processes sharing a socket even out.

Several uvicorn workers accept from one socket. Keep-alive clients that connect in a burst (a load generator, every
emitter reconnecting after a deploy) are often all accepted by one worker, which then serves them for as long as
they stay connected while the others idle. Ending a connection after a number of requests (nginx
`keepalive_requests`, Envoy `max_requests_per_connection`) or once it is old enough (gRPC `MAX_CONNECTION_AGE`,
Envoy `max_connection_duration`) makes clients reconnect, and the worker that is least busy accepts first. The age
matters for clients that send a request now and then (an emitter flushing a batch every few seconds): a count alone
would keep their connections for minutes. The limits are ``CONTROLPLANE_HTTP_MAX_REQUESTS_PER_CONNECTION`` and
``CONTROLPLANE_HTTP_CONNECTION_MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from controlplane.settings import Settings

__all__ = [
    "PROTOCOL_IMPORT_STRING",
    "ConnectionLimits",
    "RecyclingHttpToolsProtocol",
    "ends_connection",
    "limits_from_environment",
]

#: How uvicorn is told to use the protocol in a process of its own (`--http`, or ``http=`` with workers).
PROTOCOL_IMPORT_STRING = f"{__name__}:RecyclingHttpToolsProtocol"


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """When a keep-alive connection ends: after ``max_requests`` requests, or at its first request once it is
    ``max_age_seconds`` old; 0 leaves that limit out."""

    max_requests: int
    max_age_seconds: float

    def __post_init__(self) -> None:
        if self.max_requests < 0 or not self.max_age_seconds >= 0:
            raise ValueError(f"connection limits must be 0 (no limit) or positive, got {self}")

    @classmethod
    def of(cls, settings: Settings) -> ConnectionLimits:
        """The limits the settings name."""
        return cls(settings.http_max_requests_per_connection, settings.http_connection_max_age_seconds)


def ends_connection(served: int, age: float, limits: ConnectionLimits) -> bool:
    """Whether the ``served``-th request of a connection (counted from 1), starting ``age`` seconds after the
    connection opened, is its last."""
    return (limits.max_requests > 0 and served >= limits.max_requests) or (
        limits.max_age_seconds > 0 and age >= limits.max_age_seconds
    )


def limits_from_environment(environ: Mapping[str, str] | None = None) -> ConnectionLimits:
    """The limits as Settings reads and checks them (the process environment when ``environ`` is None)."""
    return ConnectionLimits.of(Settings.from_env(environ))


@functools.cache
def _configured_limits() -> ConnectionLimits:
    # Once per process: uvicorn makes a protocol per connection, and the environment does not change meanwhile.
    return limits_from_environment()


class RecyclingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that answers a connection's last request with `connection: close`.

    uvicorn loads it by import string (``--http controlplane.api.connections:RecyclingHttpToolsProtocol``) in each
    worker process, so it reads its limits from the environment, once per process; ``limited_to`` makes a class
    with limits given in code. The response that ends a connection is served whole: a server-sent event stream is
    one request and runs to its end, and only then is the connection closed.
    """

    #: The limits; None: the environment's.
    limits: ClassVar[ConnectionLimits | None] = None
    #: Seconds on a monotonic clock: a connection's age.
    clock: ClassVar[Callable[[], float]] = time.monotonic

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = _configured_limits() if self.limits is None else self.limits
        self._opened = type(self).clock()
        self._served = 0

    @classmethod
    def limited_to(
        cls, limits: ConnectionLimits, clock: Callable[[], float] | None = None
    ) -> type[RecyclingHttpToolsProtocol]:
        """This protocol with ``limits`` whatever the environment (and ``clock`` for connection ages)."""
        namespace: dict[str, Any] = {"limits": limits}
        if clock is not None:
            namespace["clock"] = staticmethod(clock)
        return type(f"{cls.__name__}Limited", (cls,), namespace)

    def on_headers_complete(self) -> None:
        """Start the request as uvicorn does; on the connection's last one, say it closes after it."""
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is before:
            # No request started: a WebSocket upgrade hands the connection to another protocol, which owns it.
            return
        self._served += 1
        if ends_connection(self._served, type(self).clock() - self._opened, self._limits):
            # uvicorn then sends `connection: close` with this response and closes the connection once the
            # response is complete; a client that pipelined more requests sends them again on a new connection
            # (RFC 9112 section 9.3.2).
            self.cycle.keep_alive = False
