"""What a rollout tells people: one ``RolloutStep`` per accepted operation or tick, and one when a stage's progress
deadline passes, decided without a database.

    operator start                          -> started          (forced past the guards or promotion order: ticket)
    operator advance                        -> advanced | completed, or forced_advance when force overrode the guards
    tick (auto stage baked, gates clear)    -> advanced | completed, actor "scheduler"
    operator pause / resume                 -> paused / resumed
    operator rollback                       -> rolled_back      (automatic rollbacks are told as the guard's alert)
    tick, stage past its progress deadline  -> deadline_passed, once per stage run, saying why the stage holds

Rollouts do not send anything themselves: whoever calls them hands over a ``StepAnnouncer`` (the control plane's
routes steps through the notification routes, ``controlplane.announcements``), so this domain needs nothing from
notifications.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

from controlplane.rollouts.stages import Rollout, RolloutState, duration_words, progress_deadline

__all__ = [
    "RolloutStep",
    "StepAnnouncer",
    "StepContext",
    "StepKind",
    "deadline_due",
    "deadline_step",
    "holding_reasons",
    "operation_step",
    "tick_step",
]


class StepKind(enum.StrEnum):
    """What happened to a rollout, as people are told."""

    STARTED = "rollout_started"
    ADVANCED = "stage_advanced"
    FORCED_ADVANCE = "forced_advance"
    PAUSED = "rollout_paused"
    RESUMED = "rollout_resumed"
    COMPLETED = "rollout_completed"
    ROLLED_BACK = "rolled_back"
    DEADLINE_PASSED = "progress_deadline_passed"


#: Steps someone should look at (something was overridden, undone, or is stuck); the others are for the record.
_TICKET = frozenset({StepKind.FORCED_ADVANCE, StepKind.ROLLED_BACK, StepKind.DEADLINE_PASSED})


@dataclass(frozen=True, slots=True)
class RolloutStep:
    """One step of a rollout: the flag, environment and stage it left the rollout at, who did it and why.

    ``stage`` is 1-based (as status and the audit log say it); ``key`` is unique per step, so a step told twice is
    recognised: the rollout, what happened, at which stage and when (a deadline: the stage run it is about).
    """

    kind: StepKind
    flag: str
    pipeline: str
    environment: str
    stage: int
    stage_count: int
    percentage: float
    actor: str
    reason: str
    summary: str
    at: datetime
    key: str
    forced: bool = False
    previous_percentage: float | None = None
    segment: str | None = None  # ``attribute=value`` for a rollout of one segment of a plan run per segment

    @property
    def severity(self) -> str:
        """``ticket`` for a forced step, a rollback by hand or a passed deadline; ``info`` for the others."""
        return "ticket" if self.forced or self.kind in _TICKET else "info"


@runtime_checkable  # Litestar checks injected values against the handler's annotation
class StepAnnouncer(Protocol):
    """Tells whoever should hear about rollout steps, in the caller's transaction."""

    def announce(self, session: Session, steps: Sequence[RolloutStep], *, now: datetime) -> None:
        """Record the steps to be told (an outbox written with the change, sent after it commits)."""
        ...


@dataclass(frozen=True, slots=True)
class StepContext:
    """Where a step happened and what stays the same for all of its kinds."""

    flag: str
    pipeline: str
    environment: str
    rollout_id: int
    segment: str | None = None  # ``attribute=value`` for a rollout of one segment of a plan run per segment

    @property
    def where(self) -> str:
        """The flag and where its rollout runs, as people read it: ``ai.x in production (queue=sales)``."""
        return f"{self.flag} in {self.environment}" + (f" ({self.segment})" if self.segment else "")


def _rollout_key(context: StepContext) -> str:
    return f"{context.flag}/{context.environment}/rollout-{context.rollout_id}"


def _kind_of(operation: str, after: Rollout, *, forced_past_guards: bool) -> StepKind:
    if operation == "advance" or operation == "tick":
        if forced_past_guards:
            return StepKind.FORCED_ADVANCE
        return StepKind.COMPLETED if after.state is RolloutState.COMPLETED else StepKind.ADVANCED
    kinds = {
        "start": StepKind.STARTED,
        "pause": StepKind.PAUSED,
        "resume": StepKind.RESUMED,
        "rollback": StepKind.ROLLED_BACK,
    }
    return kinds[operation]


