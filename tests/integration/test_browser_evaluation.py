"""Browser clients: the stream URL of OFREP's bulk answer opens with no header, and CORS for evaluation only.

A browser's EventSource cannot send `Authorization`, so the advertised URL carries a stream credential: it opens
that one environment's stream, and nothing else, until it expires. Browsers on configured origins may call OFREP
and the stream; the management API answers no CORS at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.api.problems import exception_handlers
from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth.guards import authorize
from controlplane.auth.stream_credentials import StreamCredentials
from controlplane.embedded import serve_in_thread
from controlplane.evaluation.controller import STREAM_PATH
from controlplane.settings import Settings, SettingsError
from tests.conftest import FakeClock, bearer, problem

ENVIRONMENT = "qa"
BULK_PATH = "/ofrep/v1/evaluate/flags"
FLAG = "checkout-v2"
ORIGIN = "http://127.0.0.1:8090"
TIMEOUT = httpx.Timeout(10.0, read=5.0)

Client = TestClient[Litestar]


@pytest.fixture
def token(make_token: Callable[..., str]) -> str:
    """An evaluate token scoped to ENVIRONMENT."""
    return make_token(Role.EVALUATE, environment=ENVIRONMENT)


@pytest.fixture
def flag(client: Client, admin_headers: dict[str, str]) -> None:
    """One boolean flag, on in ENVIRONMENT, in the in-process app."""
    create_flag(client, admin_headers)


def create_flag(client: httpx.Client | Client, admin_headers: dict[str, str]) -> None:
    """One boolean flag, on in ENVIRONMENT."""
    created = client.post(
        "/api/v1/flags",
        headers=admin_headers,
        json={"key": FLAG, "type": "boolean", "variants": {"on": True, "off": False}, "off_variant": "off"},
    )
    assert created.status_code == 201, created.text
    current = client.get(f"/api/v1/flags/{FLAG}/environments/{ENVIRONMENT}", headers=admin_headers).json()
    patched = client.patch(
        f"/api/v1/flags/{FLAG}/environments/{ENVIRONMENT}",
        headers={**admin_headers, "If-Match": str(current["revision"])},
        json={"enabled": True, "default_variant": "on"},
    )
    assert patched.status_code == 200, patched.text


def stream_url(client: httpx.Client | Client, token: str, **headers: str) -> str:
    """The SSE URL a bulk evaluation advertises to this token."""
    response = client.post(BULK_PATH, headers={**bearer(token), **headers}, json={"context": {"targetingKey": "u1"}})
    assert response.status_code == 200, response.text
    streams: list[dict[str, Any]] = response.json()["eventStreams"]
    assert [stream["type"] for stream in streams] == ["sse"]
    url: str = streams[0]["url"]
    return url


def credential_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["credential"][0]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def first_notice(lines: Iterator[str]) -> dict[str, Any]:
    for line in lines:
        if line.startswith("data:"):
            notice: dict[str, Any] = json.loads(line.removeprefix("data:"))
            return notice
    raise AssertionError("the event stream ended")


def refused(response: httpx.Response, reason: str) -> None:
    body = problem(response, 401, "unauthenticated")
    assert body["reason"] == reason, body


# --- the stream credential ------------------------------------------------------------------------------------------


def test_the_advertised_stream_url_opens_the_tokens_environment_without_any_header(
    live_server: str, token: str, admin_headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=live_server, timeout=TIMEOUT) as http:
        create_flag(http, admin_headers)
        url = stream_url(http, token)
        assert urlsplit(url).path == STREAM_PATH
        assert url.startswith(live_server)

        with http.stream("GET", url) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            notice = first_notice(stream.iter_lines())

    assert (notice["type"], notice["environment"]) == ("refetchEvaluation", ENVIRONMENT)


def test_a_stream_opened_with_a_credential_ends_when_the_credential_expires_and_asks_for_a_quick_retry(
    settings: Settings, engine: Engine, token: str, admin_headers: dict[str, str]
) -> None:
    # The system clock: the stream ends in real time. A 2 s lifetime: a credential lives 1-2 s.
    app = create_app(replace(settings, stream_credential_seconds=2.0), engine=engine)
    with serve_in_thread(app) as base_url, httpx.Client(base_url=base_url, timeout=TIMEOUT) as http:
        create_flag(http, admin_headers)
        url = stream_url(http, token)
        expires_at = app.state.stream_credentials.verify(credential_of(url), now=time.time()).expires_at

        with http.stream("GET", url) as stream:
            assert stream.status_code == 200
            lines = list(stream.iter_lines())  # to the end: the server closes the stream
        ended_at = time.time()
        again = http.get(path_of(url))

    assert "retry: 500" in lines
    assert first_notice(iter(lines))["environment"] == ENVIRONMENT
    assert expires_at <= ended_at < expires_at + 1.0, (expires_at, ended_at)
    # The browser's reconnection is refused, which sends the provider back to the bulk evaluation for a new URL.
    refused(again, "stream-credential-expired")


@pytest.mark.usefixtures("flag")
def test_the_same_url_is_advertised_within_a_window_so_the_client_keeps_its_stream(client: Client, token: str) -> None:
    assert stream_url(client, token) == stream_url(client, token)


@pytest.mark.usefixtures("flag")
def test_the_credential_is_refused_for_another_environment(client: Client, token: str) -> None:
    url = stream_url(client, token)

    refused(client.get(path_of(url), headers={"X-Environment": "production"}), "stream-credential-environment")


@pytest.mark.usefixtures("flag")
def test_an_admin_evaluating_one_environment_gets_a_credential_for_that_environment_only(
    client: Client, admin_headers: dict[str, str]
) -> None:
    admin_token = admin_headers["Authorization"].removeprefix("Bearer ")
    url = stream_url(client, admin_token, **{"X-Environment": ENVIRONMENT})

    refused(client.get(path_of(url), headers={"X-Environment": "staging"}), "stream-credential-environment")
    # The credential is an evaluate grant, whoever asked for it: it opens no management route.
    refused(client.get(f"/api/v1/flags?credential={credential_of(url)}"), "stream-credential-wrong-route")


@pytest.mark.usefixtures("flag")
def test_the_credential_is_refused_once_expired_and_the_next_bulk_answer_is_a_200_with_a_fresh_url(
    client: Client, token: str, clock: FakeClock
) -> None:
    first = client.post(BULK_PATH, headers=bearer(token), json={"context": {"targetingKey": "u1"}})
    old_url = first.json()["eventStreams"][0]["url"]

    clock.advance(timedelta(seconds=Settings().stream_credential_seconds))
    expired = client.get(path_of(old_url))
    # The client comes back with its ETag: the credential's window is in it, so it gets a new URL, not a 304.
    again = client.post(
        BULK_PATH,
        headers={**bearer(token), "If-None-Match": first.headers["etag"]},
        json={"context": {"targetingKey": "u1"}},
    )

    refused(expired, "stream-credential-expired")
    assert again.status_code == 200, again.text
    new_url = again.json()["eventStreams"][0]["url"]
    assert new_url != old_url
    assert again.json()["flags"] == first.json()["flags"]


@pytest.mark.usefixtures("flag")
def test_after_a_restart_with_a_new_key_the_next_bulk_answer_is_a_200_with_a_url_that_opens(
    client: Client, token: str, settings: Settings, engine: Engine, clock: FakeClock
) -> None:
    body = {"context": {"targetingKey": "u1"}}
    first = client.post(BULK_PATH, headers=bearer(token), json=body)
    old_url = first.json()["eventStreams"][0]["url"]
    # No configured keys: the restarted process draws a new one, so the old URL no longer opens the stream.
    restarted_app = create_app(settings, engine=engine, clock=clock)

    with TestClient(restarted_app) as restarted:
        refused(restarted.get(path_of(old_url)), "stream-credential-bad-signature")
        again = restarted.post(BULK_PATH, headers={**bearer(token), "If-None-Match": first.headers["etag"]}, json=body)
        assert again.status_code == 200, again.text
        new_url = again.json()["eventStreams"][0]["url"]
        assert new_url != old_url
        # The new credential opens (the stream itself is read over a live server above); any refusal would be a 401.
        credentials = restarted_app.state.stream_credentials
        grant = credentials.verify(credential_of(new_url), now=clock().timestamp())
        assert grant.environment == ENVIRONMENT


@pytest.mark.usefixtures("flag")
def test_a_tampered_or_made_up_credential_is_refused(client: Client, token: str) -> None:
    credential = credential_of(stream_url(client, token))
    prefix, payload, signature = credential.split(".")
    forged_payload = payload[:-1] + ("A" if payload[-1] != "A" else "B")

    refused(
        client.get(f"{STREAM_PATH}?credential={prefix}.{forged_payload}.{signature}"), "stream-credential-bad-signature"
    )
    refused(client.get(f"{STREAM_PATH}?credential=cps1.nothing"), "stream-credential-malformed")
    refused(client.get(f"{STREAM_PATH}?credential={token}"), "stream-credential-malformed")


@pytest.mark.usefixtures("flag")
def test_the_credential_opens_no_other_route_in_the_query_or_as_a_bearer_token(client: Client, token: str) -> None:
    credential = credential_of(stream_url(client, token))
    body = {"context": {"targetingKey": "u1"}}

    for response in (
        client.post(f"{BULK_PATH}?credential={credential}", json=body),
        client.post(f"/ofrep/v1/evaluate/flags/{FLAG}?credential={credential}", json=body),
        client.get(f"/evaluation/v1/snapshot?credential={credential}"),
        client.get(f"/api/v1/flags?credential={credential}"),
        client.post(BULK_PATH, headers=bearer(credential), json=body),
        client.get("/evaluation/v1/snapshot", headers=bearer(credential)),
        client.get(STREAM_PATH, headers=bearer(credential)),
        client.get("/api/v1/flags", headers={"X-API-Key": credential}),
    ):
        refused(response, "stream-credential-wrong-route")


# --- CORS -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def cors_client(settings: Settings, engine: Engine, clock: FakeClock) -> Iterator[Client]:
    """The app with ORIGIN allowed to evaluate from the browser."""
    app = create_app(replace(settings, cors_allowed_origins=(ORIGIN,)), engine=engine, clock=clock)
    with TestClient(app) as test_client:
        yield test_client


def preflight(client: Client, path: str, origin: str = ORIGIN, method: str = "POST") -> httpx.Response:
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type,if-none-match",
        },
    )


@pytest.mark.parametrize(
    ("path", "method"),
    [
        (BULK_PATH, "POST"),
        (f"/ofrep/v1/evaluate/flags/{FLAG}", "POST"),
        (STREAM_PATH, "GET"),
        ("/evaluation/v1/snapshot", "GET"),
    ],
)
def test_a_preflight_to_evaluation_from_an_allowed_origin_is_answered_without_a_token(
    cors_client: Client, path: str, method: str
) -> None:
    response = preflight(cors_client, path, method=method)

    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = {header.strip() for header in response.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "if-none-match", "x-environment"} <= allowed
    assert method in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" in response.headers["vary"].lower()


@pytest.mark.usefixtures("flag")
def test_evaluation_from_an_allowed_origin_carries_cors_headers_and_exposes_the_etag(
    cors_client: Client, token: str
) -> None:
    response = cors_client.post(
        BULK_PATH, headers={**bearer(token), "Origin": ORIGIN}, json={"context": {"targetingKey": "u1"}}
    )

    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "etag" in response.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-credentials" not in response.headers
    # A refusal is readable by the page too, so it can tell a bad token from a network failure.
    anonymous = cors_client.post(BULK_PATH, headers={"Origin": ORIGIN}, json={})
    assert anonymous.status_code == 401
    assert anonymous.headers["access-control-allow-origin"] == ORIGIN


def test_another_origin_gets_no_cors_headers_from_evaluation(cors_client: Client) -> None:
    response = preflight(cors_client, BULK_PATH, origin="http://evil.example")

    assert response.status_code == 204
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("path", ["/api/v1/flags", "/api/v1/tokens", "/metrics"])
def test_the_management_api_answers_no_cors_even_to_an_allowed_origin(
    cors_client: Client, admin_headers: dict[str, str], path: str
) -> None:
    answered = preflight(cors_client, path, method="GET")
    read = cors_client.get(path, headers={**admin_headers, "Origin": ORIGIN})

    assert "access-control-allow-origin" not in answered.headers
    assert "access-control-allow-credentials" not in answered.headers
    assert read.status_code == 200
    assert "access-control-allow-origin" not in read.headers


def test_without_configured_origins_evaluation_answers_no_cors(client: Client) -> None:
    response = preflight(client, BULK_PATH)

    assert response.status_code == 204
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("origin", ["http://127.0.0.1:8090/", "127.0.0.1:8090", "http://app/path", "null", ""])
def test_an_allowed_origin_must_be_scheme_host_and_port(origin: str) -> None:
    with pytest.raises(SettingsError, match="CONTROLPLANE_CORS_ALLOWED_ORIGINS"):
        Settings(cors_allowed_origins=(origin,)).check()


def test_a_credential_grants_evaluate_only_even_on_a_route_that_would_take_it_for_a_higher_role() -> None:
    @get("/operate", opt={"role": Role.OPERATOR, "stream_credential": True}, sync_to_thread=False)
    def operate() -> str:
        return "operated"

    credentials = StreamCredentials(keys=(b"k" * 32,), lifetime_seconds=600.0)
    clock = FakeClock()
    app = Litestar(
        route_handlers=[operate],
        guards=[authorize],
        exception_handlers=exception_handlers,
        state=State({"settings": Settings(), "stream_credentials": credentials, "clock": clock}),
    )
    credential = credentials.mint(environment=ENVIRONMENT, token_id=1, token_name="web", now=clock().timestamp())

    with TestClient(app) as test_client:
        response = test_client.get(f"/operate?credential={credential}")

    assert problem(response, 403, "forbidden")["detail"].startswith("a stream credential grants `evaluate`")
