"""HTTP routes of rollouts: status and history with `viewer`, operations with `operator`.

Handlers receive ``gates`` (a ``GateReader``), ``announcer`` (a ``StepAnnouncer``) and ``hold`` (a ``RolloutHold``) by
injection: the app provides the one reading alert states, the one writing steps to the notification outbox and the
one refusing what an incident override in force forbids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from controlplane.api.dependencies import Now, ProcessMetrics, ProcessSettings, Work
from controlplane.api.openapi import problems
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.rollouts import service
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.holds import RolloutHold
from controlplane.rollouts.operations import Operation, RolloutTarget, check_operation
from controlplane.rollouts.purges import PurgeTarget, RollbackPurger, new_incident_id, purge_not_queued
from controlplane.rollouts.schemas import RolloutOperation, RolloutRead, RolloutStatus
from controlplane.rollouts.segments import parse_segment
from controlplane.rollouts.status import list_rollout_history, rollout_status
from controlplane.rollouts.steps import StepAnnouncer

__all__ = ["Announcer", "Gates", "Hold", "Purger", "RolloutController"]

logger = logging.getLogger(__name__)

#: The handler parameter ``gates``: injected by name (the app's ``gates`` dependency).
Gates = NamedDependency[GateReader]
#: The handler parameter ``announcer``: injected by name (the app's ``announcer`` dependency).
Announcer = NamedDependency[StepAnnouncer]
#: The handler parameter ``hold``: injected by name (the app's ``hold`` dependency).
Hold = NamedDependency[RolloutHold]
#: The handler parameter ``purger``: injected by name (the app's ``purger`` dependency).
Purger = NamedDependency[RollbackPurger]


class RolloutController(Controller):
    """The rollout of a flag in one environment."""

    path = "/flags/{key:str}/environments/{environment:str}"
    tags = ["rollouts"]
    opt = {"role": Role.VIEWER}

    @get("/rollout", summary="Rollout status")
    async def status(
        self,
        uow: Work,
        key: FromPath[str],
        environment: FromPath[str],
        now: Now,
        settings: ProcessSettings,
        gates: Gates,
        segment: FromQuery[str | None] = None,
    ) -> RolloutStatus:
        """Where the rollout stands and what the environment serves; for a plan run per segment, every segment, and
        with ``?segment=queue=support`` that segment's rollout in full."""
        target = RolloutTarget(key, environment, parse_segment(segment))
        return await uow.read(
            partial(rollout_status, target=target, environments=settings.environments, now=now, gates=gates)
        )

    @get("/rollouts", summary="Rollout history")
    async def history(
        self, uow: Work, key: FromPath[str], environment: FromPath[str], settings: ProcessSettings
    ) -> list[RolloutRead]:
        """Every rollout of the flag in this environment, newest first."""
        return await uow.read(
            partial(list_rollout_history, key=key, environment=environment, environments=settings.environments)
        )

    @post(
        "/rollout/{operation:str}",
        opt={"role": Role.OPERATOR},
        status_code=200,
        summary="Start, advance, pause, resume or roll back",
        responses=problems(409, 428),
    )
    async def operate(
        self,
        uow: Work,
        key: FromPath[str],
        environment: FromPath[str],
        operation: FromPath[Operation],
        data: JSONBody[RolloutOperation],
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
        gates: Gates,
        announcer: Announcer,
        hold: Hold,
        metrics: ProcessMetrics,
        purger: Purger,
    ) -> RolloutStatus:
        """Apply one operation; illegal transitions and stale revisions are refused with 409. The step is told
        through the notification routes. A rollback with `purge_uploads_since` also purges what the flag's
        pipeline uploaded since then (`purge_runs`), once the rollback is committed, as one `incident`."""
        target = RolloutTarget(key, environment, parse_segment(data.segment))
        since = data.purge_uploads_since if operation is Operation.ROLLBACK else None
        incident = None
        targets: Sequence[PurgeTarget] = ()
        if since is not None:
            # The body's own refusals (a purge with one segment's rollback, say) before the purge's.
            check_operation(operation, data, target)
            # Checked first: a purge that cannot be asked for refuses the rollback too, and nothing changes.
            targets = await uow.read(partial(purger.check, flag=key, since=since, now=now))
            incident = new_incident_id()
        status = await uow.write(
            partial(
                service.operate_rollout,
                target=target,
                operation=operation,
                body=data,
                actor=principal.name,
                environments=settings.environments,
                now=now,
                gates=gates,
                announcer=announcer,
                hold=hold,
                incident=incident,
            )
        )
        if operation is Operation.ROLLBACK:
            metrics.rollbacks.labels(key, environment, "operator").inc()
        if since is not None and incident is not None:
            # After the rollback commits: never a purge for a rollback that did not happen.
            reason = (data.reason or "").strip()
            try:
                runs = await uow.write(
                    partial(
                        purger.request,
                        flag=key,
                        environment=environment,
                        since=since,
                        now=now,
                        actor=principal.name,
                        reason=reason,
                        incident=incident,
                    )
                )
            except Exception as failure:
                # Whatever failed (most likely the database, between the two transactions), the rollback stands: a
                # plain 503 or 500 would invite repeating a rollback that is done (then refused, 409). Say what was
                # done and what is left to run. A timeout or a failure after the commit may leave the purge queued
                # all the same: the answer says to look for it first.
                logger.warning("rollback of %s in %s committed, its purge not queued", key, environment, exc_info=True)
                raise purge_not_queued(
                    target,
                    incident=incident,
                    state=status.state.value,
                    targets=targets,
                    since=since,
                    until=now,
                    reason=reason,
                    failure=failure,
                ) from failure
            purger.start(runs)
            status = msgspec.structs.replace(status, incident=incident, purge_runs=runs)
        return status
