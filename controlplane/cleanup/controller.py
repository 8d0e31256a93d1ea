"""HTTP routes of bucket cleanup: policies and runs (`viewer`), starting a run or a purge (`operator`)."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from controlplane.api.dependencies import Now, ProcessSettings, Work
from controlplane.api.openapi import problems
from controlplane.api.paging import RowId
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.auth.schemas import Principal
from controlplane.cleanup import runs, service
from controlplane.cleanup.jobs import CleanupExecutor
from controlplane.cleanup.schemas import CleanupPolicyRead, CleanupRunRead, PurgeRequest, RunRequest
from controlplane.errors import DomainError

__all__ = ["CleanupController"]


class ScopedToken(DomainError):
    """A token scoped to one environment asked for bucket-wide work."""

    status_code = 403
    title = "Forbidden"


def _unscoped(principal: Principal) -> None:
    # Buckets are not per environment: a token limited to one environment must not delete from all of them.
    if principal.environment is not None:
        raise ScopedToken(
            "token-environment-scoped",
            f"token `{principal.name}` is scoped to {principal.environment}; cleanup acts on whole buckets and "
            "needs a token without an environment",
        )


def _start(request: Request[Any, Any, Any], run: CleanupRunRead) -> CleanupRunRead:
    """Run it in this replica now; the leader's tick would otherwise start it within its interval."""
    executor: CleanupExecutor | None = getattr(request.app.state, "cleanup_executor", None)
    if executor is not None:
        executor.submit(run.id)
    return run


class CleanupController(Controller):
    """Cleanup policies from the definitions, their runs, and rollback purges."""

    path = "/cleanup"
    tags = ["cleanup"]
    opt = {"role": Role.VIEWER}

    @get("/policies", summary="List cleanup policies")
    async def policies(self, uow: Work, now: Now) -> list[CleanupPolicyRead]:
        """Every policy: schedule, next slot, last run, last success, and whether it is overdue."""
        return await uow.read(partial(service.list_policies, now=now))

    @post(
        "/policies/{name:str}/runs",
        opt={"role": Role.OPERATOR},
        status_code=202,
        summary="Run a policy now",
        responses=problems(409),
    )
    async def run_policy(
        self,
        request: Request[Any, Any, Any],
        uow: Work,
        name: FromPath[str],
        principal: TokenPrincipal,
        now: Now,
        data: JSONBody[RunRequest | None] = None,
    ) -> CleanupRunRead:
        """Queue a run (409 while one is active) and start it here; follow it at `/cleanup/runs/{id}`. The body
        (`dry_run`, `reason`) may be left out."""
        _unscoped(principal)
        body = data or RunRequest()
        run = await uow.write(partial(runs.request_run, name=name, body=body, actor=principal.name, now=now))
        return _start(request, run)

    @post("/purges", opt={"role": Role.OPERATOR}, status_code=202, summary="Purge uploads of a time window")
    async def purge(
        self,
        request: Request[Any, Any, Any],
        uow: Work,
        data: JSONBody[PurgeRequest],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
    ) -> CleanupRunRead:
        """Delete what was uploaded to a managed bucket in `[from, to)`; the request is an audit record."""
        _unscoped(principal)
        run = await uow.write(
            partial(
                runs.request_purge,
                body=data,
                actor=principal.name,
                now=now,
                max_window=timedelta(days=settings.cleanup_purge_max_days),
                incident=data.incident,
            )
        )
        return _start(request, run)

    @get("/runs", summary="List cleanup runs")
    async def runs(
        self,
        uow: Work,
        policy: Annotated[str | None, QueryParameter(required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500, required=False)] = 50,
    ) -> list[CleanupRunRead]:
        """Runs newest first, of one policy with `?policy=`."""
        return await uow.read(partial(runs.list_runs, policy=policy, limit=limit))

    @get("/runs/{run_id:int}", summary="One cleanup run")
    async def run(self, uow: Work, run_id: RowId) -> CleanupRunRead:
        """A run with its counts so far (they grow page by page while it runs)."""
        return await uow.read(partial(runs.get_run, run_id=run_id))