def operation_step(
    operation: str,
    *,
    context: StepContext,
    before: Rollout,
    after: Rollout,
    actor: str,
    reason: str,
    summary: str,
    now: datetime,
    forced_past_guards: bool = False,
    forced: bool = False,
) -> RolloutStep:
    """The step an accepted operation (``start``, ``advance``, ``pause``, ``resume``, ``rollback``) makes.

    ``forced_past_guards`` turns an advance into a forced advance; ``forced`` marks any step that force let through
    (a start out of promotion order, say).
    """
    kind = _kind_of(operation, after, forced_past_guards=forced_past_guards)
    return RolloutStep(
        kind=kind,
        flag=context.flag,
        pipeline=context.pipeline,
        environment=context.environment,
        stage=after.stage_index + 1,
        stage_count=len(after.stages),
        percentage=after.percentage,
        actor=actor,
        reason=reason,
        summary=f"{context.where}: {summary}",
        at=now,
        key=f"{_rollout_key(context)}/{kind.value}/stage-{after.stage_index + 1}/{now.isoformat()}",
        forced=forced or forced_past_guards,
        previous_percentage=before.percentage,
        segment=context.segment,
    )


def tick_step(context: StepContext, *, before: Rollout, after: Rollout, summary: str, now: datetime) -> RolloutStep:
    """The step the scheduler's tick makes when a baked auto-advance stage with clear gates moves on."""
    return operation_step(
        "tick",
        context=context,
        before=before,
        after=after,
        actor="scheduler",
        reason=summary,
        summary=summary,
        now=now,
    )


def holding_reasons(rollout: Rollout, *, enabled: bool, gate_reasons: Sequence[str]) -> tuple[str, ...]:
    """Why a running stage has not moved on: the kill switch, its gates' reasons, or that it advances by hand."""
    reasons: list[str] = []
    if not enabled:
        reasons.append("the environment is switched off (enabled: false): nothing advances until it is switched on")
    reasons.extend(gate_reasons)
    if not rollout.stage.auto_advance:
        reasons.append("the stage advances by hand: it waits for an operator's `advance`")
    return tuple(reasons)


def deadline_due(rollout: Rollout, *, now: datetime, notified_at: datetime | None) -> bool:
    """True when a running stage has reached its progress deadline and nobody was told yet for this stage run.

    ``notified_at`` is when the deadline of the rollout's current stage run was last told (None: never); a told
    deadline older than the stage run (a transition cleared it, or it was told before a resume) does not count.
    """
    if rollout.state is not RolloutState.RUNNING or rollout.stage_started_at is None:
        return False
    if now < rollout.stage_started_at + progress_deadline(rollout.stage):
        return False
    return notified_at is None or notified_at < rollout.stage_started_at


def deadline_step(context: StepContext, rollout: Rollout, *, reasons: Sequence[str], now: datetime) -> RolloutStep:
    """The step telling that the running stage passed its progress deadline, and why it holds."""
    started = rollout.stage_started_at
    assert started is not None, "a running rollout has a stage start"
    deadline = progress_deadline(rollout.stage)
    stage = rollout.stage_index + 1
    why = "; ".join(reasons) or "no reason recorded"
    summary = (
        f"{context.where}: stage {stage}/{len(rollout.stages)} "
        f"({rollout.percentage:g}%) has not moved on for {duration_words(now - started)}, past its progress "
        f"deadline of {duration_words(deadline)}: {why}"
    )
    return RolloutStep(
        kind=StepKind.DEADLINE_PASSED,
        flag=context.flag,
        pipeline=context.pipeline,
        environment=context.environment,
        stage=stage,
        stage_count=len(rollout.stages),
        percentage=rollout.percentage,
        actor="scheduler",
        reason=why,
        summary=summary,
        at=now,
        key=f"{_rollout_key(context)}/deadline/stage-{stage}/{started.isoformat()}",
        previous_percentage=rollout.percentage,
        segment=context.segment,
    )
