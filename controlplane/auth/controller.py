"""HTTP routes of API tokens (`admin`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.params import QueryParameter
from sqlalchemy.orm import Session

from controlplane.auth import service
from controlplane.auth.roles import Role
from controlplane.auth.schemas import Principal, TokenCreate, TokenCreated, TokenRead
from controlplane.settings import Settings

__all__ = ["TokenController"]


class TokenController(Controller):
    """Create, list and revoke tokens."""

    path = "/tokens"
    tags = ["tokens"]
    opt = {"role": Role.ADMIN}

    @get("/", sync_to_thread=True, summary="List tokens")
    def list_tokens(self, session: Session) -> list[TokenRead]:
        """Every token, never its secret."""
        return service.list_tokens(session)

    @post("/", sync_to_thread=True, summary="Create a token")
    def create_token(
        self, session: Session, data: TokenCreate, principal: Principal, now: datetime, settings: Settings
    ) -> TokenCreated:
        """Create a token; its secret is in this response and nowhere else, ever."""
        return service.create_token(
            session, request=data, actor=principal.name, environments=settings.environments, now=now
        )

    @delete("/{name:str}", sync_to_thread=True, status_code=200, summary="Revoke a token")
    def revoke_token(
        self,
        session: Session,
        name: str,
        principal: Principal,
        now: datetime,
        reason: Annotated[str | None, QueryParameter(name="reason", required=False)] = None,
    ) -> TokenRead:
        """Revoke a token; it stops working on the next request."""
        return service.revoke_token(session, name=name, actor=principal.name, reason=reason, now=now)
