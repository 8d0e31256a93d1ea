"""HTTP routes of rollouts: status and history with `viewer`, operations with `operator`."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from controlplane.api.dependencies import DbSession, Now, ProcessSettings, TokenPrincipal
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

    @get("/rollout", sync_to_thread=True, summary="Rollout status")
    def status(
        self, session: DbSession, key: FromPath[str], environment: FromPath[str], now: Now, settings: ProcessSettings
    ) -> RolloutStatus:
        """Where the rollout stands and what the environment serves."""
        target = RolloutTarget(key, environment)
        return service.rollout_status(session, target=target, environments=settings.environments, now=now)

    @get("/rollouts", sync_to_thread=True, summary="Rollout history")
    def history(
        self, session: DbSession, key: FromPath[str], environment: FromPath[str], settings: ProcessSettings
    ) -> list[RolloutRead]:
        """Every rollout of the flag in this environment, newest first."""
        return service.list_rollout_history(
            session, key=key, environment=environment, environments=settings.environments
        )

    @post(
        "/rollout/{operation:str}",
        sync_to_thread=True,
        opt={"role": Role.OPERATOR},
        status_code=200,
        summary="Start, advance, pause, resume or roll back",
    )
    def operate(
        self,
        session: DbSession,
        key: FromPath[str],
        environment: FromPath[str],
        operation: FromPath[Operation],
        data: JSONBody[RolloutOperation],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
    ) -> RolloutStatus:
        """Apply one operation; illegal transitions and stale revisions are refused with 409."""
        return service.operate_rollout(
            session,
            target=RolloutTarget(key, environment),
            operation=operation,
            body=data,
            actor=principal.name,
            environments=settings.environments,
            now=now,
        )
