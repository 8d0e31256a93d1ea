"""OFREP conformance, driven through the stock Python client (openfeature-provider-ofrep 0.3.0) over real HTTP.

What that client needs on the wire (reference/flags.md §1): `variant` and an OpenFeature `reason` on every 200,
floats serialised as floats, `errorCode` and `errorDetails` on every 400, an integer `Retry-After` on 429, and a
body without `context` accepted. The client cannot send every malformed request, so those are sent with httpx.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.embedded import serve_in_thread
from controlplane.settings import Settings
from tests.conftest import FakeClock

ENVIRONMENT = "qa"
OTHER_ENVIRONMENT = "production"
REQUEST_TIMEOUT_SECONDS = 10.0
PROBLEM_MEDIA_TYPE = "application/problem+json"
OPENFEATURE_REASONS = {reason.value for reason in Reason}

BOOLEAN = "checkout-v2"
STRING = "banner-text"
FLOAT = "sample-ratio"
INTEGER = "max-retries"
OBJECT = "theme-config"
DISABLED = "legacy-search"
UNKNOWN = "no-such-flag"

DARK_THEME = {"mode": "dark", "contrast": 1.5, "accents": ["teal", "amber"]}
LIGHT_THEME = {"mode": "light", "contrast": 1.0, "accents": []}

#: Every flag type; the number flags hold floats with and without a fraction, and integers.
FLAGS: dict[str, dict[str, Any]] = {
    BOOLEAN: {"type": "boolean", "variants": {"on": True, "off": False}, "off_variant": "off"},
    STRING: {"type": "string", "variants": {"blue": "Blue banner", "plain": "Plain banner"}, "off_variant": "plain"},
    FLOAT: {"type": "number", "variants": {"none": 0.0, "half": 0.5, "double": 2.0}, "off_variant": "none"},
    INTEGER: {"type": "number", "variants": {"zero": 0, "three": 3}, "off_variant": "zero"},
    OBJECT: {"type": "object", "variants": {"dark": DARK_THEME, "light": LIGHT_THEME}, "off_variant": "light"},
    DISABLED: {
        "type": "string",
        "variants": {"classic": "classic-ui", "modern": "modern-ui"},
        "off_variant": "classic",
    },
}

#: Their state in ENVIRONMENT: rules on the boolean, float and object flags; none on string and integer.
STATES: dict[str, dict[str, Any]] = {
    BOOLEAN: {
        "enabled": True,
        "default_variant": "off",
        "rules": [
            {"name": "beta-testers", "when": [{"attribute": "plan", "op": "equals", "value": "beta"}], "variant": "on"}
        ],
    },
    STRING: {"enabled": True, "default_variant": "blue"},
    FLOAT: {
        "enabled": True,
        "default_variant": "half",
        "rules": [
            {
                "name": "benelux",
                "when": [{"attribute": "country", "op": "in", "values": ["NL", "BE"]}],
                "variant": "double",
            }
        ],
    },
    INTEGER: {"enabled": True, "default_variant": "three"},
    OBJECT: {
        "enabled": True,
        "default_variant": "dark",
        "rules": [
            {
                "name": "light-lovers",
                "when": [{"attribute": "theme", "op": "equals", "value": "light"}],
                "variant": "light",
            }
        ],
    },
    # Disabled, with a default that is not the off variant: a DISABLED answer must still serve the off variant.
    DISABLED: {"enabled": False, "default_variant": "modern"},
}

BETA_USER = EvaluationContext(targeting_key="user-1", attributes={"plan": "beta", "country": "NL", "theme": "light"})
PLAIN_USER = EvaluationContext(targeting_key="user-2", attributes={"plan": "free", "country": "FR", "theme": "dark"})


# --- helpers ------------------------------------------------------------------------------------------------------


def configure(
    http: httpx.Client, admin: Mapping[str, str], key: str, environment: str, changes: dict[str, Any]
) -> None:
    """PATCH a flag's state in one environment at its current revision (read with a GET for `If-Match`)."""
    current = http.get(f"/api/v1/flags/{key}/environments/{environment}", headers=admin)
    assert current.status_code == 200, current.text
    patched = http.patch(
        f"/api/v1/flags/{key}/environments/{environment}",
        headers={**admin, "If-Match": str(current.json()["revision"])},
        json=changes,
    )
    assert patched.status_code == 200, patched.text


