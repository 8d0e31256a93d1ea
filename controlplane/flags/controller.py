"""HTTP routes of flags and their per-environment state."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, HeaderParameter, JSONBody, QueryParameter
from sqlalchemy.orm import Session

from controlplane.api.dependencies import Now, ProcessSettings, Work, expected_revision_from
from controlplane.api.openapi import problems
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.flags import service
from controlplane.flags.reads import to_environment_read, to_flag_read
from controlplane.flags.schemas import EnvironmentStateRead, EnvironmentStateUpdate, FlagCreate, FlagRead, FlagUpdate
from controlplane.flags.serving import RolloutServing

__all__ = ["FlagController"]

IfMatch = Annotated[str | None, HeaderParameter(name="If-Match", required=False, description="revision you last read")]
Reason = Annotated[str | None, QueryParameter(name="reason", required=False, description="why, for the audit log")]


class FlagController(Controller):
    """Flags: read with `viewer`, change with `admin`."""

    path = "/flags"
    tags = ["flags"]
    opt = {"role": Role.VIEWER}

    @get("/", summary="List flags")
    async def list_flags(self, uow: Work) -> list[FlagRead]:
        """Every flag with its state in every environment."""

        def read(session: Session) -> list[FlagRead]:
            incidents = service.active_incidents(session)
            return [to_flag_read(flag, incidents) for flag in service.list_flags(session)]

        return await uow.read(read)

    @post("/", opt={"role": Role.ADMIN}, summary="Create a flag", responses=problems(409))
    async def create_flag(
        self, uow: Work, data: JSONBody[FlagCreate], principal: TokenPrincipal, now: Now, settings: ProcessSettings
    ) -> FlagRead:
        """Create a flag, disabled and serving its off variant everywhere."""

        def create(session: Session) -> FlagRead:
            flag = service.create_flag(
                session, request=data, actor=principal.name, environments=settings.environments, now=now
            )
            return to_flag_read(flag)

        return await uow.write(create)

    @get("/{key:str}", summary="Read a flag")
    async def read_flag(self, uow: Work, key: FromPath[str]) -> FlagRead:
        """One flag with its state in every environment, each marked with the incident action in force there
        (`incident`: id, variant, since, actor, reason and the undo command; null when none is)."""
        return await uow.read(
            lambda session: to_flag_read(service.get_flag(session, key), service.active_incidents(session, key=key))
        )

    @patch("/{key:str}", opt={"role": Role.ADMIN}, summary="Change a flag")
    async def update_flag(
        self,
        uow: Work,
        key: FromPath[str],
        data: JSONBody[FlagUpdate],
        principal: TokenPrincipal,
        now: Now,
        if_match: IfMatch,
        reason: Reason,
        settings: ProcessSettings,
        rollout_serving: NamedDependency[RolloutServing],
    ) -> FlagRead:
        """Change a flag's definition; `If-Match` must carry its current revision."""
        expected = expected_revision_from(if_match)

        def update(session: Session) -> FlagRead:
            flag = service.update_flag(
                session,
                key=key,
                expected_revision=expected,
                changes=data,
                actor=principal.name,
                now=now,
                reason=reason,
                rollouts_serving=rollout_serving.environments(
                    session, service.get_flag(session, key).id, settings.environments
                ),
            )
            return to_flag_read(flag, service.active_incidents(session, key=key))

        return await uow.write(update)

    @get("/{key:str}/environments/{environment:str}", summary="Read a flag in one environment")
    async def read_environment(
        self, uow: Work, key: FromPath[str], environment: FromPath[str], settings: ProcessSettings
    ) -> EnvironmentStateRead:
        """A flag's state in one environment."""

        def read(session: Session) -> EnvironmentStateRead:
            state = service.get_environment_state(
                session, key=key, environment=environment, environments=settings.environments
            )
            return to_environment_read(state, service.active_incidents(session, key=key))

        return await uow.read(read)

    @patch("/{key:str}/environments/{environment:str}", opt={"role": Role.ADMIN}, summary="Change a flag in one env")
    async def update_environment(
        self,
        uow: Work,
        key: FromPath[str],
        environment: FromPath[str],
        data: JSONBody[EnvironmentStateUpdate],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
        if_match: IfMatch,
        reason: Reason,
        rollout_serving: NamedDependency[RolloutServing],
    ) -> EnvironmentStateRead:
        """Change enabled, default variant, rules or rollout bucketing; `If-Match` carries the revision."""
        expected = expected_revision_from(if_match)

        def update(session: Session) -> EnvironmentStateRead:
            state = service.update_environment_state(
                session,
                key=key,
                environment=environment,
                environments=settings.environments,
                expected_revision=expected,
                changes=data,
                actor=principal.name,
                now=now,
                reason=reason,
                rollout_serving=rollout_serving.in_environment(session, key=key, environment=environment),
            )
            return to_environment_read(state, service.active_incidents(session, key=key))

        return await uow.write(update)
