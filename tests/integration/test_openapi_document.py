"""The OpenAPI document says what the API does: who may call each route, what each can refuse, and in what shape."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from controlplane.app import create_app
from controlplane.settings import Settings
from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.settings import PipelineSettings
from pipeline.vision import LocalAnalyzer

METHODS = ("get", "put", "post", "patch", "delete")
PUBLIC = {("get", "/healthz"), ("get", "/readyz")}
PROBLEM = "application/problem+json"
TOKEN: list[dict[str, list[str]]] = [{"bearerToken": []}, {"apiKey": []}]

Operations = dict[tuple[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The document the app publishes (building it reads no database)."""
    path: Path = tmp_path_factory.mktemp("openapi") / "unused.db"
    app = create_app(Settings(database_url=f"sqlite:///{path}"), run_scheduler=False)
    return app.openapi_schema.to_schema()


@pytest.fixture(scope="module")
def operations(document: dict[str, Any]) -> Operations:
    return {
        (method, path): item[method] for path, item in document["paths"].items() for method in METHODS if method in item
    }


def answers(operations: Operations, method: str, path: str) -> set[int]:
    return {int(status) for status in operations[(method, path)]["responses"]}


def refusals(operations: Operations) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for (method, path), operation in operations.items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                yield method, path, status, response


