"""HTTP routes of the operator's page: pages with `viewer`, the rollout form with `operator`, exactly as the API.

A browser signs in once with an API token (``session``); every route here takes the token from that cookie or, like
the API, from `Authorization`. A change made with the cookie must carry the page's CSRF token (``require_csrf``);
one made with a bearer token needs none (no browser sends it on its own). Changes go through the services the API
uses, audited with the token's name as the actor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec
from litestar import Controller, Request, Response, Router, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import CacheControlHeader, ResponseHeader
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, ServerSentEvent, ServerSentEventMessage
from litestar.static_files import create_static_files_router
from sqlalchemy.orm import Session

from controlplane.api.dependencies import Now, ProcessMetrics, ProcessSettings, Work, from_state
from controlplane.api.roles import Role, grants
from controlplane.api.unit_of_work import UnitOfWork
from controlplane.auth import service as auth_service
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.auth.schemas import Principal
from controlplane.clock import Clock
from controlplane.errors import DomainError, InvalidInput
from controlplane.rollouts import service as rollout_service
from controlplane.rollouts.controller import Announcer, Gates, Hold
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.operations import Operation, RolloutTarget
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.segments import parse_segment
from controlplane.rollouts.status import load_rollout
from controlplane.settings import Settings
from controlplane.ui.live import KEEPALIVE_SECONDS, LivePages, TooManyStreams
from controlplane.ui.pages import SECURITY_HEADERS, render
from controlplane.ui.problems import exception_handlers, wants_html
from controlplane.ui.session import (
    COOKIE_NAME,
    CSRF_FIELD,
    UI_PATH,
    csrf_token,
    is_valid_csrf,
    safe_next,
    sign_in_cookie,
    sign_out_cookie,
)
from controlplane.ui.views import FlagPage, Overview, read_change_marker, read_flag_page, read_overview

__all__ = [
    "OVERVIEW_TOPIC",
    "CsrfRefused",
    "StreamsExhausted",
    "make_live_pages",
    "operation_from_form",
    "require_csrf",
    "root_redirect",
    "ui_router",
]

STATIC = Path(__file__).parent / "static"
OVERVIEW_TOPIC = "overview"
Live = NamedDependency[LivePages]
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Form fields longer than this are refused before anything else reads them (a reason is at most 2,000).
_FIELD_LIMIT = 4000


class CsrfRefused(DomainError):
    """A change sent with the sign-in cookie but without this page's CSRF token."""

    status_code = 403
    title = "Forbidden"


class StreamsExhausted(DomainError):
    """Every live stream this replica allows is open."""

    status_code = 503
    title = "Service unavailable"


def _html(body: str, status_code: int = 200, **kwargs: Any) -> Response[str]:
    return Response(body, status_code=status_code, media_type="text/html", **kwargs)


def _flag_topic(key: str, environment: str) -> str:
    return f"{key}\n{environment}"


