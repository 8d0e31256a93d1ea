"""HTTP routes of evaluation (`evaluate` role): OFREP, the environment snapshot, and the change stream.

Every route here answers from the replica's in-memory configuration feed; none touches the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Controller, Litestar, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.exceptions import TooManyRequestsException
from litestar.params import HeaderParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, HTTPScope, Receive, Send
from openfeature.exception import ErrorCode

from controlplane.api.asgi import answered_by, header, read_body
from controlplane.api.dependencies import Now, ProcessMetrics, from_state
from controlplane.api.openapi import problems, request_body, response
from controlplane.api.rate_limits import RateLimiter
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.auth.guards import STREAM_CREDENTIAL_PARAMETER, STREAM_EXPIRES_AT, rate_limit_identity
from controlplane.auth.schemas import Principal
from controlplane.auth.stream_credentials import StreamCredentials
from controlplane.clock import Clock
from controlplane.errors import DomainError, InvalidInput
from controlplane.evaluation import ofrep
from controlplane.evaluation.feed import ConfigurationFeed, EnvironmentConfiguration
from controlplane.evaluation.schemas import OfrepBulkEvaluation, OfrepError, OfrepEvaluation, OfrepEvaluationRequest
from controlplane_client.provider.engine import evaluate_flag, flag_not_found
from controlplane_client.provider.snapshot import Snapshot

__all__ = ["STREAM_PATH", "EvaluationController", "OfrepController", "answer_flag", "limit_evaluation"]

STREAM_PATH = "/evaluation/v1/stream"
KEEPALIVE_SECONDS = 15.0
CREDENTIAL_STREAM_RETRY_MS = 500
JSON = "application/json"
Feed = NamedDependency[ConfigurationFeed]
Credentials = NamedDependency[StreamCredentials]
EnvironmentHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Environment", required=False, description="environment, for tokens not scoped to one"),
]


def limit_evaluation(connection: ASGIConnection[Any, Any, Any, Any], principal: Principal | None) -> None:
    """Refuse an evaluation request over the token's per-second limit with 429 and Retry-After (a `RequestLimit`,
    counted by the `authorize` guard once the caller is known)."""
    limiter: RateLimiter = connection.app.state.evaluation_limiter
    # Counted by the authenticated token: one id per token, with no header parsing or hashing again on the hottest
    # route. A request without a principal (a preflight) is counted by what it presents.
    identity = f"token:{principal.token_id}" if principal is not None else rate_limit_identity(connection)
    wait = limiter.retry_after(identity)
    if wait is not None:
        raise TooManyRequestsException(
            detail="evaluation rate limit exceeded for this token", headers={"Retry-After": str(wait)}
        )


class EnvironmentRequired(DomainError):
    """The request does not say which environment to evaluate in."""

    status_code = 400
    title = "Environment required"


def _configuration(feed: ConfigurationFeed, principal: Principal, requested: str | None) -> EnvironmentConfiguration:
    """The configuration of the environment this request evaluates in: the token's, or the header's."""
    if principal.environment is not None:
        if requested is not None and requested != principal.environment:
            raise InvalidInput(
                "environment-mismatch",
                f"token `{principal.name}` is scoped to {principal.environment}, not {requested}",
            )
        environment = principal.environment
    elif requested is None:
        raise EnvironmentRequired(
            "environment-required", "this token is not scoped to an environment: send `X-Environment`"
        )
    else:
        environment = requested
    configuration = feed.current(environment)
    if configuration is None:
        raise InvalidInput("unknown-environment", f"no configuration for environment `{environment}`")
    return configuration


def _json(body: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> ASGIResponse:
    # OFREP answers are encoded here: handed to the server as they are, with no Response to render on the way.
    return ASGIResponse(body=msgspec.json.encode(body), status_code=status_code, media_type=JSON, headers=headers)


def _ofrep_request(
    feed: ConfigurationFeed, principal: Principal, environment: str | None, key: str | None, body: bytes
) -> tuple[EnvironmentConfiguration, dict[str, Any]] | ASGIResponse:
    """The configuration and context an OFREP request evaluates against, or its OFREP-shaped 400."""
    try:
        configuration = _configuration(feed, principal, environment)
    except DomainError as error:
        # OFREP clients read errorCode/errorDetails from a 400, not problem details.
        return _json(ofrep.error_body(key, ErrorCode.GENERAL, error.detail), 400)
    try:
        return configuration, ofrep.parse_context(body)
    except ofrep.ContextError as error:
        return _json(ofrep.error_body(key, error.code, error.details), 400)


async def answer_flag(scope: HTTPScope, receive: Receive, send: Send) -> None:
    """OFREP single-flag evaluation, answered from ASGI once the guard has authenticated the token and counted the
    request against its evaluation limit: the cached 200 of the outcome, 404 FLAG_NOT_FOUND, or an OFREP 400."""
    app: Litestar = scope["litestar_app"]
    state = app.state
    principal: Principal = scope["state"]["principal"]
    key: str = scope["path_params"]["key"]
    body = await read_body(scope, receive)
    parsed = _ofrep_request(state.feed, principal, header(scope, b"x-environment"), key, body)
    if isinstance(parsed, ASGIResponse):
        await parsed(scope, receive, send)
        return
    configuration, context = parsed
    state.metrics.ofrep_evaluations.inc()
    flag = configuration.flags.get(key)
    if flag is None:
        missing = flag_not_found(key)
        answer = _json(ofrep.error_body(key, ErrorCode.FLAG_NOT_FOUND, missing.error_message or ""), 404)
    else:
        answer = configuration.success_answer(evaluate_flag(flag, context))
    await answer(scope, receive, send)


class OfrepController(Controller):
    """OpenFeature Remote Evaluation Protocol: single-flag and bulk evaluation."""

    path = "/ofrep/v1/evaluate"
    tags = ["ofrep"]
    opt = {"role": Role.EVALUATE}
    dependencies = {
        "feed": from_state("feed"),
        "credentials": from_state("stream_credentials"),
    }

    @post(
        "/flags/{key:str}",
        status_code=200,
        summary="Evaluate one flag (OFREP)",
        operation_class=request_body(
            OfrepEvaluationRequest, description="The evaluation context", required=False, invalid_body_status=None
        ),
        # The hottest route, answered straight from ASGI behind the same middlewares, guard and exception handlers:
        # no Request, parameter parsing or Response rendering on its way (bench.ofrep_throughput).
        middleware=[answered_by(answer_flag)],
        responses={
            200: response(OfrepEvaluation, "The flag resolved for the context"),
            400: response(OfrepError, "PARSE_ERROR, INVALID_CONTEXT, or GENERAL (no or unknown environment)"),
            404: response(OfrepError, "FLAG_NOT_FOUND"),
        },
    )
    async def evaluate_flag(self) -> ASGIApp:
        """Resolve one flag for the context in the body (`X-Environment` names the environment for a token not
        scoped to one)."""
        # Declares and documents the route; `answer_flag`, its middleware, answers it.
        raise NotImplementedError("answered by answer_flag")

    @post(
        "/flags",
        status_code=200,
        summary="Evaluate every flag (OFREP bulk)",
        operation_class=request_body(
            OfrepEvaluationRequest, description="The evaluation context", required=False, invalid_body_status=None
        ),
        responses={
            200: response(OfrepBulkEvaluation, "Every flag resolved for the context (with an `ETag`)"),
            304: response(None, "Neither the configuration nor the context changed since `If-None-Match`"),
            400: response(OfrepError, "PARSE_ERROR, INVALID_CONTEXT, or GENERAL (no or unknown environment)"),
        },
    )
    async def evaluate_flags(
        self,
        request: Request[Any, Any, Any],
        principal: TokenPrincipal,
        environment: EnvironmentHeader,
        if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match", required=False)],
        feed: Feed,
        metrics: ProcessMetrics,
        credentials: Credentials,
        now: Now,
    ) -> ASGIApp:
        """Resolve every flag for one context; 304 when neither the configuration, the context nor the stream
        credential's window changed."""
        parsed = _ofrep_request(feed, principal, environment, None, await request.body())
        if isinstance(parsed, ASGIResponse):
            return parsed
        configuration, context = parsed
        at = now.timestamp()
        etag = ofrep.bulk_etag(configuration.environment, configuration.revision, context, credentials.epoch(at))
        if ofrep.etag_matches(if_none_match, etag):
            return ASGIResponse(status_code=304, headers={"ETag": etag})
        # A browser's EventSource sends no headers: the URL carries a grant of this one environment (ADR-0008:
        # "the URL may include auth tokens"), the same all through its window, so the client keeps its stream open.
        credential = credentials.mint(
            environment=configuration.environment, token_id=principal.token_id, token_name=principal.name, now=at
        )
        stream = f"{str(request.base_url).rstrip('/')}{STREAM_PATH}?{STREAM_CREDENTIAL_PARAMETER}={credential}"
        metrics.evaluations.labels("ofrep_bulk").inc(len(configuration.flags))
        body = {
            "flags": [ofrep.success_body(evaluate_flag(flag, context)) for flag in configuration.flags.values()],
            "metadata": {"environment": configuration.environment, "revision": configuration.revision},
            # ADR-0008: a stream that only says when to refetch.
            "eventStreams": [{"type": "sse", "url": stream, "inactivityDelaySec": 120}],
        }
        return _json(body, headers={"ETag": etag})


