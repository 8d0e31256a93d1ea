"""A uvicorn server in a thread that can be stopped and started again on the same port: a control plane restart."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from litestar import Litestar

__all__ = ["RestartableServer"]

START_TIMEOUT_SECONDS = 15.0


def _listener(port: int) -> socket.socket:
    # IPPROTO_TCP named so asyncio sets TCP_NODELAY (as controlplane.embedded does); SO_REUSEADDR so the port can
    # be bound again at once after a stop, with the old connections still in TIME_WAIT.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    return listener


class RestartableServer:
    """Serves a fresh app from ``make_app`` on one loopback port each time it is started."""

    def __init__(self, make_app: Callable[[], Litestar]) -> None:
        self._make_app = make_app
        self._socket: socket.socket | None = _listener(0)
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve a new app on the port; return once it accepts connections."""
        listener = self._socket or _listener(self.port)
        self._socket = listener
        config = uvicorn.Config(
            self._make_app(),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn-restartable")
        thread.start()
        self._server, self._thread = server, thread
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started:  # a bounded wait for the server to bind; nothing measures time here
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and close the port: connections are refused until the next ``start``."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(START_TIMEOUT_SECONDS)
            if self._thread.is_alive():
                raise RuntimeError("uvicorn did not shut down")
        self._server = self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> RestartableServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
