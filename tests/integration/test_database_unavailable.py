"""A database that fails under a request (down, restarting, unreachable, out of connections) is answered 503
`database-unavailable` with Retry-After, as problem details: something to retry, not a 500."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from controlplane.api.problems import DATABASE_RETRY_AFTER_SECONDS
from controlplane.flags import service

LOST = OperationalError("SELECT flags.key FROM flags", {}, Exception("server closed the connection unexpectedly"))


@pytest.mark.parametrize(
    "error",
    [LOST, InterfaceError("SELECT 1", {}, Exception("connection already closed")), PoolTimeout("QueuePool limit")],
    ids=["operational", "interface", "pool-timeout"],
)
def test_a_lost_database_answers_503_with_retry_after(
    client: TestClient[Litestar], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def lost(*_: Any) -> Any:
        raise error

    monkeypatch.setattr(service, "list_flags", lost)

    response = client.get("/api/v1/flags", headers=admin_headers)

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["type"].endswith("/database-unavailable")
    assert (body["status"], body["instance"]) == (503, "/api/v1/flags")
    assert "retry after the seconds in Retry-After" in body["detail"]
    assert "server closed" not in body["detail"]  # what the driver said stays in the log


def test_the_service_answers_again_once_the_database_does(
    client: TestClient[Litestar], admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(*_: Any) -> Any:
        raise LOST

    with monkeypatch.context() as patched:
        patched.setattr(service, "list_flags", lost)
        assert client.get("/api/v1/flags", headers=admin_headers).status_code == 503
    assert client.get("/api/v1/flags", headers=admin_headers).status_code == 200  # no restart needed