class EvaluationController(Controller):
    """For in-process providers: the whole environment's configuration, and a stream of change notices."""

    path = "/evaluation/v1"
    tags = ["evaluation"]
    opt = {"role": Role.EVALUATE}
    dependencies = {"feed": from_state("feed")}

    @get(
        "/snapshot",
        summary="Compiled configuration of one environment",
        responses={
            200: response(Snapshot, "Every flag of the environment (with an `ETag`)"),
            304: response(None, "The configuration did not change since `If-None-Match`"),
            **problems(400, 422),
        },
    )
    async def snapshot(
        self,
        principal: TokenPrincipal,
        environment: EnvironmentHeader,
        if_none_match: Annotated[str | None, HeaderParameter(name="If-None-Match", required=False)],
        feed: Feed,
    ) -> Response[bytes]:
        """Every flag of the environment at its current revision; 304 when the client already has it."""
        configuration = _configuration(feed, principal, environment)
        headers = {"ETag": configuration.etag}
        if ofrep.etag_matches(if_none_match, configuration.etag):
            return Response(b"", status_code=304, headers=headers)
        return Response(configuration.snapshot_json, media_type="application/json", headers=headers, status_code=200)

    # `stream_credential`: a browser's EventSource opens this route with the credential of OFREP's eventStreams URL.
    @get(
        "/stream",
        summary="Server-sent events: a notice on every configuration change",
        description=(
            "Authenticated by a token header, or (for a browser's EventSource, which sends none) by the `credential` "
            "query parameter of the URL that OFREP's bulk answer advertises in `eventStreams`: one environment, "
            "this route only, until it expires; the stream then ends."
        ),
        opt={"stream_credential": True},
        responses={200: response(str, "`refetchEvaluation` notices", "text/event-stream"), **problems(400, 422)},
    )
    async def stream(
        self, request: Request[Any, Any, Any], principal: TokenPrincipal, environment: EnvironmentHeader, feed: Feed
    ) -> ServerSentEvent:
        """Send the current revision, then one `refetchEvaluation` message per new revision, with keep-alives; a
        stream opened with a stream credential ends when the credential expires."""
        name = _configuration(feed, principal, environment).environment
        expires_at: float | None = request.state.get(STREAM_EXPIRES_AT)
        return ServerSentEvent(_notices(feed, name, expires_at=expires_at, clock=request.app.state.clock))