def test_every_route_but_the_health_checks_needs_a_token_by_bearer_or_x_api_key(
    document: dict[str, Any], operations: Operations
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schemes["bearerToken"]["description"],
    }
    assert (schemes["apiKey"]["type"], schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == (
        "apiKey",
        "header",
        "X-API-Key",
    )
    for key, operation in operations.items():
        if key in PUBLIC:
            assert "security" not in operation, key
            assert not {401, 403} & answers(operations, *key), key
        else:
            assert operation["security"] == TOKEN, key
            assert {401, 403, 429, 503} <= answers(operations, *key), key
            responses = operation["responses"]
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"] is True
            assert responses["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
            assert responses["503"]["headers"]["Retry-After"]["required"] is True


def test_the_docs_routes_are_not_in_the_document(operations: Operations) -> None:
    assert not [path for _, path in operations if path.startswith("/schema")]


def test_every_refusal_is_problem_details_except_ofreps_own_errors_and_readyz(operations: Operations) -> None:
    others = set()
    for method, path, status, response in refusals(operations):
        if PROBLEM in response["content"]:
            assert list(response["content"]) == [PROBLEM], (method, path, status)
            assert response["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/ProblemDetails"}
        else:
            others.add((method, path, status, next(iter(response["content"]))))
    assert others == {
        ("post", "/ofrep/v1/evaluate/flags/{key}", "400", "application/json"),
        ("post", "/ofrep/v1/evaluate/flags/{key}", "404", "application/json"),
        ("post", "/ofrep/v1/evaluate/flags", "400", "application/json"),
        ("get", "/readyz", "503", "application/json"),
    }


def test_litestars_own_validation_body_is_never_documented(operations: Operations) -> None:
    # The app answers every refusal with problem details; Litestar's {status_code, detail, extra} never leaves it.
    for method, path, status, response in refusals(operations):
        for media in response["content"].values():
            assert "status_code" not in media["schema"].get("properties", {}), (method, path, status)


def test_refusals_follow_what_the_route_declares(operations: Operations) -> None:
    # A path id can be missing, a body can be unreadable, too large or unacceptable, an If-Match can be stale or absent.
    assert {404} <= answers(operations, "get", "/api/v1/flags/{key}")
    assert 404 not in answers(operations, "get", "/api/v1/flags")
    assert {400, 413, 422} <= answers(operations, "post", "/api/v1/flags")
    assert {409, 428} <= answers(operations, "patch", "/api/v1/flags/{key}")
    assert {409, 428} <= answers(
        operations, "post", "/api/v1/flags/{key}/environments/{environment}/rollout/{operation}"
    )
    assert 428 not in answers(operations, "post", "/api/v1/flags")
    assert 422 in answers(operations, "get", "/api/v1/cleanup/runs/{run_id}")  # an id outside 1..2^31-1
    assert answers(operations, "get", "/api/v1/flags") == {200, 401, 403, 429, 503}
    # OFREP answers an unreadable context with its own 400, never 422.
    assert 422 not in answers(operations, "post", "/ofrep/v1/evaluate/flags/{key}")


def test_bodies_a_route_reads_itself_are_documented(document: dict[str, Any], operations: Operations) -> None:
    events = operations[("post", "/api/v1/events")]["requestBody"]
    batch = events["content"]["application/json"]["schema"]
    assert events["required"] is True
    assert set(batch["required"]) == {"batch_id", "pipeline", "events"}
    assert set(batch["properties"]["events"]["items"]["required"]) == {"type", "time", "environment", "variant"}
    for path in ("/ofrep/v1/evaluate/flags/{key}", "/ofrep/v1/evaluate/flags"):
        body = operations[("post", path)]["requestBody"]
        assert body["required"] is False
        assert "context" in body["content"]["application/json"]["schema"]["properties"]


def test_evaluation_answers_are_json_objects_not_strings(document: dict[str, Any], operations: Operations) -> None:
    def ok(path: str, method: str) -> Any:
        return operations[(method, path)]["responses"]["200"]["content"]["application/json"]["schema"]

    assert ok("/ofrep/v1/evaluate/flags/{key}", "post") == {"$ref": "#/components/schemas/OfrepEvaluation"}
    assert ok("/ofrep/v1/evaluate/flags", "post") == {"$ref": "#/components/schemas/OfrepBulkEvaluation"}
    assert ok("/evaluation/v1/snapshot", "get") == {"$ref": "#/components/schemas/Snapshot"}
    schemas = document["components"]["schemas"]
    assert set(schemas["OfrepEvaluation"]["required"]) == {"key", "value", "variant", "reason"}
    assert set(schemas["ProblemDetails"]["required"]) == {"type", "title", "status", "detail", "instance"}
    assert "304" in operations[("post", "/ofrep/v1/evaluate/flags")]["responses"]


def test_the_pipelines_upload_documents_its_multipart_body_and_its_refusals(tmp_path: Path) -> None:
    settings = PipelineSettings(runs_dir=tmp_path / "runs", spool_dir=tmp_path / "spool", flags_enabled=False)
    parts = Parts(gate=StaticGate(True), analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=None)
    upload = create_pipeline_app(settings, parts).openapi_schema.to_schema()["paths"]["/upload/reference-image"]["post"]
    form = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["file", "user_id"]
    assert form["properties"]["file"]["contentMediaType"] == "application/octet-stream"
    refusals = {status: response for status, response in upload["responses"].items() if int(status) >= 400}
    assert set(refusals) == {"400", "403", "413", "415", "422", "503"}
    assert all(list(response["content"]) == [PROBLEM] for response in refusals.values())


def test_the_pipeline_publishes_its_document_and_no_page_that_needs_the_internet(tmp_path: Path) -> None:
    settings = PipelineSettings(runs_dir=tmp_path / "runs", spool_dir=tmp_path / "spool", flags_enabled=False)
    parts = Parts(gate=StaticGate(True), analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=None)
    with TestClient(create_pipeline_app(settings, parts)) as client:
        document = client.get("/schema/openapi.json")
        assert document.status_code == 200 and "/upload/reference-image" in document.json()["paths"]
        for page in ("/schema", "/schema/swagger", "/schema/scalar", "/schema/redoc"):
            answer = client.get(page)
            assert "cdn." not in answer.text and "<script" not in answer.text, page


def test_the_docs_page_loads_only_what_the_control_plane_serves_itself(tmp_path: Path) -> None:
    # The check without a browser: every script, stylesheet and icon of the page is under /schema/assets, and served.
    client = TestClient(create_app(Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}"), run_scheduler=False))
    for page in ("/schema", "/schema/swagger"):
        html = client.get(page).text
        sources = re.findall(r"(?:src|href)=['\"]([^'\"]+)['\"]", html)
        assert sorted(sources) == [
            "/schema/assets/favicon-32x32.png",
            "/schema/assets/swagger-ui-bundle.js",
            "/schema/assets/swagger-ui-standalone-preset.js",
            "/schema/assets/swagger-ui.css",
        ], page
        assert "cdn." not in html and "@latest" not in html
        for source in sources:
            asset = client.get(source)
            assert asset.status_code == 200, source
            assert int(asset.headers["content-length"]) > 0
    assert client.get("/schema/scalar").status_code == 404
