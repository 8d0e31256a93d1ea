"""One guard for every route: it reads the role a route declares and refuses callers below it.

A route declares ``opt={"role": Role.X}`` (usually on its controller) or ``opt={"public": True}``. A route
that declares neither is refused to everyone, so a new route cannot ship unprotected by forgetting. A route that
declares ``opt={"token_cookie": NAME}`` also accepts the token from that cookie (the operator's page). A route that
declares ``opt={REQUEST_LIMIT: limit}`` has ``limit`` counted once its caller is known (the evaluation routes'
per-token limit): in this guard rather than a second one, since Litestar copies the route handler for every guard
it runs, a cost the hottest route paid twice per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.datastructures import Headers
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.roles import Role, grants
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import Principal
from controlplane.auth.stream_credentials import STREAM_CREDENTIAL_PREFIX, StreamCredentialRefused, StreamCredentials
from controlplane.auth.tokens import digest_token
from controlplane.db import UNAVAILABLE, in_thread, start_request_deadline

__all__ = [
    "REQUEST_LIMIT",
    "STREAM_CREDENTIAL_PARAMETER",
    "STREAM_EXPIRES_AT",
    "PrincipalCache",
    "RequestLimit",
    "address_identity",
    "authorize",
    "presented_token",
    "rate_limit_identity",
]

#: The query parameter of a stream credential; only a route with ``opt={"stream_credential": True}`` reads it.
STREAM_CREDENTIAL_PARAMETER = "credential"
#: Where the guard leaves a stream credential's expiry (Unix seconds) for the route it opened.
STREAM_EXPIRES_AT = "stream_expires_at"
#: The route option naming a per-request limit, counted after authentication.
REQUEST_LIMIT = "request_limit"
#: A per-request limit: given the connection and its principal (None on a public route or a preflight), it raises
#: to refuse the request.
RequestLimit = Callable[[ASGIConnection[Any, Any, Any, Any], "Principal | None"], None]

logger = logging.getLogger(__name__)


def presented_token(headers: Headers) -> str | None:
    """The token in `Authorization: Bearer ...` or `X-API-Key`, if any."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


def rate_limit_identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """What management requests are counted by: the token (by digest), else the client address."""
    token = presented_token(connection.headers)
    if token is not None:
        return "token:" + digest_token(token)[:32]
    return address_identity(connection)


def address_identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The client address: a second limit, so inventing a fresh token per request does not escape limiting."""
    client = connection.client
    return "address:" + (client.host if client else "unknown")


class PrincipalCache:
    """Token lookups remembered for a few seconds, so evaluation traffic does not hit the database per request.

    A revocation through this replica clears the cache at once; other replicas honour it within the TTL.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, tuple[Principal | None, float]] = {}
        # Tokens that authenticated, whatever their age: what the replica answers with while its database is down.
        # Bounded by the tokens issued (an unknown token never gets in), so it is never flushed by junk.
        self._known: dict[str, Principal] = {}
        # Evaluation's lookups running behind its answers: one per token at a time, each task held until it ends.
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        # Bumped by clear(): a lookup that began before a revocation must not store what it read before it.
        self._generation = 0

    def get(self, token: str) -> tuple[bool, Principal | None]:
        """(hit, principal) for a presented token; a cached miss is a hit with None."""
        entry = self._entries.get(token)
        if entry is None or entry[1] < time.monotonic():
            return False, None
        return True, entry[0]

    def put(self, token: str, principal: Principal | None) -> None:
        """Remember a lookup's outcome."""
        if len(self._entries) > 10_000:
            # Bounded: random tokens from a client must not grow memory without limit.
            self._entries.clear()
        self._entries[token] = (principal, time.monotonic() + self._ttl)
        if principal is None:
            self._known.pop(token, None)  # revoked (or never issued): refused during an outage too
        else:
            self._known[token] = principal

    def last_known(self, token: str) -> Principal | None:
        """The principal ``token`` last authenticated as on this replica, however long ago; None when it never
        did, or was last seen refused."""
        return self._known.get(token)

    def refresh(self, token: str, lookup: Callable[[], Awaitable[Principal | None]]) -> None:
        """Start ``lookup()`` unless one for ``token`` is already running; store what it finds. A database that
        cannot answer leaves the last known role as it was."""
        if token in self._refreshing:
            return
        generation = self._generation

        async def run() -> None:
            try:
                found = await lookup()
                if generation == self._generation:
                    self.put(token, found)
            except UNAVAILABLE:
                pass  # still unreachable: the next request past the TTL tries again
            except Exception:  # a refresh nobody awaits must still be seen when it breaks
                logger.exception("token lookup behind an evaluation failed")
            finally:
                self._refreshing.pop(token, None)

        self._refreshing[token] = asyncio.get_running_loop().create_task(run())

    def clear(self, revoked: str | None = None) -> None:
        """Forget every fresh lookup (after a revocation), and the token named ``revoked`` for good (all of them when
        not named): the others keep their last known role for an outage."""
        self._generation += 1
        self._entries.clear()
        if revoked is None:
            self._known.clear()
            return
        for token in [token for token, principal in self._known.items() if principal.name == revoked]:
            del self._known[token]


