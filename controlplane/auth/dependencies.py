"""The caller as a handler parameter: ``principal: TokenPrincipal`` is the token the guard authenticated."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide

from controlplane.auth.schemas import Principal

__all__ = ["TokenPrincipal", "dependencies"]

TokenPrincipal = NamedDependency[Principal]


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller, as the guard authenticated it."""
    principal: Principal = request.state.principal
    return principal


dependencies = {"principal": Provide(provide_principal, sync_to_thread=False)}
