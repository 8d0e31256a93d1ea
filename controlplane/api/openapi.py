"""The OpenAPI document as the API really behaves, and its docs page served from files shipped in the package.

One place decides what every route documents beyond its own signature, from what the route declares:

- a route that is not ``opt={"public": True}`` needs a token (bearer, or the `X-API-Key` header) and can answer
  401 (with `WWW-Authenticate`), 403, 429 (rate limits, with `Retry-After`) and 503 (`database-unavailable`, with
  `Retry-After`: the token lookup reads the database);
- a route with path parameters can answer 404; one with a body 400 (unreadable), 413 and 422; one with query
  parameters, a required header or an integer id 422; one that reads `If-Match` 409 and 428;
- anything else a route can answer it declares in its decorator with ``responses=problems(409)`` (or
  ``response(...)`` for what is not a problem); a route that reads its own body declares the body with
  ``operation_class=request_body(...)``.

Every refusal is `application/problem+json` (RFC 9457), documented with one ``ProblemDetails`` schema.
Litestar's own validation-error body is dropped from the document: this app never sends it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import msgspec
from litestar import Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import (
    Components,
    Example,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityRequirement,
    SecurityScheme,
)
from litestar.plugins import ReceiveRoutePlugin
from litestar.routes import BaseRoute, HTTPRoute
from litestar.static_files import create_static_files_router

from controlplane.errors import problem_type

if TYPE_CHECKING:
    from litestar._kwargs import KwargsModel

__all__ = [
    "DOCS_PATH",
    "SWAGGER_UI_DIR",
    "ProblemDetails",
    "RouteDocumentation",
    "openapi_config",
    "problems",
    "request_body",
    "response",
]

DOCS_PATH = "/schema"
#: Swagger UI as npm's `swagger-ui-dist` ships it (version and licence in VENDORED.md beside the files).
SWAGGER_UI_DIR = Path(__file__).parent / "swagger_ui"
_ASSETS = f"{DOCS_PATH}/assets"
_PROBLEM_MEDIA_TYPE = "application/problem+json"

BEARER = "bearerToken"
API_KEY = "apiKey"
#: Either credential is enough (OpenAPI: the entries of `security` are alternatives).
TOKEN_REQUIRED: list[SecurityRequirement] = [{BEARER: []}, {API_KEY: []}]


class ProblemDetails(msgspec.Struct):
    """An RFC 9457 problem. ``type`` ends in a stable slug to switch on; some problems add members (``errors``,
    ``field``, ``line``, ``required_role``, ``limit_bytes``, ...)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str


# What each status means on this API: the slug and title a client sees, and when (README "HTTP API" lists every slug).
_PROBLEMS: dict[int, tuple[str, str, str]] = {
    400: (
        "malformed-request",
        "Bad request",
        "The body cannot be read: not JSON, or not valid gzip (`invalid-json`, ...)",
    ),
    401: ("unauthenticated", "Unauthenticated", "No token, or an unknown or revoked one"),
    403: ("forbidden", "Forbidden", "The token's role does not grant this route"),
    404: ("not-found", "Not found", "What the path names does not exist (`flag-not-found`, `token-not-found`, ...)"),
    409: ("stale-revision", "Conflict", "The current state refuses the change (`stale-revision`, `flag-exists`, ...)"),
    413: ("body-too-large", "Request body too large", "The body is over the size limit (`batch-too-large`, ...)"),
    422: (
        "invalid-body",
        "Unprocessable content",
        "Well-formed but not acceptable (`invalid-body`, `invalid-query`, ...)",
    ),
    428: ("revision-required", "Precondition required", "The change needs `If-Match: <revision>`"),
    429: ("rate-limited", "Too many requests", "Over the token's or the address's rate limit"),
    503: ("database-unavailable", "Database unavailable", "The database did not answer during the request; retry"),
}

# Headers the refusals always carry (api/problems.py sets them).
_PROBLEM_HEADERS: dict[str, tuple[str, OpenAPIHeader]] = {
    "401": ("WWW-Authenticate", OpenAPIHeader(schema=Schema(type=OpenAPIType.STRING), required=True)),
    "429": (
        "Retry-After",
        OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), required=True, description="Seconds to wait"),
    ),
    "503": (
        "Retry-After",
        OpenAPIHeader(schema=Schema(type=OpenAPIType.INTEGER), required=True, description="Seconds to wait"),
    ),
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """Problem-details responses for ``statuses``, for a route decorator's ``responses=``."""
    specs = {}
    for status in statuses:
        slug, title, description = _PROBLEMS[status]
        example = {"type": problem_type(slug), "title": title, "status": status, "detail": description}
        specs[status] = ResponseSpec(
            data_container=ProblemDetails,
            description=description,
            media_type=_PROBLEM_MEDIA_TYPE,
            generate_examples=False,
            examples=[Example(summary=slug, value={**example, "instance": "/api/v1/..."})],
        )
    return specs


def response(data_container: Any, description: str, media_type: str = "application/json") -> ResponseSpec:
    """A documented response other than a problem (a 200 a route encodes itself, an OFREP error, a 304)."""
    return ResponseSpec(
        data_container=data_container, description=description, media_type=media_type, generate_examples=False
    )