def _lookup(factory: sessionmaker[Session], token: str) -> Principal | None:
    with factory() as session:
        return auth_service.authenticate(session, token)


def _stream_principal(connection: ASGIConnection[Any, Any, Any, Any], credential: str) -> Principal:
    """The evaluate principal a stream credential stands for, or 401 with the reason it grants nothing."""
    credentials: StreamCredentials = connection.app.state.stream_credentials
    now = connection.app.state.clock().timestamp()
    try:
        grant = credentials.verify(credential, now=now)
    except StreamCredentialRefused as refused:
        raise NotAuthorizedException(
            detail=refused.detail, extra={"reason": f"stream-credential-{refused.reason}"}
        ) from refused
    requested = connection.headers.get("x-environment")
    if requested is not None and requested != grant.environment:
        raise NotAuthorizedException(
            detail=f"the stream credential grants {grant.environment}, not {requested}",
            extra={"reason": "stream-credential-environment"},
        )
    connection.state[STREAM_EXPIRES_AT] = float(grant.expires_at)
    return Principal(token_id=grant.token_id, name=grant.token_name, role=Role.EVALUATE, environment=grant.environment)


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Refuse the request unless the route is public or the caller's token grants the route's role, then count it
    against the route's request limit, if it declares one. OPTIONS is open on every route: it only lists the
    methods (a CORS preflight never carries credentials), and Litestar's automatic OPTIONS handler carries its
    controller's opt rather than the route handler's."""
    principal = await _authenticate(connection, handler)
    limit: RequestLimit | None = handler.opt.get(REQUEST_LIMIT)
    if limit is not None:
        limit(connection, principal)


async def _authenticate(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> Principal | None:
    """The caller's principal, left on the connection's state (None on a public route or a preflight); raises 401
    or 403 when the route is closed to it."""
    # One database budget for the whole request: this lookup and the handler's own work share it.
    start_request_deadline(connection.app.state.settings.database_timeout_seconds)
    if handler.opt.get("public") or connection.scope.get("method") == "OPTIONS":
        return None
    required = handler.opt.get("role")
    if not isinstance(required, Role):
        raise PermissionDeniedException(detail="this route declares no role, so it is closed to everyone")
    token = presented_token(connection.headers)
    # Parsed only when there is a query: evaluation's requests carry none, and parsing is a cost they would pay each.
    credential = connection.query_params.get(STREAM_CREDENTIAL_PARAMETER) if connection.scope["query_string"] else None
    if token is None and credential is not None and handler.opt.get("stream_credential"):
        if not grants(Role.EVALUATE, required):  # a credential is an evaluate grant, whatever the route declares
            raise PermissionDeniedException(
                detail=f"a stream credential grants `evaluate`; this route needs `{required}`"
            )
        stream_principal = _stream_principal(connection, credential)
        connection.state.principal = stream_principal
        return stream_principal
    if (token is not None and token.startswith(STREAM_CREDENTIAL_PREFIX)) or (token is None and credential):
        # Checked before any lookup: a stream credential is no token, and the database need not be asked so.
        raise NotAuthorizedException(
            detail="a stream credential opens only the change stream it was issued for, in its URL",
            extra={"reason": "stream-credential-wrong-route"},
        )
    cookie = handler.opt.get("token_cookie")
    if token is None and isinstance(cookie, str):
        # A route for browsers (the operator's page) also takes the token from its sign-in cookie; the route then
        # checks its own CSRF token on every change, since a cookie is sent by whichever page makes the request.
        token = connection.cookies.get(cookie) or None
        connection.state.token_from_cookie = token is not None
    if token is None:
        raise NotAuthorizedException(detail="send a token as `Authorization: Bearer <token>` or `X-API-Key`")
    cache: PrincipalCache = connection.app.state.principals
    hit, principal = cache.get(token)
    if not hit:
        factory: sessionmaker[Session] = connection.app.state.reader
        # Off the event loop: a lookup is a database round trip, bounded like a request's own database work.
        deadline: float = connection.app.state.settings.database_timeout_seconds

        async def lookup() -> Principal | None:
            return await in_thread(_lookup, factory, token, deadline=deadline)

        known = cache.last_known(token)
        if required is Role.EVALUATE and known is not None:
            # Evaluation never waits on the database for a token it has seen: it answers with the last known role
            # while the lookup runs behind it (a frozen database would otherwise cost each such request the
            # lookup's timeout). A revocation elsewhere is therefore honoured within the TTL plus one lookup.
            cache.refresh(token, lookup)
            principal = known
        else:
            try:
                principal = await lookup()
            except UNAVAILABLE:
                # The database is down: a token this replica has seen authenticate keeps its role; an unseen or
                # refused one cannot be checked, and the error stands.
                principal = known
                if principal is None:
                    raise
            else:
                cache.put(token, principal)
    if principal is None:
        raise NotAuthorizedException(detail="the token is unknown or revoked")
    if not grants(principal.role, required):
        raise PermissionDeniedException(
            detail=f"token `{principal.name}` has role `{principal.role}`; this route needs `{required}`",
            extra={"required_role": required.value, "role": principal.role.value},
        )
    connection.state.principal = principal
    return principal
