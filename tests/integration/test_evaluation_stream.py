"""Change detection for evaluation clients: the bulk OFREP ETag, the snapshot ETag, and the server-sent event stream.

The bulk ETag covers the configuration revision AND the context (reference/flags.md §1: a config-only ETag answers
a wrong 304 after the context changes). The stream only says "refetch", carrying the new revision.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from controlplane.api.roles import Role
from controlplane.evaluation.controller import STREAM_PATH

ENVIRONMENT = "qa"
BULK_PATH = "/ofrep/v1/evaluate/flags"
SNAPSHOT_PATH = "/evaluation/v1/snapshot"
REQUEST_TIMEOUT_SECONDS = 10.0
#: The longest a change may take to reach an open stream.
STREAM_DEADLINE_SECONDS = 5.0

BOOLEAN = "checkout-v2"
NUMBER = "sample-ratio"
DISABLED = "legacy-search"
FLAGS: dict[str, dict[str, Any]] = {
    BOOLEAN: {"type": "boolean", "variants": {"on": True, "off": False}, "off_variant": "off"},
    NUMBER: {"type": "number", "variants": {"none": 0.0, "half": 0.5, "double": 2.0}, "off_variant": "none"},
    DISABLED: {
        "type": "string",
        "variants": {"classic": "classic-ui", "modern": "modern-ui"},
        "off_variant": "classic",
    },
}
STATES: dict[str, dict[str, Any]] = {
    BOOLEAN: {
        "enabled": True,
        "default_variant": "off",
        "rules": [
            {"name": "beta-testers", "when": [{"attribute": "plan", "op": "equals", "value": "beta"}], "variant": "on"}
        ],
    },
    NUMBER: {"enabled": True, "default_variant": "half"},
    DISABLED: {"enabled": False, "default_variant": "modern"},
}
BETA = {"targetingKey": "user-1", "plan": "beta", "country": "NL"}
FREE = {"targetingKey": "user-2", "plan": "free", "country": "NL"}

Client = TestClient[Litestar]


# --- helpers ------------------------------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def configure(http: httpx.Client, admin: Mapping[str, str], key: str, changes: dict[str, Any]) -> None:
    """PATCH a flag's state in ENVIRONMENT at its current revision."""
    current = http.get(f"/api/v1/flags/{key}/environments/{ENVIRONMENT}", headers=admin)
    assert current.status_code == 200, current.text
    patched = http.patch(
        f"/api/v1/flags/{key}/environments/{ENVIRONMENT}",
        headers={**admin, "If-Match": str(current.json()["revision"])},
        json=changes,
    )
    assert patched.status_code == 200, patched.text


def create_flags(http: httpx.Client, admin: Mapping[str, str], *keys: str) -> None:
    """The flags ``keys`` of FLAGS (all when none is named), in their STATES in ENVIRONMENT."""
    for key in keys or tuple(FLAGS):
        created = http.post("/api/v1/flags", headers=admin, json={"key": key, **FLAGS[key]})
        assert created.status_code == 201, created.text
        configure(http, admin, key, STATES[key])


def bulk(http: httpx.Client, token: str, context: Mapping[str, Any], etag: str | None = None) -> httpx.Response:
    headers = bearer(token) if etag is None else {**bearer(token), "If-None-Match": etag}
    return http.post(BULK_PATH, headers=headers, json={"context": dict(context)})


