"""Wire types of API tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec

from controlplane.api.roles import Role

__all__ = ["Principal", "TokenCreate", "TokenCreated", "TokenRead"]

TokenName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9@._:-]{0,127}$")]


class TokenCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A token to create; ``environment`` scopes an evaluate token to one environment."""

    name: TokenName
    role: Role
    environment: str | None = None


class TokenRead(msgspec.Struct):
    """A token as listed: never the secret, only its first characters."""

    id: int
    name: str
    role: Role
    prefix: str
    environment: str | None
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class TokenCreated(msgspec.Struct):
    """A token just created: the only time its secret is shown."""

    token: str
    details: TokenRead


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name is the audit actor."""

    token_id: int
    name: str
    role: Role
    environment: str | None
