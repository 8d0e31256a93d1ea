"""Roles and what each may do, as every route declares them: a pure decision, shared by the guards and the route-table
test."""

from __future__ import annotations

import enum

__all__ = ["Role", "grants"]


class Role(enum.StrEnum):
    """A token's role. viewer < operator < admin; ingest and evaluate are service roles beside them."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    INGEST = "ingest"
    EVALUATE = "evaluate"


_MANAGEMENT_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}


def grants(held: Role, required: Role) -> bool:
    """True when a token with role ``held`` may call a route that requires ``required``."""
    if held is Role.ADMIN:
        return True
    if required in _MANAGEMENT_RANK:
        return _MANAGEMENT_RANK.get(held, 0) >= _MANAGEMENT_RANK[required]
    # Service roles are not a rank: an ingest token may only ingest, an evaluate token only evaluate.
    return held is required
