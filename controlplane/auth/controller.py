"""HTTP routes of API tokens (`admin`)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from controlplane.api.dependencies import DbSession, Now, ProcessSettings, TokenPrincipal
from controlplane.auth import service
from controlplane.auth.roles import Role
from controlplane.auth.schemas import TokenCreate, TokenCreated, TokenRead

__all__ = ["TokenController"]


class TokenController(Controller):
    """Create, list and revoke tokens."""

    path = "/tokens"
    tags = ["tokens"]
    opt = {"role": Role.ADMIN}

    @get("/", sync_to_thread=True, summary="List tokens")
    def list_tokens(self, session: DbSession) -> list[TokenRead]:
        """Every token, never its secret."""
        return service.list_tokens(session)

    @post("/", sync_to_thread=True, summary="Create a token")
    def create_token(
        self,
        session: DbSession,
        data: JSONBody[TokenCreate],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
    ) -> TokenCreated:
        """Create a token; its secret is in this response and nowhere else, ever."""
        return service.create_token(
            session, request=data, actor=principal.name, environments=settings.environments, now=now
        )

    @delete("/{name:str}", sync_to_thread=True, status_code=200, summary="Revoke a token")
    def revoke_token(
        self,
        session: DbSession,
        name: FromPath[str],
        principal: TokenPrincipal,
        now: Now,
        reason: Annotated[str | None, QueryParameter(name="reason", required=False)] = None,
    ) -> TokenRead:
        """Revoke a token; it stops working on the next request."""
        return service.revoke_token(session, name=name, actor=principal.name, reason=reason, now=now)
