"""Automatic rollback: a guarded rollout whose guard fires with a breaching measurement is rolled back through the
operators' own path (``rollouts.service.operate_rollout``), in a savepoint, so a refusal undoes nothing else.
A shadow guard (``mode: shadow``) never rolls back. Takes a session, never commits.

Nothing fights an incident override in force (``controlplane flags set-variant``): while one holds the flag in the
environment, the rollback is held back (``hold_for_incident``): what is served stays the incident's variant, the
guard's firing is recorded and told as usual, and the incident records, audits and tells once per guard that it
held the rollback, naming itself and its undo. Once it is undone, guards act again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from controlplane.alerting.evaluation import alert_event, describe_measurement
from controlplane.alerting.rules import Measurement
from controlplane.catalog.rules import Rule
from controlplane.errors import DomainError
from controlplane.flags import service as flag_service
from controlplane.flags.incidents import undo_command
from controlplane.flags.models import FlagIncident
from controlplane.notifications.messages import INCIDENT_RULE, AlertEvent
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.operations import Operation, RolloutTarget
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.segments import SegmentRef
from controlplane.rollouts.service import GuardedRollout, operate_rollout

__all__ = [
    "SYSTEM_ACTOR",
    "GuardRollbacks",
    "HeldRollback",
    "RollbackDone",
    "hold_for_incident",
    "roll_back_as",
    "roll_back_breaching",
]

#: The audit actor of what the control plane does by itself.
SYSTEM_ACTOR = "controlplane"


@dataclass(frozen=True, slots=True)
class RollbackDone:
    """A rollback the evaluation (or a webhook) performed."""

    flag: str
    environment: str
    rule: str
    trigger: str
    segment: str | None = None  # attribute=value, for a rollout run per segment


@dataclass(frozen=True, slots=True)
class HeldRollback:
    """A rollback a guard asked for that an incident override in force held back; ``first`` when this incident held
    this rule's rollback there for the first time (the tick that records and tells it)."""

    flag: str
    environment: str
    rule: str
    incident: int
    first: bool


@dataclass(slots=True)
class GuardRollbacks:
    """What breaching guards did: the rollbacks done, those incident overrides held back, the refusals met, and what
    on-call should hear."""

    done: list[RollbackDone] = field(default_factory=list)
    held: list[HeldRollback] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)


def hold_for_incident(
    session: Session,
    incident: FlagIncident,
    environment: str,
    *,
    rule: str,
    trigger: str,
    why: str,
    pipeline: str,
    severity: str,
    now: datetime,
) -> AlertEvent | None:
    """Hold back the rollback ``rule`` asked for of ``incident``'s flag in ``environment``: recorded on the incident
    and audited; what on-call hears of it, or None when this incident already held this rule's rollback there (told
    once: a guard keeps breaching every tick)."""
    flag = incident.flag.key
    if not flag_service.record_held_rollback(
        session, incident, environment, rule=rule, trigger=trigger, why=why, actor=SYSTEM_ACTOR, now=now
    ):
        return None
    undo = undo_command(incident.id)
    return AlertEvent(
        kind="rollback_held",
        rule=INCIDENT_RULE,
        pipeline=pipeline,
        environment=environment,
        severity=severity,
        summary=f"{flag} not rolled back in {environment} by {rule}: incident {incident.id} holds it "
        f"({incident.variant} to everyone)",
        description=f"{why}; the incident override holds (incident {incident.id} by {incident.actor}: "
        f"{incident.reason}); the rollback waits for its undo ({undo}), after which guards act again",
        at=now,
        flag=flag,
        key=f"{incident.id}/{environment}/held/{rule}",
        details={
            "incident": incident.id,
            "variant": incident.variant,
            "guard": rule,
            "trigger": trigger,
            "undo": undo,
        },
    )


def roll_back_as(
    session: Session,
    flag: str,
    environment: str,
    reason: str,
    actor: str,
    environments: Sequence[str],
    now: datetime,
    gates: GateReader,
    segment: SegmentRef | None = None,
) -> DomainError | None:
    """Roll a rollout (of one segment, for a plan run per segment) back through the operators' own path, in a
    savepoint; the refusal, or None when done."""
    try:
        with session.begin_nested():
            operate_rollout(
                session,
                target=RolloutTarget(flag, environment, segment),
                operation=Operation.ROLLBACK,
                body=RolloutOperation(reason=reason[:2000]),
                actor=actor,
                environments=environments,
                now=now,
                gates=gates,
                announcer=None,  # told as its guard's rollback alert, not as a rollout step
                hold=None,  # an incident override in force is weighed before (``held_rollback``)
            )
    except DomainError as error:
        return error
    return None


def roll_back_breaching(
    session: Session,
    breaching: Sequence[tuple[Rule, str, Measurement]],
    guarded: Sequence[GuardedRollout],
    *,
    environments: Sequence[str],
    now: datetime,
    gates: GateReader,
) -> GuardRollbacks:
    """Roll back each guarded rollout (auto rollback on) whose current stage is guarded by a breaching rule in its
    environment, once per rollout; a refusal is reported, never raised. Shadow rules never roll back."""
    rollbacks = GuardRollbacks()
    handled: set[RolloutTarget] = set()
    overrides: dict[tuple[str, str], FlagIncident] | None = None  # read once, at the first rollout to act on
    for rule, environment, measurement in breaching:
        if rule.shadow:
            continue  # watched only: a shadow guard is recorded and notified, never acted on
        for rollout in guarded:
            if rollout.environment != environment or rule.name not in rollout.guards or not rollout.auto_rollback:
                continue
            if rollout.target in handled:
                continue
            handled.add(rollout.target)
            if overrides is None:
                overrides = flag_service.active_incidents(session)
            incident = overrides.get((rollout.flag, environment))
            if incident is not None:
                event = hold_for_incident(
                    session,
                    incident,
                    environment,
                    rule=rule.name,
                    trigger="guard",
                    why=f"guard {describe_measurement(rule, measurement, environment)}",
                    pipeline=rule.pipeline,
                    severity=rule.notified_severity.value,
                    now=now,
                )
                rollbacks.held.append(
                    HeldRollback(rollout.flag, environment, rule.name, incident.id, first=event is not None)
                )
                if event is not None:
                    rollbacks.events.append(event)
                continue
            # The rollout may have changed since it was read: the operators' path re-reads and refuses.
            reason = f"automatic rollback: guard {describe_measurement(rule, measurement, environment)}"
            error = roll_back_as(
                session, rollout.flag, environment, reason, SYSTEM_ACTOR, environments, now, gates, rollout.segment
            )
            if error is not None:
                rollbacks.errors.append(f"rollback of {rollout.flag} in {rollout.target} refused: {error}")
                continue
            rollbacks.done.append(
                RollbackDone(
                    flag=rollout.flag,
                    environment=environment,
                    rule=rule.name,
                    trigger="guard",
                    segment=None if rollout.segment is None else str(rollout.segment),
                )
            )
            rollbacks.events.append(alert_event(rule, "rollback", environment, measurement, now, flag=rollout.flag))
    return rollbacks
