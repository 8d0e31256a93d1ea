"""Every route of the app, walked from ``app.routes``: public routes open, every other route closed to the wrong caller.

The walk is the point: a route added tomorrow is checked by these tests without anyone listing it here. Path
parameters get plausible values; a route with a parameter this file does not know fails the walk, so the table
below is kept up to date rather than the route silently skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from litestar import Litestar
from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from controlplane.api.roles import Role
from controlplane.evaluation.controller import STREAM_PATH

PROBLEM_MEDIA_TYPE = "application/problem+json"
ROLLOUT_OPERATION_PATH = "/api/v1/flags/{key:str}/environments/{environment:str}/rollout/{operation:str}"

#: The only routes anyone may call without a token. Anything else reachable without one is a hole.
PUBLIC_EXACT = frozenset({"/healthz", "/readyz", "/schema", "/metrics", "/", "/ui/sign-in"})
PUBLIC_PREFIXES = ("/schema/", "/ui/static/")
#: Public routes whose answer without a token (and without a body) is not 200: the root sends a browser to the
#: operator's page, and a sign-in without a token is refused as bad input (not as unauthenticated).
PUBLIC_ANSWERS = {("GET", "/"): 303, ("POST", "/ui/sign-in"): 422}

#: Plausible values for path parameters, by name.
PATH_VALUES = {
    "key": "enable-reference-images",
    "environment": "qa",
    "operation": "advance",
    "name": "someone",
    "silence_id": "1",
    "run_id": "1",
    "incident_id": "1",
    "path": "openapi.json",
}

#: Values that depend on the route: the static files of the documentation and of the operator's page.
PATH_VALUES_UNDER = {"/schema/assets/": {"file_path": "swagger-ui.css"}, "/ui/static/": {"file_path": "ui.css"}}

#: Roles just below a requirement: each must be refused with 403.
BELOW = {
    Role.VIEWER: (Role.INGEST, Role.EVALUATE),
    Role.OPERATOR: (Role.VIEWER,),
    Role.ADMIN: (Role.OPERATOR,),
    # Service roles are not a rank: evaluation routes refuse the management roles below admin, and ingest.
    Role.EVALUATE: (Role.VIEWER, Role.OPERATOR, Role.INGEST),
    Role.INGEST: (Role.VIEWER, Role.OPERATOR, Role.EVALUATE),
}

#: A well-formed token nobody issued.
UNKNOWN_TOKEN = "cpt_" + "A" * 43

_PARAMETER = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\}")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One method of one route, with a concrete URL to call it on."""

    method: str
    template: str
    url: str
    handler: HTTPRouteHandler

    @property
    def public(self) -> bool:
        return is_public(self.template)

    @property
    def required_role(self) -> Role | None:
        role = self.handler.opt.get("role")
        return role if isinstance(role, Role) else None

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def is_public(template: str) -> bool:
    """True for the allow-listed public paths."""
    return template in PUBLIC_EXACT or template.startswith(PUBLIC_PREFIXES)


def concrete_url(template: str) -> str:
    """The template with every path parameter replaced by its plausible value."""

    values = dict(PATH_VALUES)
    for prefix, specific in PATH_VALUES_UNDER.items():
        if template.startswith(prefix):
            values.update(specific)

    def value(match: re.Match[str]) -> str:
        name = match["name"]
        assert name in values, f"no plausible value for path parameter `{name}` of {template}; add it"
        return values[name]

    return _PARAMETER.sub(value, template)


def walk(app: Litestar) -> list[Endpoint]:
    """Every (method, route) of the app except OPTIONS and HEAD."""
    endpoints = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, entry in route.route_handler_map.items():
            if method in ("OPTIONS", "HEAD"):
                continue
            handler = entry[0]
            assert isinstance(handler, HTTPRouteHandler)
            endpoints.append(Endpoint(method, route.path, concrete_url(route.path), handler))
    return sorted(endpoints, key=str)