def create_flags(http: httpx.Client, admin: Mapping[str, str], *keys: str) -> None:
    """The flags ``keys`` of FLAGS (all when none is named), in their STATES in ENVIRONMENT."""
    for key in keys or tuple(FLAGS):
        created = http.post("/api/v1/flags", headers=admin, json={"key": key, **FLAGS[key]})
        assert created.status_code == 201, created.text
        configure(http, admin, key, ENVIRONMENT, STATES[key])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def evaluate(http: httpx.Client, key: str, token: str, **request: Any) -> httpx.Response:
    """POST one flag's OFREP evaluation; ``request`` is passed to httpx (``json=``, ``content=``, ``headers=``)."""
    headers = {**bearer(token), **request.pop("headers", {})}
    return http.post(f"/ofrep/v1/evaluate/flags/{key}", headers=headers, **request)


def ofrep_error(response: httpx.Response, status: int, code: str, key: str | None) -> dict[str, Any]:
    """Assert an OFREP error body (errorCode, non-empty errorDetails, the key when there is one) and return it."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["errorCode"] == code, body
    assert isinstance(body["errorDetails"], str), body
    assert body["errorDetails"], body
    if key is not None:
        assert body["key"] == key
    return body


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Assert a problem-details refusal with this status and `type`, and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/{slug}"), body
    assert body["detail"]
    return body


def wire_context(context: EvaluationContext) -> dict[str, Any]:
    """The OFREP request context of an evaluation context, as the client builds it."""
    return {"targetingKey": context.targeting_key, **context.attributes}


def wire_success(response: httpx.Response, key: str) -> dict[str, Any]:
    """Assert an OFREP 200 (string `variant`, an OpenFeature `reason`, the key) and return its body."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["key"] == key, body
    assert isinstance(body["variant"], str), body
    assert body["value"] == FLAGS[key]["variants"][body["variant"]], body
    assert body["reason"] in OPENFEATURE_REASONS, body
    return body


def resolved(details: FlagEvaluationDetails[Any]) -> tuple[Any, str | None, str | Reason | None]:
    """(value, variant, reason) of a successful evaluation; fails with the client's error otherwise."""
    assert details.error_code is None, f"{details.error_code}: {details.error_message}"
    return details.value, details.variant, details.reason


@dataclass
class Connected:
    """An OpenFeature client bound (by its own domain) to an OFREP provider, and that provider."""

    client: OpenFeatureClient
    provider: OFREPProvider