async def _notices(
    feed: ConfigurationFeed, environment: str, *, expires_at: float | None = None, clock: Clock | None = None
) -> AsyncIterator[ServerSentEventMessage]:
    def remaining() -> float:
        if expires_at is None or clock is None:
            return KEEPALIVE_SECONDS
        return expires_at - clock().timestamp()

    with feed.subscription(environment) as queue:
        current = feed.current(environment)
        revision = current.revision if current else 0
        while True:
            yield ServerSentEventMessage(
                data=msgspec.json.encode(
                    {
                        "type": "refetchEvaluation",
                        "environment": environment,
                        "revision": revision,
                        "etag": f'"{environment}-{revision}"',
                    }
                ).decode(),
                id=revision,
                # A browser reconnects after `retry` ms: after a credential's stream ends, soon, so that its 401 sends
                # the OFREP provider to the bulk evaluation for a fresh URL without a long dark spell.
                retry=CREDENTIAL_STREAM_RETRY_MS if expires_at is not None else None,
            )
            sent = revision
            while True:
                left = remaining()
                if left <= 0:
                    # The credential that opened this stream has expired: the stream lives no longer than its grant,
                    # so a revoked browser token loses its streams within a credential's lifetime.
                    return
                try:
                    revision = await asyncio.wait_for(queue.get(), timeout=min(KEEPALIVE_SECONDS, left))
                except TimeoutError:
                    if remaining() <= 0:
                        return
                    # A comment line every so often: proxies keep the connection, clients notice a dead one.
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                    continue
                # A change published while this stream was opening is already in the first notice: say each
                # revision once.
                if revision > sent:
                    break
