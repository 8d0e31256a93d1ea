"""Real answers of the API, checked against its own OpenAPI document: each status is documented for its route, in
the content type it is sent in, and the body validates against the documented schema (JSON Schema 2020-12)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.settings import Settings
from tests.conftest import FakeClock, bearer

FLAG = "enable-reference-images"
Client = TestClient[Litestar]
#: (method, documented path, concrete path, request keyword arguments, token role or None for no token)
Call = tuple[str, str, str, dict[str, Any], Role | None]


def conforms(document: dict[str, Any], method: str, template: str, response: httpx.Response) -> None:
    """Assert the answer is one the document describes for this operation."""
    operation = document["paths"][template][method]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, (
        f"{method.upper()} {template} answered {response.status_code} ({response.text[:200]}); "
        f"documented: {sorted(operation['responses'])}"
    )
    for name, header in documented.get("headers", {}).items():
        assert not header.get("required") or name in response.headers, f"{method.upper()} {template}: no {name}"
    if not response.content:
        assert "content" not in documented, f"{method.upper()} {template} {response.status_code}: empty body"
        return
    media = response.headers["content-type"].split(";")[0].strip()
    content = documented.get("content", {})
    assert media in content, f"{method.upper()} {template} {response.status_code}: {media} not in {sorted(content)}"
    schema = {**content[media]["schema"], "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(response.json()), key=str)
    assert not errors, f"{method.upper()} {template} {response.status_code}: {errors[0].message}"


@pytest.fixture
def document(client: Client) -> dict[str, Any]:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


class Caller:
    """Sends calls with a token of their role, checks each answer against the document, and remembers what ran."""

    def __init__(self, client: Client, make_token: Callable[..., str], document: dict[str, Any]) -> None:
        self.client, self.make_token, self.document = client, make_token, document
        self.tokens: dict[Role, str] = {}
        self.exercised: set[tuple[str, str]] = set()

    def __call__(self, spec: Call) -> httpx.Response:
        method, template, path, kwargs, role = spec
        headers = dict(kwargs.pop("headers", {}))
        if role is not None:
            if role not in self.tokens:
                environment = "production" if role is Role.EVALUATE else None
                self.tokens[role] = self.make_token(role, environment=environment)
            headers |= bearer(self.tokens[role])
        response = self.client.request(method.upper(), path, headers=headers, **kwargs)
        conforms(self.document, method, template, response)
        self.exercised.add((method, template))
        return response

    def not_exercised(self) -> set[tuple[str, str]]:
        documented = {(method, path) for path, item in self.document["paths"].items() for method in item}
        return documented - self.exercised


@pytest.fixture
def call(client: Client, make_token: Callable[..., str], document: dict[str, Any]) -> Caller:
    return Caller(client, make_token, document)


def batch(clock: FakeClock, batch_id: str | None = None, **event: Any) -> dict[str, Any]:
    at = clock() - timedelta(seconds=5)
    first = {
        "type": "http_request",
        "time": at.isoformat(),
        "environment": "qa",
        "variant": "on",
        "labels": {"route": "upload_reference_image", "status_class": "2xx"},
        "value": 0.2,
    }
    return {
        "batch_id": batch_id or f"batch-{uuid.uuid4().hex}",
        "pipeline": "reference-images",
        "events": [first | event],
    }


@pytest.mark.usefixtures("applied")
def test_every_operation_answers_only_what_its_document_says(call: Caller, clock: FakeClock) -> None:
    admin, viewer, operator = Role.ADMIN, Role.VIEWER, Role.OPERATOR
    flag = f"/api/v1/flags/{FLAG}"
    env = f"{flag}/environments/production"
    ofrep = f"/ofrep/v1/evaluate/flags/{FLAG}"
    bulk = "/ofrep/v1/evaluate/flags"
    reused = f"batch-{uuid.uuid4().hex}"
    calls: list[Call] = [
        ("get", "/healthz", "/healthz", {}, None),
        ("get", "/readyz", "/readyz", {}, None),
        # flags: read, refused, missing, unreadable, unacceptable, revision-checked
        ("get", "/api/v1/flags", "/api/v1/flags", {}, viewer),
        ("get", "/api/v1/flags", "/api/v1/flags", {}, None),
        ("get", "/api/v1/flags", "/api/v1/flags", {}, Role.INGEST),
        ("get", "/api/v1/flags/{key}", flag, {}, viewer),
        ("get", "/api/v1/flags/{key}", "/api/v1/flags/no-such-flag", {}, viewer),
        (
            "post",
            "/api/v1/flags",
            "/api/v1/flags",
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            admin,
        ),
        ("post", "/api/v1/flags", "/api/v1/flags", {"json": {"key": FLAG}}, admin),
        (
            "post",
            "/api/v1/flags",
            "/api/v1/flags",
            {"json": {"key": FLAG, "type": "boolean", "variants": {"on": True, "off": False}, "off_variant": "off"}},
            admin,
        ),
        (
            "post",
            "/api/v1/flags",
            "/api/v1/flags",
            {
                "json": {
                    "key": "brand-new",
                    "type": "boolean",
                    "variants": {"on": True, "off": False},
                    "off_variant": "off",
                }
            },
            admin,
        ),
        ("patch", "/api/v1/flags/{key}", flag, {"json": {"description": "x"}}, admin),
        ("patch", "/api/v1/flags/{key}", flag, {"json": {"description": "x"}, "headers": {"If-Match": "999"}}, admin),
        ("get", "/api/v1/flags/{key}/environments/{environment}", env, {}, viewer),
        ("patch", "/api/v1/flags/{key}/environments/{environment}", env, {"json": {}}, admin),
        # rollouts
        ("get", "/api/v1/flags/{key}/environments/{environment}/rollout", f"{env}/rollout", {}, viewer),
        ("get", "/api/v1/flags/{key}/environments/{environment}/rollouts", f"{env}/rollouts", {}, viewer),
        (
            "post",
            "/api/v1/flags/{key}/environments/{environment}/rollout/{operation}",
            f"{env}/rollout/advance",
            {"json": {"reason": "checked"}},
            operator,
        ),
        (
            "post",
            "/api/v1/flags/{key}/environments/{environment}/rollout/{operation}",
            f"{env}/rollout/start",
            {"json": {"reason": "go"}},
            operator,
        ),
        (
            "post",
            "/api/v1/flags/{key}/environments/{environment}/rollout/{operation}",
            f"{env}/rollout/teleport",
            {"json": {}},
            operator,
        ),
        # audit, tokens, definitions
        ("get", "/api/v1/audit", "/api/v1/audit", {}, viewer),
        ("get", "/api/v1/audit", "/api/v1/audit", {"params": {"limit": "many"}}, viewer),
        ("get", "/api/v1/audit/verify", "/api/v1/audit/verify", {}, viewer),
        ("get", "/api/v1/tokens", "/api/v1/tokens", {}, admin),
        ("post", "/api/v1/tokens", "/api/v1/tokens", {"json": {"name": "ci-reader", "role": "viewer"}}, admin),
        ("post", "/api/v1/tokens", "/api/v1/tokens", {"json": {"name": "ci-reader", "role": "viewer"}}, admin),
        ("delete", "/api/v1/tokens/{name}", "/api/v1/tokens/ci-reader", {}, admin),
        ("delete", "/api/v1/tokens/{name}", "/api/v1/tokens/ci-reader", {}, admin),
        ("delete", "/api/v1/tokens/{name}", "/api/v1/tokens/nobody", {}, admin),
        ("post", "/api/v1/definitions/apply", "/api/v1/definitions/apply", {"json": {"content": "pipeline: ["}}, admin),
        # ingest: accepted, unreadable, bad events, a batch id reused for other events
        ("post", "/api/v1/events", "/api/v1/events", {"json": batch(clock, reused)}, Role.INGEST),
        ("post", "/api/v1/events", "/api/v1/events", {"json": batch(clock, reused, value=0.3)}, Role.INGEST),
        (
            "post",
            "/api/v1/events",
            "/api/v1/events",
            {"content": b"{", "headers": {"Content-Type": "application/json"}},
            Role.INGEST,
        ),
        ("post", "/api/v1/events", "/api/v1/events", {"json": batch(clock, type="no_such_event")}, Role.INGEST),
        # alerting, guards, silences, notifications, cleanup
        ("get", "/api/v1/alerts", "/api/v1/alerts", {}, viewer),
        ("get", "/api/v1/alerts/history", "/api/v1/alerts/history", {"params": {"limit": "0"}}, viewer),
        ("post", "/api/v1/alertmanager/webhook", "/api/v1/alertmanager/webhook", {"json": {"version": "4"}}, operator),
        ("post", "/api/v1/guards/replay", "/api/v1/guards/replay", {"json": {}}, viewer),
        ("get", "/api/v1/silences", "/api/v1/silences", {}, viewer),
        ("post", "/api/v1/silences", "/api/v1/silences", {"json": {"matchers": {}, "comment": ""}}, operator),
        ("delete", "/api/v1/silences/{silence_id}", "/api/v1/silences/7", {}, operator),
        ("delete", "/api/v1/silences/{silence_id}", "/api/v1/silences/0", {}, operator),
        ("get", "/api/v1/notifications", "/api/v1/notifications", {}, viewer),
        ("get", "/api/v1/cleanup/policies", "/api/v1/cleanup/policies", {}, viewer),
        ("get", "/api/v1/cleanup/runs", "/api/v1/cleanup/runs", {}, viewer),
        ("get", "/api/v1/cleanup/runs/{run_id}", "/api/v1/cleanup/runs/5", {}, viewer),
        (
            "post",
            "/api/v1/cleanup/policies/{name}/runs",
            "/api/v1/cleanup/policies/nothing/runs",
            {"json": {}},
            operator,
        ),
        ("post", "/api/v1/cleanup/purges", "/api/v1/cleanup/purges", {"json": {}}, operator),
        # incident actions: done, refused, undone, undone again, missing
        (
            "post",
            "/api/v1/flags/{key}/set-variant",
            f"{flag}/set-variant",
            {"json": {"variant": "on", "environments": ["qa"], "reason": "incident drill"}},
            operator,
        ),
        ("post", "/api/v1/flags/{key}/set-variant", f"{flag}/set-variant", {"json": {"variant": "on"}}, operator),
        (
            "post",
            "/api/v1/flags/{key}/set-variant",
            "/api/v1/flags/no-such-flag/set-variant",
            {"json": {"variant": "on", "all_environments": True, "reason": "drill"}},
            operator,
        ),
        ("get", "/api/v1/incidents", "/api/v1/incidents", {}, viewer),
        ("get", "/api/v1/incidents/{incident_id}", "/api/v1/incidents/1", {}, viewer),
        ("get", "/api/v1/incidents/{incident_id}", "/api/v1/incidents/99", {}, viewer),
        (
            "post",
            "/api/v1/incidents/{incident_id}/undo",
            "/api/v1/incidents/1/undo",
            {"json": {"reason": "over"}},
            operator,
        ),
        (
            "post",
            "/api/v1/incidents/{incident_id}/undo",
            "/api/v1/incidents/1/undo",
            {"json": {"reason": "x"}},
            operator,
        ),
        ("post", "/api/v1/incidents/{incident_id}/undo", "/api/v1/incidents/0/undo", {"json": {}}, operator),
        # evaluation: OFREP answers, its own errors, conditional requests, the snapshot
        (
            "post",
            "/ofrep/v1/evaluate/flags/{key}",
            ofrep,
            {"json": {"context": {"targetingKey": "user-1"}}},
            Role.EVALUATE,
        ),
        (
            "post",
            "/ofrep/v1/evaluate/flags/{key}",
            "/ofrep/v1/evaluate/flags/no-such-flag",
            {"json": {}},
            Role.EVALUATE,
        ),
        ("post", "/ofrep/v1/evaluate/flags/{key}", ofrep, {"content": b"[1]"}, Role.EVALUATE),
        ("post", "/ofrep/v1/evaluate/flags/{key}", ofrep, {}, viewer),
        ("post", "/ofrep/v1/evaluate/flags", bulk, {"json": {"context": {"targetingKey": "user-1"}}}, Role.EVALUATE),
        ("post", "/ofrep/v1/evaluate/flags", bulk, {"json": {"context": "user-1"}}, Role.EVALUATE),
        ("get", "/evaluation/v1/snapshot", "/evaluation/v1/snapshot", {}, Role.EVALUATE),
        ("get", "/evaluation/v1/stream", "/evaluation/v1/stream", {}, None),  # a finite answer of the stream
        (
            "get",
            "/evaluation/v1/snapshot",
            "/evaluation/v1/snapshot",
            {"headers": {"X-Environment": "qa"}},
            Role.EVALUATE,
        ),
    ]
    statuses = {(spec[0], spec[1], call(spec).status_code) for spec in calls}
    # Conditional requests: the ETag just served makes the same request 304.
    tag = call(("post", "/ofrep/v1/evaluate/flags", bulk, {"json": {}}, Role.EVALUATE)).headers["ETag"]
    assert (
        call(
            ("post", "/ofrep/v1/evaluate/flags", bulk, {"json": {}, "headers": {"If-None-Match": tag}}, Role.EVALUATE)
        ).status_code
        == 304
    )
    tag = call(("get", "/evaluation/v1/snapshot", "/evaluation/v1/snapshot", {}, Role.EVALUATE)).headers["ETag"]
    assert (
        call(
            (
                "get",
                "/evaluation/v1/snapshot",
                "/evaluation/v1/snapshot",
                {"headers": {"If-None-Match": tag}},
                Role.EVALUATE,
            )
        ).status_code
        == 304
    )
    # The calls above reach the refusals they are meant to, not only the easy ones.
    for expected in [
        ("get", "/api/v1/flags", 401),
        ("get", "/api/v1/flags", 403),
        ("get", "/api/v1/flags/{key}", 404),
        ("post", "/api/v1/flags", 400),
        ("post", "/api/v1/flags", 409),
        ("post", "/api/v1/flags", 422),
        ("patch", "/api/v1/flags/{key}", 428),
        ("patch", "/api/v1/flags/{key}", 409),
        ("post", "/api/v1/events", 200),
        ("post", "/api/v1/events", 400),
        ("post", "/api/v1/events", 409),
        ("post", "/api/v1/events", 422),
        ("delete", "/api/v1/silences/{silence_id}", 422),
        ("post", "/api/v1/flags/{key}/set-variant", 201),
        ("post", "/api/v1/flags/{key}/set-variant", 422),
        ("post", "/api/v1/flags/{key}/set-variant", 404),
        ("get", "/api/v1/incidents/{incident_id}", 404),
        ("post", "/api/v1/incidents/{incident_id}/undo", 200),
        ("post", "/api/v1/incidents/{incident_id}/undo", 409),
        ("post", "/api/v1/incidents/{incident_id}/undo", 422),
        ("post", "/ofrep/v1/evaluate/flags/{key}", 200),
        ("post", "/ofrep/v1/evaluate/flags/{key}", 400),
        ("post", "/ofrep/v1/evaluate/flags/{key}", 404),
        ("post", "/ofrep/v1/evaluate/flags", 200),
        ("get", "/evaluation/v1/snapshot", 200),
        ("get", "/evaluation/v1/snapshot", 422),
    ]:
        assert expected in statuses, expected
    # Every operation of the document answered at least once: a new route gets a call in the list above.
    missing = call.not_exercised()
    assert not missing, f"add a call for each of {sorted(missing)}"


def test_an_unreachable_database_is_answered_as_documented() -> None:
    # Nothing listens on port 1: every token lookup fails to connect, and /readyz says so.
    app = create_app(Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"), run_scheduler=False)
    client = TestClient(app)
    document = client.get("/schema/openapi.json").json()
    token = {"Authorization": "Bearer cpt_" + "A" * 43}
    for method, template, path in [
        ("get", "/api/v1/flags", "/api/v1/flags"),
        ("post", "/ofrep/v1/evaluate/flags/{key}", f"/ofrep/v1/evaluate/flags/{FLAG}"),
        ("get", "/readyz", "/readyz"),
    ]:
        response = client.request(method.upper(), path, headers=token)
        assert response.status_code == 503
        conforms(document, method, template, response)


def test_rate_limited_answers_are_documented(settings: Settings, engine: Engine, clock: FakeClock) -> None:
    app = create_app(replace(settings, rate_limit_per_minute=1), engine=engine, clock=clock, run_scheduler=False)
    with TestClient(app) as client:
        document = client.get("/schema/openapi.json").json()
        answers = [client.get("/api/v1/flags") for _ in range(2)]
    assert [response.status_code for response in answers] == [401, 429]
    for response in answers:
        conforms(document, "get", "/api/v1/flags", response)
