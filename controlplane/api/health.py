"""Health checks: the only routes open without a token."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import text

from controlplane.migrate import is_at_head

__all__ = ["healthz", "readyz"]


@get("/healthz", opt={"public": True}, tags=["health"], summary="Process alive")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@get("/readyz", opt={"public": True}, sync_to_thread=True, tags=["health"], summary="Ready to serve")
def readyz(state: State) -> Response[dict[str, Any]]:
    """The database answers and its schema is at the newest migration; 503 otherwise."""
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        at_head = is_at_head(state.engine)
    except Exception as error:
        return Response({"status": "unavailable", "database": f"unreachable: {type(error).__name__}"}, status_code=503)
    if not at_head:
        return Response({"status": "unavailable", "database": "schema is not at the newest migration"}, status_code=503)
    return Response({"status": "ok", "database": "ok"})
