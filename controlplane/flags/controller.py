"""HTTP routes of flags and their per-environment state."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter

from controlplane.api.dependencies import DbSession, Now, ProcessSettings, TokenPrincipal, expected_revision_from
from controlplane.auth.roles import Role
from controlplane.flags import service
from controlplane.flags.schemas import EnvironmentStateRead, EnvironmentStateUpdate, FlagCreate, FlagRead, FlagUpdate
from controlplane.rollouts import service as rollout_service

__all__ = ["FlagController"]

IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False, description="revision you last read")]
Reason = Annotated[str | None, QueryParameter(name="reason", required=False, description="why, for the audit log")]


class FlagController(Controller):
    """Flags: read with `viewer`, change with `admin`."""

    path = "/flags"
    tags = ["flags"]
    opt = {"role": Role.VIEWER}

    @get("/", sync_to_thread=True, summary="List flags")
    def list_flags(self, session: DbSession) -> list[FlagRead]:
        """Every flag with its state in every environment."""
        return [service.to_flag_read(flag) for flag in service.list_flags(session)]

    @post("/", sync_to_thread=True, opt={"role": Role.ADMIN}, summary="Create a flag")
    def create_flag(
        self,
        session: DbSession,
        data: JSONBody[FlagCreate],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
    ) -> FlagRead:
        """Create a flag, disabled and serving its off variant everywhere."""
        flag = service.create_flag(
            session, request=data, actor=principal.name, environments=settings.environments, now=now
        )
        return service.to_flag_read(flag)

    @get("/{key:str}", sync_to_thread=True, summary="Read a flag")
    def read_flag(self, session: DbSession, key: FromPath[str], settings: ProcessSettings) -> FlagRead:
        """One flag with its state in every environment."""
        flag = service.get_flag(session, key)
        service.ensure_environments(session, flag, settings.environments)
        return service.to_flag_read(flag)

    @patch("/{key:str}", sync_to_thread=True, opt={"role": Role.ADMIN}, summary="Change a flag")
    def update_flag(
        self,
        session: DbSession,
        key: FromPath[str],
        data: JSONBody[FlagUpdate],
        principal: TokenPrincipal,
        now: Now,
        if_match: IfMatch,
        reason: Reason,
    ) -> FlagRead:
        """Change a flag's definition; `If-Match` must carry its current revision."""
        flag = service.update_flag(
            session,
            key=key,
            expected_revision=expected_revision_from(if_match),
            changes=data,
            actor=principal.name,
            now=now,
            reason=reason,
        )
        return service.to_flag_read(flag)

    @get("/{key:str}/environments/{environment:str}", sync_to_thread=True, summary="Read a flag in one environment")
    def read_environment(
        self, session: DbSession, key: FromPath[str], environment: FromPath[str], settings: ProcessSettings
    ) -> EnvironmentStateRead:
        """A flag's state in one environment."""
        state = service.get_environment_state(
            session, key=key, environment=environment, environments=settings.environments
        )
        return service.to_environment_read(state)

    @patch(
        "/{key:str}/environments/{environment:str}",
        sync_to_thread=True,
        opt={"role": Role.ADMIN},
        summary="Change a flag in one environment",
    )
    def update_environment(
        self,
        session: DbSession,
        key: FromPath[str],
        environment: FromPath[str],
        data: JSONBody[EnvironmentStateUpdate],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
        if_match: IfMatch,
        reason: Reason,
    ) -> EnvironmentStateRead:
        """Change enabled, default variant, rules or rollout bucketing; `If-Match` carries the revision."""
        active = rollout_service.is_rollout_active(session, key=key, environment=environment)
        state = service.update_environment_state(
            session,
            key=key,
            environment=environment,
            environments=settings.environments,
            expected_revision=expected_revision_from(if_match),
            changes=data,
            actor=principal.name,
            now=now,
            reason=reason,
            rollout_active=active,
        )
        return service.to_environment_read(state)