async def require_csrf(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """Refuse a change made with the sign-in cookie unless its form carries the CSRF token of that cookie."""
    if connection.scope.get("method") in _SAFE_METHODS or not connection.state.get("token_from_cookie"):
        return
    token = connection.cookies.get(COOKIE_NAME, "")
    presented = None
    if isinstance(connection, Request):
        form = await connection.form()
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not is_valid_csrf(token, presented):
        raise CsrfRefused(
            "csrf-token-invalid",
            "this change came with the sign-in cookie but without the page's CSRF token: reload the page and retry",
        )


def _page_context(request: Request[Any, Any, Any], principal: Principal, settings: Settings) -> dict[str, Any]:
    token = request.cookies.get(COOKIE_NAME)
    return {
        "principal": principal,
        "can_act": grants(principal.role, Role.OPERATOR),
        "csrf_field": CSRF_FIELD,
        "csrf": csrf_token(token) if token else "",
        "environments": settings.environments,
    }


def _read_overview(settings: Settings, now: datetime, gates: GateReader) -> Callable[[Session], Overview]:
    return partial(read_overview, environments=settings.environments, now=now, gates=gates)


def _read_flag_page(
    settings: Settings, target: RolloutTarget, now: datetime, gates: GateReader
) -> Callable[[Session], FlagPage]:
    return partial(
        read_flag_page,
        target=target,
        environments=settings.environments,
        now=now,
        gates=gates,
        window_size=settings.telemetry_window,
    )


def make_live_pages(uow: UnitOfWork, settings: Settings, clock: Clock, gates: GateReader) -> LivePages:
    """The replica's live pages: the change marker and the renders of the overview and of each flag's page."""

    async def marker() -> Hashable:
        return await uow.read(read_change_marker)

    async def render_topic(topic: str) -> str:
        if topic == OVERVIEW_TOPIC:
            overview = await uow.read(_read_overview(settings, clock(), gates))
            return render("overview_live.html", overview=overview)
        key, environment = topic.split("\n")
        page = await uow.read(_read_flag_page(settings, RolloutTarget(key, environment), clock(), gates))
        return render("flag_live.html", page=page)

    return LivePages(marker=marker, render=render_topic)


@get("/", opt={"public": True}, include_in_schema=False)
async def root_redirect() -> Redirect:
    """The root of the server opens the operator's page."""
    return Redirect(path=UI_PATH, status_code=303)


class SignInController(Controller):
    """Signing in with an API token: the only routes of the page open without one."""

    path = f"{UI_PATH}/sign-in"
    opt = {"public": True}
    include_in_schema = False

    @get("/")
    async def form(self, next_path: Annotated[str | None, QueryParameter(name="next")] = None) -> Response[str]:
        """The sign-in form."""
        return _html(render("sign_in.html", next_path=safe_next(next_path), error=None, principal=None))

    @post("/", status_code=303)
    async def sign_in(self, request: Request[Any, Any, Any], uow: Work) -> Response[str]:
        """Check the token once; keep it in an HttpOnly, SameSite=Strict cookie and go on to the page."""
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
            # A sign-in from another site would sign this browser in as whoever that site chose (login CSRF).
            raise CsrfRefused("cross-site-sign-in", f"a sign-in must come from this site's own form, not {origin}")
        form = await request.form()
        token = form.get("token")
        next_path = safe_next(str(form.get("next") or ""))
        if not isinstance(token, str) or not token.strip() or len(token) > _FIELD_LIMIT:
            raise InvalidInput("token-required", "paste an API token to sign in", field="token")
        principal = await uow.read(partial(auth_service.authenticate, presented=token.strip()))
        if principal is None:
            page = render(
                "sign_in.html", next_path=next_path, error="That token is unknown or revoked.", principal=None
            )
            return _html(page, status_code=401)
        if not grants(principal.role, Role.VIEWER):
            page = render(
                "sign_in.html",
                next_path=next_path,
                error=f"Token `{principal.name}` is role `{principal.role}`; the page needs viewer, operator or admin.",
                principal=None,
            )
            return _html(page, status_code=403)
        cookie = sign_in_cookie(token.strip(), secure=request.url.scheme == "https")
        return Response("", status_code=303, headers={"Location": next_path}, cookies=[cookie])


class OperatorPageController(Controller):
    """The overview, each flag's page, the rollout form and the live streams."""

    path = UI_PATH
    opt = {"role": Role.VIEWER, "token_cookie": COOKIE_NAME}
    guards = [require_csrf]
    include_in_schema = False
    dependencies = {"live": from_state("live_pages")}

    @get("/")
    async def overview(
        self,
        request: Request[Any, Any, Any],
        uow: Work,
        principal: TokenPrincipal,
        settings: ProcessSettings,
        now: Now,
        gates: Gates,
    ) -> Response[str]:
        """Every flag against every environment: state, stage, serving percentage, gates."""
        overview = await uow.read(_read_overview(settings, now, gates))
        return _html(render("overview.html", overview=overview, **_page_context(request, principal, settings)))

    @get("/flags/{key:str}/environments/{environment:str}")
    async def flag(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        environment: FromPath[str],
        uow: Work,
        principal: TokenPrincipal,
        settings: ProcessSettings,
        now: Now,
        gates: Gates,
    ) -> Response[str]:
        """One flag's rollout in one environment, with its guards, records and (for operators) the form."""
        page = await uow.read(_read_flag_page(settings, RolloutTarget(key, environment), now, gates))
        return _html(render("flag.html", page=page, **_page_context(request, principal, settings)))

    @post("/flags/{key:str}/environments/{environment:str}/rollout", opt={"role": Role.OPERATOR}, status_code=200)
    async def operate(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        environment: FromPath[str],
        uow: Work,
        principal: TokenPrincipal,
        settings: ProcessSettings,
        now: Now,
        gates: Gates,
        metrics: ProcessMetrics,
        live: Live,
        announcer: Announcer,
        hold: Hold,
    ) -> Response[str]:
        """Start, advance, pause, resume or roll back, as ``POST .../rollout/{operation}`` does (the step told
        through the notification routes, as there)."""
        operation, body = operation_from_form(dict((await request.form()).items()))
        target = RolloutTarget(key, environment, parse_segment(body.segment))
        status = await uow.write(
            partial(
                rollout_service.operate_rollout,
                target=target,
                operation=operation,
                body=body,
                actor=principal.name,
                environments=settings.environments,
                now=now,
                gates=gates,
                announcer=announcer,
                hold=hold,
            )
        )
        if operation is Operation.ROLLBACK:
            metrics.rollbacks.labels(key, environment, "operator").inc()
        live.wake()
        page_path = f"{UI_PATH}/flags/{key}/environments/{environment}"
        if not wants_html(request) or request.headers.get("hx-request") != "true":
            return Response("", status_code=303, headers={"Location": page_path})
        # The page shows the environment (every segment of a plan run per segment), whatever the form acted on.
        page = await uow.read(_read_flag_page(settings, RolloutTarget(key, environment), now, gates))
        return _html(render("action_result.html", operation=operation, status=status, page=page))

    @post("/sign-out", status_code=303)
    async def sign_out(self, request: Request[Any, Any, Any]) -> Response[str]:
        """Forget the sign-in cookie."""
        cookie = sign_out_cookie(secure=request.url.scheme == "https")
        return Response("", status_code=303, headers={"Location": f"{UI_PATH}/sign-in"}, cookies=[cookie])

    @get("/live/overview")
    async def overview_stream(self, live: Live) -> ServerSentEvent:
        """The overview's live part, pushed again whenever it changes."""
        return _live_stream(live, OVERVIEW_TOPIC)

    @get("/live/flags/{key:str}/environments/{environment:str}")
    async def flag_stream(
        self, key: FromPath[str], environment: FromPath[str], uow: Work, settings: ProcessSettings, live: Live
    ) -> ServerSentEvent:
        """A flag's page's live part, pushed again whenever it changes; 404 for a flag or plan that does not exist."""
        await uow.read(
            partial(
                load_rollout,
                target=RolloutTarget(key, environment),
                environments=settings.environments,
                overview=True,
            )
        )
        return _live_stream(live, _flag_topic(key, environment))


def operation_from_form(form: dict[str, Any]) -> tuple[Operation, RolloutOperation]:
    """The operation and body of the rollout form, checked as the API checks its JSON body."""
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    for name, value in fields.items():
        if len(value) > _FIELD_LIMIT:
            raise InvalidInput("invalid-field", f"`{name}` is longer than {_FIELD_LIMIT} characters", field=name)
    try:
        operation = Operation(fields.get("operation", ""))
    except ValueError:
        allowed = ", ".join(item.value for item in Operation)
        raise InvalidInput(
            "invalid-operation", f"`operation` must be one of {allowed}, got {fields.get('operation')!r}"
        ) from None
    revision = fields.get("expected_revision", "").strip()
    if revision and not revision.isdigit():
        raise InvalidInput(
            "invalid-field", f"`expected_revision` must be a number, got {revision!r}", field="expected_revision"
        )
    policy = fields.get("policy", "").strip() if operation is Operation.ROLLBACK else ""
    raw: dict[str, Any] = {
        "reason": fields.get("reason", "").strip() or None,
        "expected_revision": int(revision) if revision else None,
        "force": operation in (Operation.START, Operation.ADVANCE) and fields.get("force") in ("on", "true"),
        "policy": policy or None,
        # A plan run per segment: the segment the form names (``queue=support``); the service refuses it
        # missing or unknown there, and named where the plan runs once.
        "segment": fields.get("segment", "").strip() or None,
    }
    try:
        body = msgspec.convert(raw, RolloutOperation)
    except msgspec.ValidationError as error:
        raise InvalidInput("invalid-field", str(error)) from None
    return operation, body


def _live_stream(live: LivePages, topic: str) -> ServerSentEvent:
    """The stream of ``topic``'s renders; 503 when this replica's streams are all taken."""
    if not live.has_room():
        raise StreamsExhausted("live-streams-exhausted", f"this replica serves {live.stream_count} live pages already")
    return ServerSentEvent(_renders(live, topic))


async def _renders(live: LivePages, topic: str) -> AsyncIterator[ServerSentEventMessage]:
    try:
        with live.stream(topic) as stream:
            while True:
                html = await stream.next(KEEPALIVE_SECONDS)
                if html is None:
                    yield ServerSentEventMessage(comment="keep-alive", data=None)
                else:
                    yield ServerSentEventMessage(event="update", data=html)
    except TooManyStreams:
        return  # taken between the check and the stream's start: the browser reconnects later


async def _with_security_headers(response: Response[Any]) -> Response[Any]:
    """The page's security headers on a static file too (a router's response headers do not reach those)."""
    response.headers.update(SECURITY_HEADERS)
    return response


def ui_router() -> Router:
    """The operator's page: its routes and its vendored assets, browsers' errors answered in HTML."""
    static = create_static_files_router(
        path=f"{UI_PATH}/static",
        directories=[STATIC],
        opt={"public": True},
        # The file names carry their versions, so a browser may keep them.
        cache_control=CacheControlHeader(max_age=86400, public=True),
        include_in_schema=False,
        after_request=_with_security_headers,
    )
    return Router(
        path="/",
        route_handlers=[root_redirect, SignInController, OperatorPageController, static],
        exception_handlers=exception_handlers,
        response_headers=[ResponseHeader(name=name, value=value) for name, value in SECURITY_HEADERS.items()],
    )
