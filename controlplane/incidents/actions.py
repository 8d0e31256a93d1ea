"""The incident actions as one transaction each: set a flag's variant everywhere (pausing its running rollouts
there), and undo it (resuming them). Takes a session, never commits; notifications go to the outbox in the same
transaction, so on-call hears of an action exactly when it is committed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from controlplane.errors import DomainError
from controlplane.flags import service as flag_service
from controlplane.flags.incidents import EnvironmentRecord, paused_rollouts, undo_command
from controlplane.flags.models import FlagIncident
from controlplane.flags.reads import to_incident_read
from controlplane.flags.schemas import IncidentRead, IncidentUndo, SetVariantRequest
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.messages import INCIDENT_RULE, AlertEvent
from controlplane.notifications.service import count_silenced_on_commit, enqueue_notifications
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.operations import Operation, RolloutTarget
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.segments import SegmentRef, parse_segment
from controlplane.rollouts.service import operate_rollout, running_rollout_targets
from controlplane.rollouts.steps import StepAnnouncer

__all__ = ["IncidentDesk", "incident_events"]

#: Incident actions are told at page severity: whoever is on call must know the flag no longer serves its plan.
INCIDENT_SEVERITY = "page"


class IncidentDesk:
    """What an incident action needs besides its request: the environments, the guards' reader and the step
    announcer (for the rollouts it pauses and resumes), the notification routes and the metrics."""

    def __init__(
        self,
        *,
        environments: Sequence[str],
        gates: GateReader,
        announcer: StepAnnouncer | None,
        notifications: NotificationConfig,
        metrics: ControlPlaneMetrics | None,
    ) -> None:
        self._environments = environments
        self._gates = gates
        self._announcer = announcer
        self._notifications = notifications
        self._metrics = metrics

    def set_variant(
        self, session: Session, *, key: str, request: SetVariantRequest, actor: str, now: datetime
    ) -> IncidentRead:
        """Serve ``request.variant`` to everyone where asked; running rollouts there are paused first."""
        running = [target for target in running_rollout_targets(session) if target.flag == key]

        def pause(incident: FlagIncident, environment: str) -> list[str | None]:
            # Every running rollout there: a plan run per segment has one per segment, each advanced on its own.
            paused: list[str | None] = []
            for target in running:
                if target.environment != environment:
                    continue
                said = f"paused by incident {incident.id} (`{incident.variant}` to everyone): {incident.reason}"
                operate_rollout(
                    session,
                    target=target,
                    operation=Operation.PAUSE,
                    body=RolloutOperation(reason=said[:2000]),
                    actor=actor,
                    environments=self._environments,
                    now=now,
                    gates=self._gates,
                    announcer=self._announcer,
                    hold=None,  # the incident's own pause: nothing holds it
                )
                paused.append(str(target.segment) if target.segment else None)
            return paused

        incident, skipped = flag_service.set_variant_everywhere(
            session,
            key=key,
            variant=request.variant,
            named=request.environments,
            all_environments=request.all_environments,
            environments=self._environments,
            actor=actor,
            reason=request.reason,
            now=now,
            pause_rollout=pause,
        )
        self._tell(session, incident, undo=False, now=now)
        return to_incident_read(incident, skipped)

    def undo(
        self, session: Session, *, incident_id: int, request: IncidentUndo, actor: str, now: datetime
    ) -> IncidentRead:
        """Restore the states recorded before the incident; resume the rollouts it paused."""

        def resume(incident: FlagIncident, record: EnvironmentRecord) -> str:
            segments = [parse_segment(text) for text in record.paused_segments] or [None]
            said = [resume_one(incident, record.environment, segment) for segment in segments]
            if segments == [None]:
                return said[0]
            return "; ".join(f"{segment}: {words}" for segment, words in zip(segments, said, strict=True))

        def resume_one(incident: FlagIncident, environment: str, segment: SegmentRef | None) -> str:
            # Read per rollout: resuming one segment moves the environment's revision the next one is checked against.
            state = flag_service.get_environment_state(
                session, key=incident.flag.key, environment=environment, environments=self._environments
            )
            try:
                # In a savepoint: a rollout someone resumed, rolled back or restarted since is reported, not raised.
                with session.begin_nested():
                    operate_rollout(
                        session,
                        target=RolloutTarget(incident.flag.key, environment, segment),
                        operation=Operation.RESUME,
                        body=RolloutOperation(
                            reason=f"undo of incident {incident.id}: resumed"[:2000], expected_revision=state.revision
                        ),
                        actor=actor,
                        environments=self._environments,
                        now=now,
                        gates=self._gates,
                        announcer=self._announcer,
                        hold=None,  # the undo's own resume, before the incident is marked undone
                    )
            except DomainError as error:
                return f"not resumed: {error}"
            return "resumed (the stage's bake time starts again)"

        incident, _ = flag_service.undo_incident(
            session,
            incident_id=incident_id,
            environments=self._environments,
            actor=actor,
            reason=request.reason,
            force=request.force,
            now=now,
            resume_rollout=resume,
        )
        self._tell(session, incident, undo=True, now=now)
        return to_incident_read(incident)

    def _tell(self, session: Session, incident: FlagIncident, *, undo: bool, now: datetime) -> None:
        created = enqueue_notifications(session, self._notifications, incident_events(incident, undo=undo), now=now)
        count_silenced_on_commit(session, self._metrics, created)


def incident_events(incident: FlagIncident, *, undo: bool) -> list[AlertEvent]:
    """One notification event per environment of an incident action (or of its undo), as routes and silences take
    them: by environment, rule ``incident``, at page severity."""
    events = []
    flag = incident.flag
    if not undo:
        for item in incident.environments:
            segments = item.get("paused_segments") or []
            words = paused_rollouts(item["rollout_paused"], segments)
            paused = f"; its {words} {'are' if segments else 'is'} paused" if words else ""
            events.append(
                AlertEvent(
                    kind="variant_set",
                    rule=INCIDENT_RULE,
                    pipeline=flag.pipeline or "",
                    environment=item["environment"],
                    severity=INCIDENT_SEVERITY,
                    summary=f"{flag.key} serves {incident.variant} to everyone in {item['environment']} "
                    f"(incident {incident.id}){paused}",
                    description=f"by {incident.actor}: {incident.reason}; undo: {undo_command(incident.id)}",
                    at=incident.created_at,
                    flag=flag.key,
                    key=f"{incident.id}/{item['environment']}/set",
                    details={
                        "incident": incident.id,
                        "variant": incident.variant,
                        "actor": incident.actor,
                        "reason": incident.reason,
                        "before": item["before"],
                        "after": item["after"],
                        "rollout_paused": item["rollout_paused"],
                        "paused_segments": segments,
                    },
                )
            )
        return events
    for item in incident.undo or []:
        forced = " (forced over changes made since)" if item["changed_since"] else ""
        rollout = f"; rollout {item['rollout']}" if item["rollout"] else ""
        events.append(
            AlertEvent(
                kind="variant_restored",
                rule=INCIDENT_RULE,
                pipeline=flag.pipeline or "",
                environment=item["environment"],
                severity=INCIDENT_SEVERITY,
                summary=f"{flag.key} in {item['environment']} back to its state before incident {incident.id}"
                f"{forced}{rollout}",
                description=f"by {incident.undone_by}: {incident.undo_reason}",
                at=incident.undone_at or incident.created_at,
                flag=flag.key,
                key=f"{incident.id}/{item['environment']}/undo",
                details={
                    "incident": incident.id,
                    "actor": incident.undone_by,
                    "reason": incident.undo_reason,
                    "restored": item["restored"],
                    "changed_since": item["changed_since"],
                    "rollout": item["rollout"],
                },
            )
        )
    return events
