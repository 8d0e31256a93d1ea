"""Health checks: the only routes open without a token."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from sqlalchemy import Engine, text

from controlplane.api.openapi import response
from controlplane.db import DatabaseTimeout, in_thread
from controlplane.migrate import current_revisions, shipped_heads

__all__ = ["READY_DEADLINE_SECONDS", "ReadinessLog", "healthz", "readyz"]

logger = logging.getLogger(__name__)


@get("/healthz", opt={"public": True}, tags=["health"], summary="Process alive")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


#: /readyz answers within this, whatever the database does: a probe that hangs tells the orchestrator nothing.
READY_DEADLINE_SECONDS = 2.0


def _database_ready(engine: Engine) -> bool:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        return current_revisions(connection) == shipped_heads()


class ReadinessLog:
    """Says once when /readyz stops answering ok, and why, and once when it is ready again: probes leave no access
    line (controlplane.logs), and a probe every few seconds through an outage should not leave one each either."""

    def __init__(self) -> None:
        self._unready_since: float | None = None
        self._lock = threading.Lock()

    def answered(self, problem: str | None) -> None:
        """Record a probe's answer: ``problem`` says why it was not ready, None when it was."""
        with self._lock:
            since = self._unready_since
            if (problem is None) == (since is None):
                return  # no change: still ready, or still not
            self._unready_since = time.monotonic() if problem is not None else None
        if problem is not None:
            logger.warning("not ready (database: %s)", problem)
        elif since is not None:
            logger.info("ready again after %.0f s", time.monotonic() - since)


def _readiness_log(state: State) -> ReadinessLog:
    # Made on first use, one per app: the probe is the only writer.
    log = state.get("readiness_log")
    if not isinstance(log, ReadinessLog):
        log = ReadinessLog()
        state["readiness_log"] = log
    return log


@get(
    "/readyz",
    opt={"public": True},
    tags=["health"],
    summary="Ready to serve",
    responses={503: response(dict[str, str], "The database does not answer, or its schema is not at head")},
)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """The database answers and its schema is at the newest migration, within 2 s; 503 otherwise."""
    problem = await _readiness_problem(state)
    _readiness_log(state).answered(problem)
    if problem is not None:
        return Response({"status": "unavailable", "database": problem}, status_code=503)
    return Response({"status": "ok", "database": "ok"})


async def _readiness_problem(state: State) -> str | None:
    try:
        at_head = await in_thread(_database_ready, state.engine, deadline=READY_DEADLINE_SECONDS)
    except DatabaseTimeout:
        return f"no answer within {READY_DEADLINE_SECONDS:g} s"
    except Exception as error:
        return f"unreachable: {type(error).__name__}"
    return None if at_head else "schema is not at the newest migration"
