"""Keep-alive connections recycled after a number of requests or an age: the control plane on a real uvicorn server
with the HTTP protocol `controlplane serve` runs (``RecyclingHttpToolsProtocol``), counted by the client's port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
from litestar import Litestar

from controlplane.api.connections import ConnectionLimits, RecyclingHttpToolsProtocol
from controlplane.api.roles import Role
from controlplane.embedded import serve_in_thread
from controlplane.evaluation.controller import STREAM_PATH
from tests.integration.test_evaluation_stream import (
    BOOLEAN,
    ENVIRONMENT,
    STREAM_DEADLINE_SECONDS,
    configure,
    create_flags,
    next_notice,
)

LIMIT = 3
TIMEOUT_SECONDS = 10.0


def get_over(client: httpx.Client, path: str, headers: Mapping[str, str] | None = None) -> tuple[httpx.Response, int]:
    """GET ``path``; the response and the client-side port of the connection it came over."""
    with client.stream("GET", path, headers=headers) as response:
        # Read before the body: a response that says `connection: close` has its connection closed once read.
        port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
        response.read()
    return response, port


def exchange(connection: socket.socket, request: bytes) -> bytes:
    """Send one request on a raw connection and read its whole response (headers and a Content-Length body)."""
    connection.sendall(request)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        assert chunk, f"the connection ended mid-response: {received!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, "the connection ended mid-body"
        body += chunk
    return head


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def test_a_keep_alive_connection_says_close_on_its_nth_answer_and_the_next_request_takes_a_new_one(
    app: Litestar,
) -> None:
    protocol = RecyclingHttpToolsProtocol.limited_to(ConnectionLimits(LIMIT, 0))
    with serve_in_thread(app, http=protocol) as base, httpx.Client(base_url=base, timeout=TIMEOUT_SECONDS) as client:
        # /readyz reads the database: real requests on each backend, not only a constant answer.
        answers = [get_over(client, "/readyz") for _ in range(2 * LIMIT + 1)]

    assert [response.status_code for response, _ in answers] == [200] * (2 * LIMIT + 1)
    closing = [number for number, (response, _) in enumerate(answers, 1) if response.headers.get("connection")]
    assert closing == [LIMIT, 2 * LIMIT]
    assert all(answers[number - 1][0].headers["connection"] == "close" for number in closing)
    ports = [port for _, port in answers]
    assert ports == [ports[0]] * LIMIT + [ports[LIMIT]] * LIMIT + [ports[2 * LIMIT]]
    assert len(set(ports)) == 3


def test_the_server_itself_closes_the_connection_after_the_last_answer(app: Litestar) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: control-plane\r\n\r\n"
    with (
        serve_in_thread(app, http=RecyclingHttpToolsProtocol.limited_to(ConnectionLimits(2, 0))) as base,
        socket.create_connection(address(base), timeout=TIMEOUT_SECONDS) as connection,
    ):
        first = exchange(connection, request)
        second = exchange(connection, request)
        ended = connection.recv(1)

    assert first.startswith(b"HTTP/1.1 200") and b"connection:" not in first.lower()
    assert second.startswith(b"HTTP/1.1 200") and b"\r\nconnection: close" in second.lower()
    assert ended == b""  # end of stream: the server closed it, unasked


def test_with_a_limit_of_0_one_connection_serves_every_request(app: Litestar) -> None:
    protocol = RecyclingHttpToolsProtocol.limited_to(ConnectionLimits(0, 0))
    with serve_in_thread(app, http=protocol) as base, httpx.Client(base_url=base, timeout=TIMEOUT_SECONDS) as client:
        answers = [get_over(client, "/readyz") for _ in range(25)]

    assert {response.status_code for response, _ in answers} == {200}
    assert not any("connection" in response.headers for response, _ in answers)
    assert len({port for _, port in answers}) == 1


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_connection_past_its_age_ends_at_its_next_request_however_few_it_served(app: Litestar) -> None:
    clock = Clock()
    protocol = RecyclingHttpToolsProtocol.limited_to(ConnectionLimits(0, 10.0), clock)
    with serve_in_thread(app, http=protocol) as base, httpx.Client(base_url=base, timeout=TIMEOUT_SECONDS) as client:
        young = [get_over(client, "/readyz") for _ in range(3)]
        clock.now += 9.999
        still_young, _ = get_over(client, "/readyz")
        clock.now += 0.001  # 10 s after the connection opened: this request is its last
        aged, aged_port = get_over(client, "/readyz")
        fresh = [get_over(client, "/readyz") for _ in range(2)]

    ports = [port for _, port in young]
    assert len(set(ports)) == 1 and not any("connection" in response.headers for response, _ in young)
    assert "connection" not in still_young.headers
    assert aged.headers["connection"] == "close" and aged_port == ports[0]
    # The new connection opened at the clock's present: young again.
    assert {port for _, port in fresh} == {fresh[0][1]} and fresh[0][1] != aged_port
    assert not any("connection" in response.headers for response, _ in fresh)


def test_an_event_stream_that_is_its_connections_last_request_runs_on_and_closes_only_when_it_ends(
    app: Litestar, make_token: Callable[..., str], admin_headers: dict[str, str]
) -> None:
    token = {"Authorization": f"Bearer {make_token(Role.EVALUATE, environment=ENVIRONMENT)}"}
    timeout = httpx.Timeout(TIMEOUT_SECONDS, read=STREAM_DEADLINE_SECONDS)
    with (
        serve_in_thread(app, http=RecyclingHttpToolsProtocol.limited_to(ConnectionLimits(2, 0))) as base,
        httpx.Client(base_url=base, timeout=TIMEOUT_SECONDS) as admin,
        httpx.Client(base_url=base, timeout=timeout) as subscriber,
    ):
        create_flags(admin, admin_headers, BOOLEAN)
        _, first_port = get_over(subscriber, "/healthz")  # the connection's first request; the stream is its last
        with subscriber.stream("GET", STREAM_PATH, headers=token) as stream:
            stream_port = stream.extensions["network_stream"].get_extra_info("client_addr")[1]
            lines = stream.iter_lines()
            current, _ = next_notice(lines)
            configure(admin, admin_headers, BOOLEAN, {"default_variant": "on"})
            changed, _ = next_notice(lines)
        _, after_port = get_over(subscriber, "/healthz")

    assert stream.status_code == 200
    assert stream_port == first_port  # the stream was the second request on its connection
    # Litestar's event-stream response carries its own `Connection: keep-alive`; uvicorn adds `close`, which wins
    # (RFC 9112 section 9.6): the client makes no further request on this connection.
    assert "close" in [token.strip() for token in stream.headers["connection"].split(",")]
    # Told to close, the stream still carried a change made after it started: the response was not cut.
    assert changed["type"] == "refetchEvaluation" and changed["revision"] > current["revision"]
    assert after_port != stream_port


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


class Upgraded(asyncio.Protocol):
    """A stand-in for uvicorn's WebSocket protocol: accepts the upgrade, then echoes what it receives."""

    def __init__(self, **_: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not derive from asyncio's

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.upgraded:
            self.upgraded = True
            self.transport.write(SWITCHED)
        else:
            self.transport.write(data)


class RecyclingWithWebSockets(RecyclingHttpToolsProtocol):
    """The recycling protocol, one request per connection, handing WebSocket upgrades to ``Upgraded``."""

    limits = ConnectionLimits(1, 0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ws_protocol_class = Upgraded


def test_a_websocket_upgrade_is_handed_over_uncounted_and_its_connection_stays_open() -> None:
    # The control plane has no WebSocket route (and `serve` no WebSocket library): this is uvicorn's hand-over alone.
    upgrade = (
        b"GET /socket HTTP/1.1\r\nHost: control-plane\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with (
        serve_in_thread(Litestar([]), http=RecyclingWithWebSockets) as base,
        socket.create_connection(address(base), timeout=TIMEOUT_SECONDS) as connection,
    ):
        connection.sendall(upgrade)
        switched = b""
        while b"\r\n\r\n" not in switched:
            chunk = connection.recv(4096)
            assert chunk, f"the connection ended: {switched!r}"
            switched += chunk
        echoes = []
        for message in (b"ping", b"pong"):
            connection.sendall(message)
            echoes.append(connection.recv(4096))

    # Not a request of the HTTP protocol: not counted (the limit of 1 would close it) and never a `connection: close`.
    assert switched.startswith(b"HTTP/1.1 101"), switched
    assert echoes == [b"ping", b"pong"]
