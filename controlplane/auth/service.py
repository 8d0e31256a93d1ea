"""Creating, listing, revoking and checking API tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.api.roles import Role
from controlplane.audit.service import append_audit_record
from controlplane.auth import tokens
from controlplane.auth.models import ApiToken
from controlplane.auth.schemas import Principal, TokenCreate, TokenCreated, TokenRead
from controlplane.errors import Conflict, InvalidInput, NotFound

#: Actors the control plane writes itself; tokens may not take these names.
RESERVED_ACTORS = frozenset({"scheduler", "bootstrap", "system", "alertmanager"})

__all__ = [
    "RESERVED_ACTORS",
    "authenticate",
    "create_token",
    "has_token_with_role",
    "list_tokens",
    "revoke_token",
    "to_read",
]


def to_read(row: ApiToken) -> TokenRead:
    """The listable form of a token."""
    return TokenRead(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        prefix=row.token_prefix,
        environment=row.environment,
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_token(
    session: Session, *, request: TokenCreate, actor: str, environments: Sequence[str], now: datetime
) -> TokenCreated:
    """Create a token and audit it; the secret is returned here and never again."""
    if request.environment is not None and request.role is not Role.EVALUATE:
        raise InvalidInput(
            "invalid-field",
            f"only evaluate tokens are scoped to an environment; a {request.role.value} token acts on all of them",
            field="environment",
        )
    if request.name in RESERVED_ACTORS or request.name.startswith("cli:"):
        raise InvalidInput(
            "reserved-token-name",
            f"`{request.name}` is the control plane's own name in the audit log; choose another token name",
            field="name",
        )
    if request.environment is not None and request.environment not in environments:
        raise InvalidInput(
            "unknown-environment",
            f"environment `{request.environment}` is not one of {', '.join(environments)}",
            field="environment",
        )
    if session.scalar(select(ApiToken.id).where(ApiToken.name == request.name)) is not None:
        raise Conflict("token-name-taken", f"a token named `{request.name}` already exists", name=request.name)
    secret = tokens.new_token()
    row = ApiToken(
        name=request.name,
        role=request.role.value,
        token_digest=tokens.digest_token(secret),
        token_prefix=tokens.display_prefix(secret),
        environment=request.environment,
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    session.flush()
    details = to_read(row)
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="token.create",
        target_type="token",
        target=row.name,
        after={"role": row.role, "prefix": row.token_prefix, "environment": row.environment},
    )
    return TokenCreated(token=secret, details=details)


def list_tokens(session: Session) -> list[TokenRead]:
    """Every token, revoked ones included, oldest first."""
    return [to_read(row) for row in session.scalars(select(ApiToken).order_by(ApiToken.id))]


def revoke_token(session: Session, *, name: str, actor: str, reason: str | None, now: datetime) -> TokenRead:
    """Revoke a token by name; it stops working at once. Revoking twice is refused."""
    row = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        raise NotFound("token-not-found", f"no token named `{name}`", name=name)
    if row.revoked_at is not None:
        raise Conflict("token-already-revoked", f"token `{name}` was revoked at {row.revoked_at.isoformat()}")
    if row.role == Role.ADMIN.value and _active_admins(session) == 1:
        raise Conflict(
            "last-admin-token",
            f"`{name}` is the last admin token; create another admin token before revoking it, "
            "or nobody could manage tokens any more",
        )
    row.revoked_at = now
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action="token.revoke",
        target_type="token",
        target=name,
        reason=reason,
        before={"revoked": False},
        after={"revoked": True},
    )
    session.flush()
    return to_read(row)


def _active_admins(session: Session) -> int:
    query = select(func.count(ApiToken.id)).where(ApiToken.role == Role.ADMIN.value, ApiToken.revoked_at.is_(None))
    return session.scalar(query) or 0


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal behind a presented token, or None when it is unknown or revoked."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_digest == tokens.digest_token(presented)))
    # The lookup is by digest of an unguessable secret; compare_digest closes the last timing gap anyway.
    if row is None or row.revoked_at is not None or not tokens.matches(presented, row.token_digest):
        return None
    return Principal(token_id=row.id, name=row.name, role=Role(row.role), environment=row.environment)


def has_token_with_role(session: Session, role: Role) -> bool:
    """True when at least one unrevoked token holds ``role``."""
    query = select(ApiToken.id).where(ApiToken.role == role.value, ApiToken.revoked_at.is_(None)).limit(1)
    return session.scalar(query) is not None
