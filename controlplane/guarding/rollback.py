"""Automatic rollback: a guarded rollout whose guard fires with a breaching measurement is rolled back through the
operators' own path (``rollouts.service.operate_rollout``), in a savepoint, so a refusal undoes nothing else.
A shadow guard (``mode: shadow``) never rolls back. Takes a session, never commits.
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
from controlplane.notifications.messages import AlertEvent
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.operations import Operation, RolloutTarget
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.segments import SegmentRef
from controlplane.rollouts.service import GuardedRollout, operate_rollout

__all__ = ["SYSTEM_ACTOR", "GuardRollbacks", "RollbackDone", "roll_back_as", "roll_back_breaching"]

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


@dataclass(slots=True)
class GuardRollbacks:
    """What breaching guards did: the rollbacks done, the refusals met, and what on-call should hear."""

    done: list[RollbackDone] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)


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
    for rule, environment, measurement in breaching:
        if rule.shadow:
            continue  # watched only: a shadow guard is recorded and notified, never acted on
        for rollout in guarded:
            if rollout.environment != environment or rule.name not in rollout.guards or not rollout.auto_rollback:
                continue
            if rollout.target in handled:
                continue
            handled.add(rollout.target)
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