def evaluated(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """The flags of a bulk 200, by key; asserts the answer carries an ETag."""
    assert response.status_code == 200, response.text
    assert response.headers.get("etag"), response.headers
    return {flag["key"]: flag for flag in response.json()["flags"]}


def not_modified(response: httpx.Response, etag: str) -> None:
    """Assert a 304 with no body that repeats the ETag."""
    assert response.status_code == 304, response.text
    assert response.content == b""
    assert response.headers["etag"] == etag


def next_notice(lines: Iterator[str]) -> tuple[dict[str, Any], str | None]:
    """The next `data:` message of an event stream, decoded, and the `id:` sent with it."""
    event_id: str | None = None
    for line in lines:
        if line.startswith("id:"):
            event_id = line.removeprefix("id:").strip()
        elif line.startswith("data:"):
            notice: dict[str, Any] = json.loads(line.removeprefix("data:"))
            return notice, event_id
    raise AssertionError("the event stream ended")


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def token(make_token: Callable[..., str]) -> str:
    """An evaluate token scoped to ENVIRONMENT."""
    return make_token(Role.EVALUATE, environment=ENVIRONMENT)


@pytest.fixture
def given(client: Client, admin_headers: dict[str, str]) -> Callable[..., None]:
    """Create the named flags of FLAGS (all when none is named) in the in-process app."""
    return lambda *keys: create_flags(client, admin_headers, *keys)


@pytest.fixture
def http(live_server: str, admin_headers: dict[str, str]) -> Iterator[httpx.Client]:
    """Plain HTTP against the live server, with BOOLEAN in place."""
    with httpx.Client(base_url=live_server, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        create_flags(client, admin_headers, BOOLEAN)
        yield client


# --- bulk evaluation ------------------------------------------------------------------------------------------------


def test_bulk_evaluation_lists_every_flag_and_an_sse_stream_at_the_stream_path_with_its_credential(
    given: Callable[..., None], client: Client, token: str
) -> None:
    given()
    response = bulk(client, token, BETA)

    by_key = evaluated(response)
    assert set(by_key) == set(FLAGS)
    assert by_key[BOOLEAN] == {
        "key": BOOLEAN,
        "value": True,
        "variant": "on",
        "reason": "TARGETING_MATCH",
        "metadata": {"rule": "beta-testers"},
    }
    assert by_key[NUMBER] == {"key": NUMBER, "value": 0.5, "variant": "half", "reason": "STATIC"}
    assert by_key[DISABLED] == {"key": DISABLED, "value": "classic-ui", "variant": "classic", "reason": "DISABLED"}
    streams = response.json()["eventStreams"]
    assert len(streams) == 1, streams
    assert streams[0]["type"] == "sse"
    # The URL carries a stream credential: a browser's EventSource sends no header (tests/integration/
    # test_browser_evaluation.py).
    assert re.fullmatch(r"https?://[^/]+/evaluation/v1/stream\?credential=cps1\.[\w-]+\.[\w-]+", streams[0]["url"]), (
        streams
    )
    assert STREAM_PATH + "?" in streams[0]["url"]


def test_bulk_evaluation_answers_304_for_the_same_context_at_the_same_revision(
    given: Callable[..., None], client: Client, token: str
) -> None:
    given(BOOLEAN)
    etag = bulk(client, token, BETA).headers["etag"]

    same = bulk(client, token, BETA, etag)
    # The same context with its attributes in another order is the same context.
    reordered = bulk(client, token, dict(reversed(list(BETA.items()))), etag)
    among_others = bulk(client, token, BETA, f'"stale-1-0", {etag}')

    not_modified(same, etag)
    not_modified(reordered, etag)
    not_modified(among_others, etag)


def test_bulk_evaluation_answers_200_with_another_etag_when_the_context_changes(
    given: Callable[..., None], client: Client, token: str
) -> None:
    given(BOOLEAN)
    first = bulk(client, token, BETA)
    etag = first.headers["etag"]

    changed = bulk(client, token, FREE, etag)

    by_key = evaluated(changed)
    assert changed.headers["etag"] != etag
    # The new answer is the new context's: a config-only ETag would have answered 304 and kept `on`.
    assert (evaluated(first)[BOOLEAN]["variant"], by_key[BOOLEAN]["variant"]) == ("on", "off")
    not_modified(bulk(client, token, FREE, changed.headers["etag"]), changed.headers["etag"])


def test_bulk_evaluation_answers_200_with_another_etag_when_the_configuration_changes(
    given: Callable[..., None], client: Client, token: str, admin_headers: dict[str, str]
) -> None:
    given(NUMBER)
    before = bulk(client, token, FREE)
    etag = before.headers["etag"]

    configure(client, admin_headers, NUMBER, {"default_variant": "double"})
    after_state = bulk(client, token, FREE, etag)
    read = client.get(f"/api/v1/flags/{NUMBER}", headers=admin_headers).json()
    definition = client.patch(
        f"/api/v1/flags/{NUMBER}",
        headers={**admin_headers, "If-Match": str(read["revision"])},
        json={"variants": {"none": 0.0, "half": 0.5, "double": 4.5}},
    )
    assert definition.status_code == 200, definition.text
    after_definition = bulk(client, token, FREE, after_state.headers["etag"])

    assert evaluated(before)[NUMBER]["value"] == 0.5
    assert evaluated(after_state)[NUMBER]["value"] == 2.0
    assert evaluated(after_definition)[NUMBER]["value"] == 4.5
    etags = [etag, after_state.headers["etag"], after_definition.headers["etag"]]
    assert len(set(etags)) == 3, etags


# --- snapshot -------------------------------------------------------------------------------------------------------


def test_snapshot_etag_names_environment_and_revision_answers_304_and_changes_with_the_configuration(
    given: Callable[..., None], client: Client, token: str, admin_headers: dict[str, str]
) -> None:
    given()
    first = client.get(SNAPSHOT_PATH, headers=bearer(token))
    assert first.status_code == 200, first.text
    snapshot = first.json()
    etag = first.headers["etag"]

    assert etag == f'"{ENVIRONMENT}-{snapshot["revision"]}"'
    assert snapshot["environment"] == ENVIRONMENT
    assert {flag["key"] for flag in snapshot["flags"]} == set(FLAGS)
    not_modified(client.get(SNAPSHOT_PATH, headers={**bearer(token), "If-None-Match": etag}), etag)

    configure(client, admin_headers, BOOLEAN, {"enabled": False})
    changed = client.get(SNAPSHOT_PATH, headers={**bearer(token), "If-None-Match": etag})

    assert changed.status_code == 200, changed.text
    revision = changed.json()["revision"]
    assert revision > snapshot["revision"]
    assert changed.headers["etag"] == f'"{ENVIRONMENT}-{revision}"'
    assert next(flag for flag in changed.json()["flags"] if flag["key"] == BOOLEAN)["enabled"] is False


def test_snapshot_if_none_match_uses_the_weak_comparison(
    given: Callable[..., None], client: Client, token: str
) -> None:
    given(BOOLEAN)
    etag = client.get(SNAPSHOT_PATH, headers=bearer(token)).headers["etag"]

    weak = client.get(SNAPSHOT_PATH, headers={**bearer(token), "If-None-Match": f"W/{etag}"})
    any_tag = client.get(SNAPSHOT_PATH, headers={**bearer(token), "If-None-Match": "*"})

    assert weak.status_code == 304, weak.status_code
    assert any_tag.status_code == 304, any_tag.status_code


# --- the event stream over a live server ----------------------------------------------------------------------------


def test_stream_sends_the_current_revision_then_a_higher_one_within_five_seconds_of_a_change(
    http: httpx.Client, token: str, admin_headers: dict[str, str]
) -> None:
    snapshot = http.get(SNAPSHOT_PATH, headers=bearer(token))
    assert snapshot.status_code == 200, snapshot.text
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=STREAM_DEADLINE_SECONDS)

    with http.stream("GET", STREAM_PATH, headers=bearer(token), timeout=timeout) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        first, first_id = next_notice(lines)
        changed_at = time.monotonic()
        configure(http, admin_headers, BOOLEAN, {"default_variant": "on"})
        second, second_id = next_notice(lines)
        waited = time.monotonic() - changed_at

    assert first == {
        "type": "refetchEvaluation",
        "environment": ENVIRONMENT,
        "revision": snapshot.json()["revision"],
        "etag": snapshot.headers["etag"],
    }
    assert first_id == str(first["revision"])
    assert second["type"] == "refetchEvaluation"
    assert second["revision"] > first["revision"]
    assert second_id == str(second["revision"])
    assert waited < STREAM_DEADLINE_SECONDS, f"the change reached the stream after {waited:.3f}s"
    # The notice names the revision the snapshot now serves.
    after = http.get(SNAPSHOT_PATH, headers=bearer(token))
    assert after.json()["revision"] == second["revision"]
    assert after.headers["etag"] == second["etag"]


def test_stream_admits_an_evaluate_token_and_an_admin_and_refuses_viewer_and_anonymous_callers(
    http: httpx.Client, token: str, admin_headers: dict[str, str], make_token: Callable[..., str]
) -> None:
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS, read=STREAM_DEADLINE_SECONDS)
    admitted = {
        "evaluate": bearer(token),
        # Admin grants every role, but an admin token has no environment: it names one.
        "admin": {**admin_headers, "X-Environment": ENVIRONMENT},
    }
    for role, headers in admitted.items():
        with http.stream("GET", STREAM_PATH, headers=headers, timeout=timeout) as stream:
            assert stream.status_code == 200, role
            assert stream.headers["content-type"].startswith("text/event-stream"), role
            notice, _ = next_notice(stream.iter_lines())
            assert (notice["type"], notice["environment"]) == ("refetchEvaluation", ENVIRONMENT), role

    # Refusals are whole answers, so a plain request (bounded by its timeout) reads them.
    anonymous = http.get(STREAM_PATH, timeout=timeout)
    viewer = http.get(STREAM_PATH, headers=bearer(make_token(Role.VIEWER)), timeout=timeout)
    unscoped = http.get(STREAM_PATH, headers=bearer(make_token(Role.EVALUATE)), timeout=timeout)

    assert anonymous.status_code == 401, anonymous.text
    assert viewer.status_code == 403, viewer.text
    assert viewer.json()["required_role"] == "evaluate"
    assert unscoped.status_code == 400, unscoped.text
