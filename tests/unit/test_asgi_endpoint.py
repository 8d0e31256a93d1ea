"""A route answered straight from ASGI (controlplane.api.asgi): the route's guards, the app's exception handlers and
middlewares around it, its body read as `Request.body()` reads it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from litestar import Litestar, MediaType, Request, Response, post
from litestar.connection import ASGIConnection
from litestar.exceptions import (
    ClientException,
    InternalServerException,
    NotAuthorizedException,
    PermissionDeniedException,
)
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.handlers.base import BaseRouteHandler
from litestar.response.base import ASGIResponse
from litestar.testing import TestClient
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send

from controlplane.api.asgi import answered_by, header, read_body

LIMIT = 16


async def echo(scope: HTTPScope, receive: Receive, send: Send) -> None:
    """Answers the body, the `X-Name` header and what the guard left on the state."""
    body = await read_body(scope, receive)
    if body == b"fail":
        raise PermissionDeniedException(detail="refused by the endpoint")
    text = f"{header(scope, b'x-name')}|{scope['state'].get('seen')}|{body.decode()}"
    await ASGIResponse(body=text.encode(), media_type=MediaType.TEXT)(scope, receive, send)


async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    if connection.headers.get("x-name") == "nobody":
        raise NotAuthorizedException(detail="no name")
    connection.state.seen = handler.opt["label"]


@post("/echo", opt={"label": "route"}, guards=[guard], middleware=[answered_by(echo)], request_max_body_size=LIMIT)
async def documented() -> None:
    """Declares the route; never called."""
    raise AssertionError("the endpoint answers this route")


def problem(request: Request[Any, Any, Any], error: Exception) -> Response[dict[str, str]]:
    return Response({"handled": str(getattr(error, "detail", error))}, status_code=418)


def tagged(app: ASGIApp) -> ASGIApp:
    """An app middleware: marks every answer it passes on."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def marked(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], (b"x-outer", b"yes")]
            await send(message)

        await app(scope, receive, marked)

    return middleware


@pytest.fixture
def client() -> Any:
    app = Litestar([documented], middleware=[tagged], exception_handlers={Exception: problem})
    with TestClient(app) as test_client:
        yield test_client


def test_the_endpoint_answers_after_the_routes_guard_behind_the_apps_middlewares(client: TestClient[Any]) -> None:
    answer = client.post("/echo", content=b"hello", headers={"X-Name": "ada"})

    assert (answer.status_code, answer.text, answer.headers["x-outer"]) == (200, "ada|route|hello", "yes")


def test_refusals_of_the_guard_and_the_endpoint_go_through_the_apps_exception_handlers(client: TestClient[Any]) -> None:
    by_guard = client.post("/echo", content=b"hello", headers={"X-Name": "nobody"})
    by_endpoint = client.post("/echo", content=b"fail", headers={"X-Name": "ada"})
    too_large = client.post("/echo", content=b"x" * (LIMIT + 1), headers={"X-Name": "ada"})

    assert (by_guard.status_code, by_guard.json(), by_guard.headers["x-outer"]) == (418, {"handled": "no name"}, "yes")
    assert (by_endpoint.status_code, by_endpoint.json()) == (418, {"handled": "refused by the endpoint"})
    assert too_large.status_code == 418


def test_options_and_other_methods_are_still_litestars(client: TestClient[Any]) -> None:
    assert client.options("/echo").status_code == 204
    assert client.get("/echo").status_code == 418  # 405, through the app's handler


class _Route:
    """What read_body asks of the route handler in the scope."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def resolve_request_max_body_size(self) -> int | None:
        return self.limit


def _read(messages: list[Any], headers: list[tuple[bytes, bytes]], limit: int | None = LIMIT) -> bytes:
    pending = list(messages)

    async def receive() -> Any:
        return pending.pop(0)

    scope: Any = {"type": "http", "headers": headers, "route_handler": _Route(limit)}
    return asyncio.run(read_body(scope, receive))


def test_a_body_in_several_messages_is_read_whole() -> None:
    parts: list[Any] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd"},
    ]

    assert _read(parts, []) == b"abcd"
    assert _read([{"type": "http.request"}], []) == b""


def test_a_body_over_the_limit_is_refused_when_announced_or_when_received() -> None:
    small: list[Any] = [{"type": "http.request", "body": b"x"}]
    large: list[Any] = [
        {"type": "http.request", "body": b"x" * 10, "more_body": True},
        {"type": "http.request", "body": b"x" * 7},
    ]

    with pytest.raises(RequestEntityTooLarge):
        _read(small, [(b"content-length", str(LIMIT + 1).encode())])
    with pytest.raises(RequestEntityTooLarge):
        _read(large, [])
    assert _read(large, [], limit=None) == b"x" * 17


def test_an_unreadable_length_and_a_client_gone_mid_body_are_refused() -> None:
    with pytest.raises(ClientException):
        _read([{"type": "http.request", "body": b"x"}], [(b"content-length", b"ten")])
    with pytest.raises(InternalServerException):
        _read([{"type": "http.request", "body": b"x", "more_body": True}, {"type": "http.disconnect"}], [])


def test_a_header_is_its_first_value_by_lower_case_name() -> None:
    scope: Any = {"headers": [(b"x-environment", b"qa"), (b"x-environment", b"prod")]}

    assert header(scope, b"x-environment") == "qa"
    assert header(scope, b"authorization") is None
