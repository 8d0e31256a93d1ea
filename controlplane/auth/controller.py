"""HTTP routes of API tokens (`admin`)."""

from __future__ import annotations

from functools import partial
from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from controlplane.api.dependencies import Now, ProcessSettings, Work, from_state
from controlplane.api.openapi import problems
from controlplane.api.roles import Role
from controlplane.auth import service
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.auth.guards import PrincipalCache
from controlplane.auth.schemas import TokenCreate, TokenCreated, TokenRead

__all__ = ["TokenController"]


class TokenController(Controller):
    """Create, list and revoke tokens."""

    path = "/tokens"
    tags = ["tokens"]
    opt = {"role": Role.ADMIN}
    dependencies = {"principals": from_state("principals")}

    @get("/", summary="List tokens")
    async def list_tokens(self, uow: Work) -> list[TokenRead]:
        """Every token, never its secret."""
        return await uow.read(service.list_tokens)

    @post("/", summary="Create a token", responses=problems(409))
    async def create_token(
        self,
        uow: Work,
        data: JSONBody[TokenCreate],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
    ) -> TokenCreated:
        """Create a token; its secret is in this response and nowhere else, ever."""
        return await uow.write(
            partial(
                service.create_token, request=data, actor=principal.name, environments=settings.environments, now=now
            )
        )

    @delete("/{name:str}", status_code=200, summary="Revoke a token", responses=problems(409))
    async def revoke_token(
        self,
        uow: Work,
        name: FromPath[str],
        principal: TokenPrincipal,
        now: Now,
        principals: NamedDependency[PrincipalCache],
        reason: Annotated[str | None, QueryParameter(name="reason", required=False)] = None,
    ) -> TokenRead:
        """Revoke a token; it stops working on the next request."""
        revoked = await uow.write(
            partial(service.revoke_token, name=name, actor=principal.name, reason=reason, now=now)
        )
        principals.clear(revoked=name)
        return revoked
