"""HTTP routes of incident actions: set a flag's variant everywhere and undo it with `operator`, read with `viewer`.

Handlers receive ``gates``, ``announcer`` and ``notification_config`` by injection, as the rollout routes do: the
rollouts an action pauses are paused through the rollouts' own operations and told as steps.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.orm import Session

from controlplane.api.dependencies import Now, ProcessMetrics, ProcessSettings, Work
from controlplane.api.openapi import problems
from controlplane.api.paging import PageLimit, RowId
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.flags import service as flag_service
from controlplane.flags.reads import to_incident_read
from controlplane.flags.schemas import IncidentRead, IncidentUndo, SetVariantRequest
from controlplane.incidents.actions import IncidentDesk
from controlplane.notifications.dependencies import CurrentNotificationConfig
from controlplane.rollouts.controller import Announcer, Gates

__all__ = ["Desk", "IncidentController", "SetVariantController", "provide_desk"]

#: The handler parameter ``desk``: injected by name (``provide_desk``, on both controllers).
Desk = NamedDependency[IncidentDesk]


def provide_desk(
    settings: ProcessSettings,
    gates: Gates,
    announcer: Announcer,
    notification_config: CurrentNotificationConfig,
    metrics: ProcessMetrics,
) -> IncidentDesk:
    """The incident actions as this request may take them, from the app's gates, announcer, routes and metrics."""
    return IncidentDesk(
        environments=settings.environments,
        gates=gates,
        announcer=announcer,
        notifications=notification_config,
        metrics=metrics,
    )


class SetVariantController(Controller):
    """The incident action on a flag."""

    path = "/flags/{key:str}"
    tags = ["incidents"]
    opt = {"role": Role.OPERATOR}
    dependencies = {"desk": Provide(provide_desk, sync_to_thread=False)}

    @post(
        "/set-variant",
        status_code=201,
        summary="Serve one variant to everyone (incident action)",
        responses=problems(404, 409),
    )
    async def set_variant(
        self,
        uow: Work,
        key: FromPath[str],
        data: JSONBody[SetVariantRequest],
        principal: TokenPrincipal,
        now: Now,
        desk: Desk,
    ) -> IncidentRead:
        """Serve `variant` to every context in `environments`, or in every environment where the flag is switched
        on (`all_environments`): switched on, that default, no rules, rollout at 0%. Running rollouts there are
        paused first. Records an incident with each environment's state before and after (undo it with
        `POST /incidents/{id}/undo`), audits each environment and tells on-call."""
        return await uow.write(
            lambda session: desk.set_variant(session, key=key, request=data, actor=principal.name, now=now)
        )


class IncidentController(Controller):
    """Incident actions and their undo."""

    path = "/incidents"
    tags = ["incidents"]
    opt = {"role": Role.VIEWER}
    dependencies = {"desk": Provide(provide_desk, sync_to_thread=False)}

    @get("/", summary="List incident actions")
    async def list_incidents(
        self,
        uow: Work,
        flag: Annotated[str | None, QueryParameter(name="flag", required=False)] = None,
        limit: PageLimit = 50,
    ) -> list[IncidentRead]:
        """Incident actions, newest first; of one flag with `flag`."""

        def read(session: Session) -> list[IncidentRead]:
            return [to_incident_read(row) for row in flag_service.list_incidents(session, key=flag, limit=limit)]

        return await uow.read(read)

    @get("/{incident_id:int}", summary="Read an incident action")
    async def read_incident(self, uow: Work, incident_id: RowId) -> IncidentRead:
        """One incident action: each environment's state before and after, and its undo once done."""
        return await uow.read(lambda session: to_incident_read(flag_service.get_incident(session, incident_id)))

    @post(
        "/{incident_id:int}/undo",
        opt={"role": Role.OPERATOR},
        status_code=200,
        summary="Undo an incident action",
        responses=problems(409),
    )
    async def undo(
        self,
        uow: Work,
        incident_id: RowId,
        data: JSONBody[IncidentUndo],
        principal: TokenPrincipal,
        now: Now,
        desk: Desk,
    ) -> IncidentRead:
        """Put every environment back in the state recorded before the action and resume the rollouts it paused;
        `409 changed-since` when someone changed one of them since, unless `force` (audited as overriding it)."""
        return await uow.write(
            lambda session: desk.undo(session, incident_id=incident_id, request=data, actor=principal.name, now=now)
        )
