"""Serve the app under uvicorn in a background thread: for tests, benchmarks and embedding in another process."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from litestar import Litestar

__all__ = ["loopback_listener", "serve_in_thread"]

SERVER_START_TIMEOUT_SECONDS = 15.0


def loopback_listener() -> socket.socket:
    """A TCP socket bound to a free loopback port, not yet listening."""
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and without
    # it Nagle's algorithm adds ~40 ms to every small response.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.bind(("127.0.0.1", 0))
    return listener


@contextmanager
def serve_in_thread(
    app: Litestar, listener: socket.socket | None = None, *, http: type[asyncio.Protocol] | str = "auto"
) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server on a free loopback port (or on ``listener``, a socket already bound
    with ``loopback_listener``, when its address had to be known before the app was made); yield its base URL.

    ``http`` is uvicorn's HTTP protocol: its own choice by default, or a class such as
    ``controlplane.api.connections.RecyclingHttpToolsProtocol`` (what `controlplane serve` runs)."""
    listener = listener or loopback_listener()
    port: int = listener.getsockname()[1]
    config = uvicorn.Config(
        # Open event streams never end by themselves: give them a second to close at shutdown, then cut them.
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        http=http,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # The socket is bound before uvicorn starts, so no other process can take the port in between.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        while not server.started:
            # A bounded wait for a real server to bind; nothing here measures time.
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited before it started serving")
            if time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start within {SERVER_START_TIMEOUT_SECONDS}s")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_START_TIMEOUT_SECONDS)
        listener.close()
    if thread.is_alive():
        raise RuntimeError("uvicorn did not shut down")