def call(client: TestClient[Litestar], endpoint: Endpoint, token: str | None = None) -> httpx.Response:
    """Call an endpoint with no body, with or without a bearer token."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.request(endpoint.method, endpoint.url, headers=headers)


def refusal_problem(response: httpx.Response, status: int, slug: str) -> str | None:
    """What is wrong with a refusal, or None when it is the expected problem-details answer."""
    if response.status_code != status:
        return f"status {response.status_code}, expected {status}: {response.text[:200]}"
    if not response.headers.get("content-type", "").startswith(PROBLEM_MEDIA_TYPE):
        return f"content-type {response.headers.get('content-type')!r}, expected {PROBLEM_MEDIA_TYPE}"
    body = response.json()
    if not str(body.get("type", "")).endswith(f"/{slug}"):
        return f"problem type {body.get('type')!r}, expected one ending /{slug}"
    if body.get("status") != status:
        return f"problem status {body.get('status')!r}, expected {status}"
    if status == 401 and "bearer" not in response.headers.get("www-authenticate", "").lower():
        return f"401 without a Bearer WWW-Authenticate header: {dict(response.headers)}"
    return None


def protected(app: Litestar) -> list[Endpoint]:
    endpoints = [endpoint for endpoint in walk(app) if not endpoint.public]
    assert endpoints, "the walk found no protected route"
    return endpoints


def test_the_walk_covers_the_api_including_the_rollout_operation_route(app: Litestar) -> None:
    endpoints = walk(app)
    walked = {(endpoint.method, endpoint.template) for endpoint in endpoints}

    assert len(endpoints) >= 10, walked
    assert ("POST", ROLLOUT_OPERATION_PATH) in walked
    assert ("GET", "/healthz") in walked
    assert ("GET", "/api/v1/audit/verify") in walked
    assert ("DELETE", "/api/v1/tokens/{name:str}") in walked
    assert (
        concrete_url(ROLLOUT_OPERATION_PATH) == "/api/v1/flags/enable-reference-images/environments/qa/rollout/advance"
    )


def test_every_route_is_either_allow_listed_public_or_declares_a_role(app: Litestar) -> None:
    undeclared = [str(e) for e in walk(app) if not e.public and e.required_role is None]
    public_outside_allow_list = [str(e) for e in walk(app) if e.handler.opt.get("public") and not e.public]

    assert undeclared == []
    assert public_outside_allow_list == []


def test_allow_listed_public_routes_answer_without_a_token(client: TestClient[Litestar], app: Litestar) -> None:
    public = [endpoint for endpoint in walk(app) if endpoint.public]
    assert {"/healthz", "/readyz", "/schema"} <= {endpoint.template for endpoint in public}

    failures = []
    for endpoint in public:
        response = client.request(endpoint.method, endpoint.url, follow_redirects=False)
        if response.status_code != PUBLIC_ANSWERS.get((endpoint.method, endpoint.template), 200):
            failures.append(f"{endpoint} ({endpoint.url}): {response.status_code} {response.text[:200]}")

    assert failures == []


def test_protected_routes_answer_401_without_a_token(client: TestClient[Litestar], app: Litestar) -> None:
    failures = []
    for endpoint in protected(app):
        problem = refusal_problem(call(client, endpoint), 401, "unauthenticated")
        if problem is not None:
            failures.append(f"{endpoint}: {problem}")

    assert failures == []


def test_protected_routes_answer_401_to_a_token_nobody_issued(client: TestClient[Litestar], app: Litestar) -> None:
    failures = []
    for endpoint in protected(app):
        problem = refusal_problem(call(client, endpoint, UNKNOWN_TOKEN), 401, "unauthenticated")
        if problem is not None:
            failures.append(f"{endpoint}: {problem}")

    assert failures == []


def test_protected_routes_answer_401_to_a_revoked_token(
    client: TestClient[Litestar],
    app: Litestar,
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
) -> None:
    # An admin token, so the refusal can only come from the revocation and never from the role.
    revoked = make_token(Role.ADMIN, name="revoked-admin")
    assert client.get("/api/v1/flags", headers={"Authorization": f"Bearer {revoked}"}).status_code == 200
    revocation = client.delete("/api/v1/tokens/revoked-admin", headers=admin_headers, params={"reason": "leaked"})
    assert revocation.status_code == 200, revocation.text
    assert revocation.json()["revoked_at"] is not None

    failures = []
    for endpoint in protected(app):
        problem = refusal_problem(call(client, endpoint, revoked), 401, "unauthenticated")
        if problem is not None:
            failures.append(f"{endpoint}: {problem}")

    assert failures == []


def test_protected_routes_answer_403_to_a_role_below_their_requirement(
    client: TestClient[Litestar], app: Litestar, make_token: Callable[..., str]
) -> None:
    tokens = {role: make_token(role) for role in (Role.VIEWER, Role.OPERATOR, Role.INGEST, Role.EVALUATE)}
    checked: set[Role] = set()
    failures = []
    for endpoint in protected(app):
        required = endpoint.required_role
        assert required is not None, f"{endpoint} declares no role"
        for held in BELOW[required]:
            response = call(client, endpoint, tokens[held])
            problem = refusal_problem(response, 403, "forbidden")
            if problem is None and response.json().get("required_role") != required.value:
                problem = f"required_role {response.json().get('required_role')!r}, expected {required.value!r}"
            if problem is not None:
                failures.append(f"{endpoint} as {held}: {problem}")
        checked.add(required)

    assert failures == []
    # Each rank of the hierarchy is exercised, so the 403 check cannot pass on viewer routes alone.
    assert checked == {Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.EVALUATE, Role.INGEST}


def test_a_token_with_exactly_the_required_role_gets_past_the_guard(
    client: TestClient[Litestar], app: Litestar, make_token: Callable[..., str]
) -> None:
    # The counterpart of the refusals above: they come from the guard, not from a route that refuses everyone.
    tokens = {role: make_token(role) for role in (Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.INGEST)}
    tokens[Role.EVALUATE] = make_token(Role.EVALUATE, environment="qa")
    failures = []
    for endpoint in protected(app):
        required = endpoint.required_role
        assert required is not None
        if endpoint.template == STREAM_PATH or endpoint.template.startswith("/ui/live/"):
            # An admitted event stream never ends, and the in-process client reads whole responses; the
            # stream's admission is tested against a live server in tests/integration/test_evaluation_stream.py (the
            # operator's page's streams in tests/integration/test_ui_live.py).
            continue
        response = call(client, endpoint, tokens[required])
        if response.status_code in (401, 403) or response.status_code >= 500:
            failures.append(f"{endpoint} as {required}: {response.status_code} {response.text[:200]}")

    assert failures == []


def test_a_401_tells_the_client_how_to_authenticate(client: TestClient[Litestar]) -> None:
    response = client.post("/api/v1/flags/enable-reference-images/environments/qa/rollout/advance", json={})

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="controlplane"'
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body = response.json()
    assert body["type"].endswith("/unauthenticated")
    assert body["instance"] == "/api/v1/flags/enable-reference-images/environments/qa/rollout/advance"


def test_options_answers_on_every_route_without_a_token_with_its_methods(
    client: TestClient[Litestar], app: Litestar
) -> None:
    failures = []
    templates: dict[str, set[str]] = {}
    for endpoint in walk(app):
        templates.setdefault(endpoint.url, set()).add(endpoint.method)
    for url, methods in sorted(templates.items()):
        response = client.options(url)
        allowed = {method.strip() for method in response.headers.get("allow", "").split(",")}
        if response.status_code != 204 or not methods <= allowed:
            expected = sorted(methods)
            failures.append(f"OPTIONS {url}: {response.status_code}, Allow {sorted(allowed)}, expected {expected}")
    assert not failures, "\n".join(failures)


#: Integer path parameters past what the databases can store (PostgreSQL INTEGER, SQLite's 64-bit integer).
OUT_OF_RANGE = ("0", str(2**31), str(2**63), str(-(2**63) - 1))


def test_every_integer_path_parameter_is_bounded_as_the_database_can_store_it(
    client: TestClient[Litestar], app: Litestar, admin_headers: dict[str, str]
) -> None:
    integer = re.compile(r"\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):int\}")
    endpoints = [endpoint for endpoint in walk(app) if integer.search(endpoint.template)]
    assert {endpoint.template for endpoint in endpoints} >= {"/api/v1/silences/{silence_id:int}"}
    failures = []
    for endpoint in endpoints:
        for value in OUT_OF_RANGE:
            url = integer.sub(value, endpoint.template)
            url = concrete_url(url)
            response = client.request(endpoint.method, url, headers=admin_headers)
            if response.status_code != 422 or not response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE):
                failures.append(f"{endpoint.method} {url}: {response.status_code} {response.text[:120]}")
    assert not failures, "\n".join(failures)


def test_every_integer_query_parameter_is_bounded(
    client: TestClient[Litestar], app: Litestar, admin_headers: dict[str, str]
) -> None:
    # Found from each handler's signature, so a new integer query parameter is checked without being listed here.
    checked = []
    failures = []
    for endpoint in walk(app):
        for name, field in endpoint.handler.parsed_fn_signature.parameters.items():
            integer = not field.is_subclass_of(bool) and (
                field.is_subclass_of(int) or any(inner.is_subclass_of(int) for inner in field.inner_types)
            )
            if not integer or f"{{{name}:" in endpoint.template:  # a path parameter: the test above
                continue
            if getattr(field.kwarg_definition, "header", None) or getattr(field.kwarg_definition, "cookie", None):
                continue
            query = getattr(field.kwarg_definition, "query", None) or name
            checked.append(f"{endpoint.method} {endpoint.template}?{query}")
            for value in OUT_OF_RANGE:
                response = client.request(endpoint.method, endpoint.url, params={query: value}, headers=admin_headers)
                if response.status_code != 422 or not response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE):
                    failures.append(f"{endpoint.method} {endpoint.url}?{query}={value}: {response.status_code}")
    assert {"GET /api/v1/audit?before_id", "GET /api/v1/cleanup/runs?limit"} <= set(checked), checked
    assert not failures, "\n".join(failures)