Connect = Callable[[str, dict[str, str] | None], Connected]


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def http(live_server: str) -> Iterator[httpx.Client]:
    """Plain HTTP against the live server."""
    with httpx.Client(base_url=live_server, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        yield client


@pytest.fixture
def given(http: httpx.Client, admin_headers: dict[str, str]) -> Callable[..., None]:
    """Create the named flags of FLAGS on the live server (each test creates only what it evaluates)."""
    return lambda *keys: create_flags(http, admin_headers, *keys)


@pytest.fixture
def token(make_token: Callable[..., str]) -> str:
    """An evaluate token scoped to ENVIRONMENT."""
    return make_token(Role.EVALUATE, environment=ENVIRONMENT)


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Register the stock OFREP provider under a fresh domain; every provider is removed and closed afterwards."""
    providers: list[OFREPProvider] = []

    def connected(base_url: str, headers: dict[str, str] | None) -> Connected:
        factory = None if headers is None else (lambda: dict(headers))
        provider = OFREPProvider(base_url=base_url, headers_factory=factory)
        providers.append(provider)
        domain = f"ofrep-{uuid.uuid4().hex[:8]}"
        api.set_provider_and_wait(provider, domain=domain)
        return Connected(api.get_client(domain), provider)

    yield connected
    api.clear_providers()
    for provider in providers:
        provider.session.close()


@pytest.fixture
def ofrep(live_server: str, token: str, connect: Connect) -> OpenFeatureClient:
    """An OpenFeature client on the live server with the scoped evaluate token."""
    return connect(live_server, bearer(token)).client


# --- resolving each type through the real client ------------------------------------------------------------------


def test_rule_flags_serve_the_rule_variant_as_targeting_match_and_the_default_variant_otherwise(
    given: Callable[..., None], ofrep: OpenFeatureClient, http: httpx.Client, token: str
) -> None:
    given(BOOLEAN, OBJECT)
    fallback: dict[str, Any] = {"mode": "code default"}

    boolean_match = ofrep.get_boolean_details(BOOLEAN, False, BETA_USER)
    boolean_default = ofrep.get_boolean_details(BOOLEAN, True, PLAIN_USER)
    object_match = ofrep.get_object_details(OBJECT, fallback, BETA_USER)
    object_default = ofrep.get_object_details(OBJECT, fallback, PLAIN_USER)

    assert resolved(boolean_match) == (True, "on", Reason.TARGETING_MATCH)
    assert boolean_match.flag_metadata == {"rule": "beta-testers"}
    assert resolved(boolean_default) == (False, "off", Reason.DEFAULT)
    assert resolved(object_match) == (LIGHT_THEME, "light", Reason.TARGETING_MATCH)
    assert resolved(object_default) == (DARK_THEME, "dark", Reason.DEFAULT)
    # The client shows exactly what the wire says.
    for key, context, details in (
        (BOOLEAN, BETA_USER, boolean_match),
        (BOOLEAN, PLAIN_USER, boolean_default),
        (OBJECT, BETA_USER, object_match),
        (OBJECT, PLAIN_USER, object_default),
    ):
        body = wire_success(evaluate(http, key, token, json={"context": wire_context(context)}), key)
        assert (body["value"], body["variant"], body["reason"]) == resolved(details)


def test_number_flags_give_floats_for_half_and_two_and_an_int_for_an_integer_variant(
    given: Callable[..., None], ofrep: OpenFeatureClient, http: httpx.Client, token: str
) -> None:
    given(FLOAT, INTEGER)

    half = ofrep.get_float_details(FLOAT, -1.0, PLAIN_USER)
    double = ofrep.get_float_details(FLOAT, -1.0, BETA_USER)
    three = ofrep.get_integer_details(INTEGER, -1, PLAIN_USER)

    assert resolved(half) == (0.5, "half", Reason.DEFAULT)
    assert resolved(double) == (2.0, "double", Reason.TARGETING_MATCH)
    assert resolved(three) == (3, "three", Reason.STATIC)
    assert type(half.value) is float
    assert type(double.value) is float
    assert type(three.value) is int
    # No type on the wire (ADR-0003): 2.0 keeps its fraction, 3 has none.
    double_raw = evaluate(http, FLOAT, token, json={"context": {"targetingKey": "user-1", "country": "BE"}})
    three_raw = evaluate(http, INTEGER, token, json={"context": {"targetingKey": "user-1"}})
    wire_success(double_raw, FLOAT)
    wire_success(three_raw, INTEGER)
    assert re.search(r'"value"\s*:\s*2\.0\s*[,}]', double_raw.text), double_raw.text
    assert re.search(r'"value"\s*:\s*3\s*[,}]', three_raw.text), three_raw.text


def test_a_flag_without_rules_is_static_and_a_disabled_flag_serves_its_off_variant_as_disabled(
    given: Callable[..., None], ofrep: OpenFeatureClient, http: httpx.Client, token: str
) -> None:
    given(STRING, DISABLED)

    static = ofrep.get_string_details(STRING, "code default", PLAIN_USER)
    disabled = ofrep.get_string_details(DISABLED, "code default", BETA_USER)

    assert resolved(static) == ("Blue banner", "blue", Reason.STATIC)
    # Not the default variant `modern`, and not the code default: the off variant.
    assert resolved(disabled) == ("classic-ui", "classic", Reason.DISABLED)
    for key, details in ((STRING, static), (DISABLED, disabled)):
        body = wire_success(evaluate(http, key, token, json={"context": wire_context(BETA_USER)}), key)
        assert (body["value"], body["variant"], body["reason"]) == resolved(details)


# --- errors through the client and on the wire --------------------------------------------------------------------


def test_unknown_flag_gives_flag_not_found_and_the_code_default(
    ofrep: OpenFeatureClient, http: httpx.Client, token: str
) -> None:
    details = ofrep.get_string_details(UNKNOWN, "code default", PLAIN_USER)

    assert (details.error_code, details.value, details.reason) == (
        ErrorCode.FLAG_NOT_FOUND,
        "code default",
        Reason.ERROR,
    )
    body = ofrep_error(evaluate(http, UNKNOWN, token, json={"context": {}}), 404, "FLAG_NOT_FOUND", UNKNOWN)
    # The client passes the server's explanation through.
    assert details.error_message == body["errorDetails"]


def test_a_non_object_context_or_a_non_string_targeting_key_is_400_invalid_context(
    given: Callable[..., None], ofrep: OpenFeatureClient, http: httpx.Client, token: str
) -> None:
    given(BOOLEAN)

    # The client copies attributes over the targeting key, so an attribute `targetingKey` reaches the wire as is;
    # it cannot send a context that is not an object, so those go straight on the wire.
    details = ofrep.get_boolean_details(BOOLEAN, True, EvaluationContext(attributes={"targetingKey": 5}))

    assert (details.error_code, details.value, details.reason) == (ErrorCode.INVALID_CONTEXT, True, Reason.ERROR)
    assert details.error_message
    contexts: list[Any] = [
        5,
        "user-1",
        [1, 2],
        True,
        {"targetingKey": 5},
        {"targetingKey": ["u"]},
        {"targetingKey": {}},
    ]
    for context in contexts:
        response = evaluate(http, BOOLEAN, token, json={"context": context})
        ofrep_error(response, 400, "INVALID_CONTEXT", BOOLEAN)
    bulk = http.post("/ofrep/v1/evaluate/flags", headers=bearer(token), json={"context": 5})
    ofrep_error(bulk, 400, "INVALID_CONTEXT", None)


def test_a_body_that_is_not_a_json_object_is_400_parse_error(
    given: Callable[..., None], http: httpx.Client, token: str
) -> None:
    given(BOOLEAN)

    for body in (b'{"context": {"targetingKey": "user-1"', b"not json", b"[1, 2]", b"null", b'"context"'):
        response = evaluate(http, BOOLEAN, token, content=body, headers={"Content-Type": "application/json"})
        ofrep_error(response, 400, "PARSE_ERROR", BOOLEAN)
    bulk = http.post("/ofrep/v1/evaluate/flags", headers=bearer(token), content=b"{")
    ofrep_error(bulk, 400, "PARSE_ERROR", None)


def test_without_an_evaluate_token_the_wire_answer_is_401_or_403_and_the_client_reports_general(
    live_server: str, http: httpx.Client, make_token: Callable[..., str], connect: Connect
) -> None:
    viewer = make_token(Role.VIEWER)

    anonymous = connect(live_server, None).client.get_boolean_details(BOOLEAN, True, BETA_USER)
    forbidden = connect(live_server, bearer(viewer)).client.get_boolean_details(BOOLEAN, True, BETA_USER)

    assert (anonymous.error_code, anonymous.error_message, anonymous.value) == (ErrorCode.GENERAL, "unauthorized", True)
    assert (forbidden.error_code, forbidden.error_message, forbidden.value) == (ErrorCode.GENERAL, "forbidden", True)
    unauthenticated = http.post(f"/ofrep/v1/evaluate/flags/{BOOLEAN}", json={"context": {"targetingKey": "user-1"}})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["www-authenticate"].startswith("Bearer")
    assert evaluate(http, BOOLEAN, viewer, json={}).status_code == 403


def test_the_single_flag_route_refuses_as_problem_details_a_missing_token_and_a_body_over_the_limit(
    http: httpx.Client, token: str
) -> None:
    path = f"/ofrep/v1/evaluate/flags/{BOOLEAN}"

    unauthenticated = problem(http.post(path, json={"context": {}}), 401, "unauthenticated")
    too_large = problem(evaluate(http, BOOLEAN, token, content=b" " * (33 * 1024)), 413, "body-too-large")

    assert unauthenticated["instance"] == path
    assert "Authorization: Bearer" in unauthenticated["detail"]
    assert too_large["instance"] == path


def test_the_single_flag_route_lists_its_methods_to_options_and_refuses_others_with_405(
    http: httpx.Client, token: str
) -> None:
    path = f"/ofrep/v1/evaluate/flags/{BOOLEAN}"

    listed = http.options(path)
    refused = http.get(path, headers=bearer(token))

    assert (listed.status_code, listed.headers["allow"], listed.content) == (204, "OPTIONS, POST", b"")
    problem(refused, 405, "method-not-allowed")
    assert set(refused.headers["allow"].split(", ")) == {"OPTIONS", "POST"}


def test_ofrep_evaluations_count_the_answered_flags_not_the_refused_requests(
    given: Callable[..., None], http: httpx.Client, token: str
) -> None:
    given(BOOLEAN)

    def counted() -> float:
        metrics = http.get("/metrics").text
        found = re.search(r'^controlplane_flag_evaluations_total\{route="ofrep"\} (\S+)$', metrics, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    before = counted()
    assert evaluate(http, BOOLEAN, token, json={"context": {}}).status_code == 200
    assert evaluate(http, UNKNOWN, token, json={"context": {}}).status_code == 404
    assert evaluate(http, BOOLEAN, token, content=b"{").status_code == 400

    assert counted() == before + 2


# --- rate limiting --------------------------------------------------------------------------------------------------

RATE_LIMIT = 3
#: Requests sent before a 429 must have come; each one-second window admits RATE_LIMIT.
ATTEMPTS = 40


def test_over_the_rate_limit_the_wire_answer_is_429_with_retry_after_and_the_client_pauses_until_then(
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
    connect: Connect,
) -> None:
    limited = create_app(replace(settings, evaluation_rate_limit_per_second=RATE_LIMIT), engine=engine, clock=clock)
    with (
        serve_in_thread(limited) as base_url,
        httpx.Client(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS) as http,
    ):
        create_flags(http, admin_headers, BOOLEAN)
        wire_token = make_token(Role.EVALUATE, environment=ENVIRONMENT)
        admitted = 0
        for _ in range(ATTEMPTS):
            response = evaluate(http, BOOLEAN, wire_token, json={"context": {"targetingKey": "user-1"}})
            if response.status_code != 200:
                break
            admitted += 1

        assert response.status_code == 429, f"{admitted} requests admitted, no 429"
        assert admitted >= RATE_LIMIT
        retry_after = response.headers["retry-after"]
        assert re.fullmatch(r"[0-9]+", retry_after), retry_after
        # A per-second window asks for a one-second wait: never zero, never longer than the window.
        assert int(retry_after) == 1

        # The real client, with its own token (limits are per token): it must not call again before Retry-After.
        connected = connect(base_url, bearer(make_token(Role.EVALUATE, environment=ENVIRONMENT)))
        provider, client = connected.provider, connected.client
        statuses: list[int] = []

        def record(response: Any, *args: Any, **kwargs: Any) -> None:
            statuses.append(response.status_code)

        provider.session.hooks["response"].append(record)
        for _ in range(ATTEMPTS):
            refused = client.get_boolean_details(BOOLEAN, True, PLAIN_USER)
            if refused.error_code is not None:
                break
            assert resolved(refused) == (False, "off", Reason.DEFAULT)

        assert statuses[-1] == 429, statuses
        assert (refused.error_code, refused.value) == (ErrorCode.GENERAL, True)
        assert refused.error_message is not None and "Rate limited" in refused.error_message
        resume_at = provider.retry_after
        assert resume_at is not None
        sent = len(statuses)

        paused = client.get_boolean_details(BOOLEAN, True, PLAIN_USER)

        assert datetime.now(UTC) < resume_at, "the pause ended before the test could check it"
        assert (paused.error_code, paused.value) == (ErrorCode.GENERAL, True)
        assert len(statuses) == sent, "the client sent a request during the Retry-After pause"

        time.sleep(max(0.0, (resume_at - datetime.now(UTC)).total_seconds()) + 0.05)
        resumed = client.get_boolean_details(BOOLEAN, True, PLAIN_USER)

        assert resolved(resumed) == (False, "off", Reason.DEFAULT)
        assert statuses[sent:] == [200]


# --- request shapes and environments ----------------------------------------------------------------------------------


def test_a_body_without_a_context_evaluates_with_an_empty_context(
    given: Callable[..., None], http: httpx.Client, token: str, ofrep: OpenFeatureClient
) -> None:
    given(BOOLEAN)

    for body in (b"{}", b"", b'{"context": null}', b'{"context": {}}'):
        response = evaluate(http, BOOLEAN, token, content=body, headers={"Content-Type": "application/json"})
        # An empty context matches no rule: the default variant, for the reason that says so.
        assert wire_success(response, BOOLEAN) == {
            "key": BOOLEAN,
            "value": False,
            "variant": "off",
            "reason": "DEFAULT",
        }
    details = ofrep.get_boolean_details(BOOLEAN, True)

    assert resolved(details) == (False, "off", Reason.DEFAULT)


def test_x_environment_chooses_the_environment_of_an_unscoped_token_and_must_match_a_scoped_one(
    given: Callable[..., None],
    live_server: str,
    http: httpx.Client,
    token: str,
    make_token: Callable[..., str],
    connect: Connect,
) -> None:
    given(BOOLEAN)
    unscoped = make_token(Role.EVALUATE)
    request = {"json": {"context": {"targetingKey": "user-1", "plan": "beta"}}}

    without = evaluate(http, BOOLEAN, unscoped, **request)
    here = evaluate(http, BOOLEAN, unscoped, headers={"X-Environment": ENVIRONMENT}, **request)
    elsewhere = evaluate(http, BOOLEAN, unscoped, headers={"X-Environment": OTHER_ENVIRONMENT}, **request)
    unknown = evaluate(http, BOOLEAN, unscoped, headers={"X-Environment": "moon"}, **request)
    mismatch = evaluate(http, BOOLEAN, token, headers={"X-Environment": OTHER_ENVIRONMENT}, **request)
    matching = evaluate(http, BOOLEAN, token, headers={"X-Environment": ENVIRONMENT}, **request)
    through_client = connect(live_server, {**bearer(unscoped), "X-Environment": ENVIRONMENT}).client
    details = through_client.get_boolean_details(BOOLEAN, False, BETA_USER)

    # Environment refusals on OFREP routes take OFREP's 400 shape, which OFREP clients know how to read.
    assert (without.status_code, without.json()["errorCode"]) == (400, "GENERAL")
    assert "X-Environment" in without.json()["errorDetails"]
    assert (wire_success(here, BOOLEAN)["value"], here.json()["reason"]) == (True, "TARGETING_MATCH")
    # The flag is enabled only in ENVIRONMENT: the header really chooses where to evaluate.
    assert (wire_success(elsewhere, BOOLEAN)["value"], elsewhere.json()["reason"]) == (False, "DISABLED")
    assert (unknown.status_code, unknown.json()["errorCode"]) == (400, "GENERAL")
    assert "moon" in unknown.json()["errorDetails"]
    assert (mismatch.status_code, mismatch.json()["errorCode"]) == (400, "GENERAL")
    assert ENVIRONMENT in mismatch.json()["errorDetails"]
    assert wire_success(matching, BOOLEAN)["reason"] == "TARGETING_MATCH"
    assert resolved(details) == (True, "on", Reason.TARGETING_MATCH)


def test_the_client_without_x_environment_reads_the_servers_explanation(
    live_server: str, http: httpx.Client, make_token: Callable[..., str], connect: Connect
) -> None:
    unscoped = make_token(Role.EVALUATE)
    client = connect(live_server, bearer(unscoped)).client

    details = client.get_boolean_details(BOOLEAN, True, BETA_USER)

    assert (details.error_code, details.value) == (ErrorCode.GENERAL, True)
    assert details.error_message is not None and "X-Environment" in details.error_message, details.error_message
    body = evaluate(http, BOOLEAN, unscoped, json={"context": {}}).json()
    assert body.get("errorCode") == "GENERAL", json.dumps(body)
    assert body.get("errorDetails"), json.dumps(body)
