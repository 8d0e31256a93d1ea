"""Health checks: the only routes open without a token."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import Engine, text

from controlplane.api.openapi import response
from controlplane.db import DatabaseTimeout, in_thread
from controlplane.migrate import is_at_head

__all__ = ["READY_DEADLINE_SECONDS", "healthz", "readyz"]


@get("/healthz", opt={"public": True}, tags=["health"], summary="Process alive")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


#: /readyz answers within this, whatever the database does: a probe that hangs tells the orchestrator nothing.
READY_DEADLINE_SECONDS = 2.0


def _database_ready(engine: Engine) -> bool:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return is_at_head(engine)


@get(
    "/readyz",
    opt={"public": True},
    tags=["health"],
    summary="Ready to serve",
    responses={503: response(dict[str, str], "The database does not answer, or its schema is not at head")},
)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """The database answers and its schema is at the newest migration, within 2 s; 503 otherwise."""
    try:
        at_head = await in_thread(_database_ready, state.engine, deadline=READY_DEADLINE_SECONDS)
    except DatabaseTimeout:
        unanswered = f"no answer within {READY_DEADLINE_SECONDS:g} s"
        return Response({"status": "unavailable", "database": unanswered}, status_code=503)
    except Exception as error:
        return Response({"status": "unavailable", "database": f"unreachable: {type(error).__name__}"}, status_code=503)
    if not at_head:
        return Response({"status": "unavailable", "database": "schema is not at the newest migration"}, status_code=503)
    return Response({"status": "ok", "database": "ok"})
