"""HTTP routes of rollouts: status and history with `viewer`, operations with `operator`."""

from __future__ import annotations

from functools import partial
from typing import Any

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody

from controlplane.api.dependencies import Now, ProcessSettings, TokenPrincipal, Work
from controlplane.auth.roles import Role
from controlplane.rollouts import service
from controlplane.rollouts.schemas import RolloutOperation, RolloutRead, RolloutStatus
from controlplane.rollouts.service import Operation, RolloutTarget

__all__ = ["RolloutController"]


class RolloutController(Controller):
    """The rollout of a flag in one environment."""

    path = "/flags/{key:str}/environments/{environment:str}"
    tags = ["rollouts"]
    opt = {"role": Role.VIEWER}

    @get("/rollout", summary="Rollout status")
    async def status(
        self, uow: Work, key: FromPath[str], environment: FromPath[str], now: Now, settings: ProcessSettings
    ) -> RolloutStatus:
        """Where the rollout stands and what the environment serves."""
        target = RolloutTarget(key, environment)
        return await uow.read(
            partial(service.rollout_status, target=target, environments=settings.environments, now=now)
        )

    @get("/rollouts", summary="Rollout history")
    async def history(
        self, uow: Work, key: FromPath[str], environment: FromPath[str], settings: ProcessSettings
    ) -> list[RolloutRead]:
        """Every rollout of the flag in this environment, newest first."""
        return await uow.read(
            partial(service.list_rollout_history, key=key, environment=environment, environments=settings.environments)
        )

    @post(
        "/rollout/{operation:str}",
        opt={"role": Role.OPERATOR},
        status_code=200,
        summary="Start, advance, pause, resume or roll back",
    )
    async def operate(
        self,
        request: Request[Any, Any, Any],
        uow: Work,
        key: FromPath[str],
        environment: FromPath[str],
        operation: FromPath[Operation],
        data: JSONBody[RolloutOperation],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
    ) -> RolloutStatus:
        """Apply one operation; illegal transitions and stale revisions are refused with 409."""
        status = await uow.write(
            partial(
                service.operate_rollout,
                target=RolloutTarget(key, environment),
                operation=operation,
                body=data,
                actor=principal.name,
                environments=settings.environments,
                now=now,
            )
        )
        if operation is Operation.ROLLBACK:
            request.app.state.metrics.rollbacks.labels(key, environment, "operator").inc()
        return status