def _inline_schema(schema_type: Any) -> dict[str, Any]:
    """The JSON Schema of a msgspec type with its definitions inlined (a request body has no components of its
    own to point into)."""
    schema = msgspec.json.schema(schema_type)
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            reference = node.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                return inline(definitions[reference.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


@dataclasses.dataclass
class DocumentedOperation(Operation):
    """An operation as this API documents it: without Litestar's own validation-error body (the app never sends
    it: a refusal is problem details, added per route), with the headers refusals always carry, and with the body
    of a route that reads its own."""

    documented_body: ClassVar[RequestBody | None] = None
    #: What the route answers a body it cannot accept (None: it says so in a status of its own, as OFREP does).
    invalid_body_status: ClassVar[int | None] = 422

    def __post_init__(self) -> None:
        responses = self.responses or {}
        for status, answer in list(responses.items()):
            content = getattr(answer, "content", None) or {}
            schema = getattr(content.get("application/json"), "schema", None)
            if isinstance(schema, Schema) and set(schema.properties or ()) == {"status_code", "detail", "extra"}:
                del responses[status]
            elif isinstance(answer, OpenAPIResponse) and _PROBLEM_MEDIA_TYPE in content and status in _PROBLEM_HEADERS:
                name, header = _PROBLEM_HEADERS[status]
                answer.headers = {**(answer.headers or {}), name: header}
        if self.documented_body is not None:
            self.request_body = self.documented_body


def request_body(
    schema_type: Any,
    *,
    description: str,
    media_types: Iterable[str] = ("application/json",),
    required: bool = True,
    invalid_body_status: int | None = 422,
) -> type[DocumentedOperation]:
    """An ``operation_class=`` for a route that reads its body itself (no ``data`` parameter): documents the body
    as ``schema_type``'s JSON Schema under each of ``media_types``."""
    # to_schema() passes a plain JSON Schema dict through as it is.
    schema = cast(Schema, _inline_schema(schema_type))
    body = RequestBody(
        content={media: OpenAPIMediaType(schema=schema) for media in media_types},
        description=description,
        required=required,
    )
    name = getattr(schema_type, "__name__", "Body") + "Operation"
    attributes = {"documented_body": body, "invalid_body_status": invalid_body_status}
    return dataclasses.dataclass(type(name, (DocumentedOperation,), attributes))


def _body_refusals(handler: HTTPRouteHandler) -> set[int]:
    """What a route with a body answers a body it cannot take: not JSON (400), too large (413), not acceptable."""
    if "data" in handler.parsed_fn_signature.parameters:
        return {400, 413, 422}
    operation = handler.operation_class
    if issubclass(operation, DocumentedOperation) and operation.documented_body is not None:
        invalid = operation.invalid_body_status
        return {400, 413} if invalid is None else {400, 413, invalid}
    return set()


def route_problems(handler: HTTPRouteHandler, parameters: KwargsModel, path_parameters: Mapping[str, Any]) -> set[int]:
    """The problem statuses a route can answer, from what it declares (see the module docstring)."""
    statuses: set[int] = set()
    if not handler.opt.get("public"):
        statuses |= {401, 403, 429, 503}
    if path_parameters:
        statuses.add(404)
    if any(parameter.type is int for parameter in path_parameters.values()):
        statuses.add(422)  # an id outside 1..2^31-1 is refused before any query
    statuses |= _body_refusals(handler)
    # Query parameters and required headers are validated by Litestar: a value it refuses is 422 `invalid-body`.
    headers = {parameter.field_alias.lower(): parameter for parameter in parameters.expected_header_params}
    if parameters.expected_query_params or any(header.is_required for header in headers.values()):
        statuses.add(422)
    if "if-match" in headers:
        statuses |= {409, 428}  # a revision-checked change: stale (409) or not sent (428)
    return statuses


class RouteDocumentation(ReceiveRoutePlugin):
    """Adds the security requirement and the problem responses to each route as the app registers it."""

    def receive_route(self, route: BaseRoute) -> None:
        """Document every handler of ``route`` that is in the schema."""
        if not isinstance(route, HTTPRoute):
            return
        for handler, parameters in route.route_handler_map.values():
            if not handler.resolve_include_in_schema():
                continue
            declared = dict(handler.responses or {})
            derived = problems(*(route_problems(handler, parameters, route.path_parameters) - set(declared)))
            handler.responses = {**derived, **declared}
            if not handler.opt.get("public"):
                handler.security = TOKEN_REQUIRED
            if not issubclass(handler.operation_class, DocumentedOperation):
                handler.operation_class = DocumentedOperation


class _SwaggerFromPackage(SwaggerRenderPlugin):
    """Swagger UI from the files shipped in the package: the page renders without reaching the internet."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{_ASSETS}/swagger-ui-bundle.js",
            css_url=f"{_ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{_ASSETS}/swagger-ui-standalone-preset.js",
            path="/swagger",
            favicon=f"<link rel='icon' type='image/png' href='{_ASSETS}/favicon-32x32.png'>",
        )


def openapi_config(*, title: str, version: str, description: str) -> OpenAPIConfig:
    """The app's OpenAPI configuration: the document at /schema/openapi.json, Swagger UI at /schema and
    /schema/swagger, both public, and the token schemes the API accepts."""
    assets = create_static_files_router(
        path="/assets", directories=[SWAGGER_UI_DIR], include_in_schema=False, opt={"public": True}
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        description=description,
        path=DOCS_PATH,
        # The API's description is not a secret; publishing it lets the docs page load in a browser.
        openapi_router=Router(path=DOCS_PATH, route_handlers=[assets], opt={"public": True}, include_in_schema=False),
        render_plugins=[_SwaggerFromPackage()],
        components=Components(
            security_schemes={
                BEARER: SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A token from `controlplane tokens create` (or printed once by `serve`)",
                ),
                API_KEY: SecurityScheme(
                    type="apiKey",
                    name="X-API-Key",
                    security_scheme_in="header",
                    description="The same token, in the `X-API-Key` header",
                ),
            }
        ),
    )
