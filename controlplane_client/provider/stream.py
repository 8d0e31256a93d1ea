"""The watcher of the server-sent change stream: one daemon thread per provider, reconnecting after any failure.

The stream only says "refetch" (ADR-0008 style): a notice with a revision newer than the one held triggers a
conditional GET of the snapshot, and so does every reconnection (a 304 when nothing changed). Any stream line,
keep-alive comments included, counts as contact with the server; the server sends a keep-alive every 15 s, so the
provider's ``stale_after`` should stay above that.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

import httpx
import msgspec
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode

from controlplane_client.provider.sync import TRANSIENT, Refused, SnapshotSync

__all__ = ["STREAM_PATH", "StreamWatcher"]

logger = logging.getLogger(__name__)

# The route of controlplane.evaluation.controller, repeated here as clients do not import the server (Litestar).
STREAM_PATH = "/evaluation/v1/stream"
# The server's keep-alive interval (controller.KEEPALIVE_SECONDS): two missed in a row means the connection is dead.
STREAM_READ_TIMEOUT_SECONDS = 2 * 15.0
STREAM_TIMEOUT = httpx.Timeout(10.0, connect=5.0, read=STREAM_READ_TIMEOUT_SECONDS)
# Reading the stream, the thread wakes at once on shutdown; inside a snapshot request it finishes that first.
JOIN_TIMEOUT_SECONDS = 15.0


class _Notice(msgspec.Struct):
    """A stream message: `refetchEvaluation` with the environment's current revision."""

    type: str
    revision: int


class StreamWatcher:
    """Follows the change stream of the environment ``sync`` holds, refetching on notices, until ``stop``."""

    def __init__(self, sync: SnapshotSync, *, url: str, reconnect_delay: float) -> None:
        self._sync = sync
        self._url = url
        self._reconnect_delay = reconnect_delay
        self._lock = threading.Lock()  # guards the hand-over of the open stream between the thread and stop()
        self._stop = threading.Event()
        self._stream: httpx.Response | None = None
        self._thread: threading.Thread | None = None
        self._connected = False  # the stream is open: its loss is logged once per outage

    def start(self, *, back_off: bool) -> None:
        """Start the thread; with ``back_off`` it waits a reconnection delay first, then refetches."""
        self._thread = threading.Thread(
            target=self._follow, args=(back_off,), name="controlplane-provider-stream", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Wake the thread (shutting the open stream's socket down) and join it."""
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            _interrupt(stream)
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=JOIN_TIMEOUT_SECONDS)
            if thread.is_alive():
                logger.warning("the provider's stream thread did not stop in time; it exits after its request")

    def _follow(self, back_off: bool) -> None:
        """The background thread: read the change stream, refetch on notices, reconnect after any failure."""
        stop, sync = self._stop, self._sync
        if back_off and stop.wait(self._reconnect_delay):
            return
        # Right after a successful initialize the snapshot is fresh; after any failure it may not be.
        refetch = back_off
        while not stop.is_set():
            try:
                if refetch:
                    # Conditional (304 when unchanged); also keeps the provider current, by polling, on a network
                    # that breaks event streams.
                    sync.refetch(announce=True, accept_older=False)
                self._read_stream()
                cause = "the stream ended"
            except Refused as error:
                cause = str(error)
                if error.is_fatal:
                    # Not PROVIDER_FATAL here: the last known values keep being served (and go STALE) rather than the
                    # SDK switching every evaluation to code defaults because, say, a token was revoked too early.
                    message = f"the control plane refused the provider: {error}"
                    if sync.announce(ProviderEvent.PROVIDER_ERROR, message, ErrorCode.GENERAL):
                        logger.error("%s; retrying every %ss", message, self._reconnect_delay)
            except TRANSIENT as error:
                cause = str(error) or type(error).__name__
            except Exception as error:
                # The thread must survive anything, or the provider silently stops following changes.
                logger.exception("unexpected failure following the control plane stream")
                cause = repr(error)
            if stop.is_set():
                return
            refetch = True
            self._connection_lost(cause)
            if stop.wait(self._reconnect_delay):
                return

    def _connection_lost(self, cause: str) -> None:
        # One warning per outage, not one per reconnection attempt.
        if self._connected:
            logger.warning("lost the control plane at %s (%s); reconnecting", self._url, cause)
        else:
            logger.debug("control plane at %s still unreachable (%s)", self._url, cause)
        self._connected = False
        self._sync.announce_if_stale(cause)

    def _read_stream(self) -> None:
        sync, stop = self._sync, self._stop
        client = sync.client
        if client is None:
            return
        headers = {**sync.headers, "Accept": "text/event-stream"}
        with client.stream("GET", STREAM_PATH, headers=headers, timeout=STREAM_TIMEOUT) as response:
            if response.status_code != 200:
                response.read()
                raise Refused(response)
            with self._lock:
                if stop.is_set():
                    return
                self._stream = response
            try:
                self._connected = True
                sync.record_contact()
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    # Any line, keep-alive comments included, proves the server is there.
                    sync.record_contact()
                    if line.startswith("data:"):
                        self._on_notice(line.removeprefix("data:").strip())
            finally:
                with self._lock:
                    self._stream = None

    def _on_notice(self, data: str) -> None:
        try:
            notice = msgspec.json.decode(data, type=_Notice)
        except msgspec.DecodeError:
            logger.warning("ignoring an unreadable stream message: %.200s", data)
            return
        # Only a newer revision: a lagging replica behind a load balancer must not roll the client back.
        if notice.type == "refetchEvaluation" and notice.revision > self._sync.revision:
            self._sync.refetch(announce=True, accept_older=False)


def _interrupt(stream: httpx.Response) -> None:
    """Wake a thread blocked reading ``stream``: shut its socket down (closing it alone does not wake the read)."""
    network = stream.extensions.get("network_stream")
    sock = network.get_extra_info("socket") if network is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    else:
        with contextlib.suppress(Exception):
            stream.close()
