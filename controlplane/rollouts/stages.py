"""The rollout stage machine: a pure function of (rollout, operation, clock) to a new rollout or a refusal.

    pending --start--> running --advance--> running (next stage) ... --advance (last stage)--> completed
    running --pause--> paused --resume--> running
    running | paused | completed --rollback(off)--> rolled_back           (serves the off variant)
    running | paused --rollback(previous_stage, stage > 0)--> paused one stage back
    running --tick (auto stage, bake elapsed)--> as advance

No database, no clock of its own, no randomness: the caller passes ``now`` and persists the result
(``stages_to_json`` and ``stages_from_json`` are a plan's stored form).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "Refusal",
    "RollbackPolicy",
    "Rollout",
    "RolloutState",
    "Stage",
    "Transition",
    "advance",
    "bake_remaining",
    "deadline_passed",
    "duration_words",
    "new_rollout",
    "pause",
    "progress_deadline",
    "progress_deadline_at",
    "promotion_refusal",
    "resume",
    "rollback",
    "stages_from_json",
    "stages_to_json",
    "start",
    "tick",
    "validate_stages",
]

#: The longest bake a stage may ask for; longer ones are typos, and would overflow the calendar.
MAX_BAKE = timedelta(days=366)
#: The least time a stage is given past its bake before its progress deadline passes (unless it declares one):
#: Argo Rollouts' and Flagger's default `progressDeadlineSeconds` (600 s). A stage with traffic decides within it:
#: sequential guards fold a 10-second window at a time, and the tick runs every 15 s.
DEADLINE_MARGIN_MIN = timedelta(minutes=10)
#: The share of its bake a stage is given past it: a stage sized to gather `min_samples` in its bake that needs a
#: quarter more than that is getting less traffic than its plan assumed, which is worth telling someone.
DEADLINE_MARGIN_SHARE = 0.25


class RolloutState(enum.StrEnum):
    """Where a rollout is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


class RollbackPolicy(enum.StrEnum):
    """Where a rollback takes the flag: fully off, or one stage back (off when already at the first)."""

    OFF = "off"
    PREVIOUS_STAGE = "previous_stage"


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a plan: the share of traffic served the rollout variant, and what must hold before leaving it."""

    percentage: float
    bake: timedelta = timedelta(0)
    min_samples: int = 0
    guards: tuple[str, ...] = ()
    auto_advance: bool = False
    #: How long the stage may run without moving on before someone is told; None: the default (``progress_deadline``).
    deadline: timedelta | None = None

    def __post_init__(self) -> None:
        if self.deadline is not None:
            if self.deadline <= self.bake:
                raise ValueError(
                    f"progress_deadline must be longer than the stage's bake ({duration_words(self.bake)}), "
                    f"got {duration_words(self.deadline)}: the stage cannot advance before its bake is over"
                )
            if self.deadline > MAX_BAKE + MAX_BAKE:
                raise ValueError(f"progress_deadline must be at most {2 * MAX_BAKE.days} days")
        if not 0 <= self.percentage <= 100:
            raise ValueError(f"stage percentage must be within 0..100, got {self.percentage}")
        if self.bake < timedelta(0):
            raise ValueError("stage bake time must not be negative")
        if self.bake > MAX_BAKE:
            raise ValueError(f"stage bake time must be at most {MAX_BAKE.days} days")
        if self.min_samples < 0:
            raise ValueError("stage min_samples must not be negative")


def validate_stages(stages: Sequence[Stage]) -> None:
    """Refuse a plan that is empty, goes down, or does not end at 100%."""
    if not stages:
        raise ValueError("a plan needs at least one stage")
    if stages[0].percentage <= 0:
        raise ValueError("the first stage must serve more than 0%: a 0% stage is a rollout that does nothing")
    for earlier, later in itertools.pairwise(stages):
        if later.percentage <= earlier.percentage:
            raise ValueError(
                f"stage percentages must strictly increase, got {earlier.percentage} then {later.percentage}"
            )
    if stages[-1].percentage != 100:
        raise ValueError(f"the last stage must be 100%, got {stages[-1].percentage}")


def duration_words(delta: timedelta) -> str:
    """A duration as definitions write it: ``1h30m``, ``45s``, ``0s`` (whole seconds)."""
    seconds = int(delta.total_seconds())
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    return "".join(f"{amount}{unit}" for amount, unit in parts if amount) or "0s"


def progress_deadline(stage: Stage) -> timedelta:
    """How long ``stage`` may run before its progress deadline passes: as declared, else
    ``bake + max(10 minutes, bake / 4)``."""
    if stage.deadline is not None:
        return stage.deadline
    return stage.bake + max(DEADLINE_MARGIN_MIN, stage.bake * DEADLINE_MARGIN_SHARE)


def stages_to_json(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """The stored form of a plan's stages (``progress_deadline_seconds`` only where a stage declares one, so plans
    stored before it existed compare equal)."""
    items: list[dict[str, Any]] = []
    for stage in stages:
        item: dict[str, Any] = {
            "percentage": stage.percentage,
            "bake_seconds": stage.bake.total_seconds(),
            "min_samples": stage.min_samples,
            "guards": list(stage.guards),
            "auto_advance": stage.auto_advance,
        }
        if stage.deadline is not None:
            item["progress_deadline_seconds"] = stage.deadline.total_seconds()
        items.append(item)
    return items


def stages_from_json(items: Sequence[dict[str, Any]]) -> tuple[Stage, ...]:
    """Stages read back from storage."""
    return tuple(
        Stage(
            percentage=float(item["percentage"]),
            bake=timedelta(seconds=float(item["bake_seconds"])),
            min_samples=int(item["min_samples"]),
            guards=tuple(item["guards"]),
            auto_advance=bool(item["auto_advance"]),
            deadline=(
                timedelta(seconds=float(item["progress_deadline_seconds"]))
                if item.get("progress_deadline_seconds") is not None
                else None
            ),
        )
        for item in items
    )


@dataclass(frozen=True, slots=True)
class Rollout:
    """A rollout of one flag in one environment.

    ``percentage`` is what the environment serves the rollout variant to; ``is_serving`` is false when the
    rollout leaves the environment serving its off variant to everyone (pending or rolled back).
    """

    stages: tuple[Stage, ...]
    state: RolloutState = RolloutState.PENDING
    stage_index: int = 0
    stage_started_at: datetime | None = None
    rollback_policy: RollbackPolicy = RollbackPolicy.OFF

    @property
    def stage(self) -> Stage:
        """The stage the rollout is at."""
        return self.stages[self.stage_index]

    @property
    def is_serving(self) -> bool:
        """True while the rollout variant is served to anyone."""
        return self.state in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED)

    @property
    def percentage(self) -> float:
        """The share served the rollout variant; 0 when the environment serves its off variant."""
        return self.stage.percentage if self.is_serving else 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """An accepted operation: the rollout after it, and what happened in words for the audit log."""

    rollout: Rollout
    summary: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused operation: a stable machine-readable code and a sentence for the operator."""

    code: str
    reason: str


Outcome = Transition | Refusal


def new_rollout(stages: Sequence[Stage], policy: RollbackPolicy = RollbackPolicy.OFF) -> Rollout:
    """Build a pending rollout over a validated plan."""
    validate_stages(stages)
    return Rollout(stages=tuple(stages), rollback_policy=policy)


def _refuse(rollout: Rollout, operation: str, allowed: str) -> Refusal:
    return Refusal(
        code="illegal_transition",
        reason=f"cannot {operation} a rollout that is {rollout.state.value}; {allowed}",
    )


def start(rollout: Rollout, *, now: datetime) -> Outcome:
    """Start a pending rollout at its first stage."""
    if rollout.state is not RolloutState.PENDING:
        return _refuse(rollout, "start", "only a pending rollout can start")
    started = replace(rollout, state=RolloutState.RUNNING, stage_index=0, stage_started_at=now)
    return Transition(started, f"started at stage 1/{len(rollout.stages)} ({started.percentage:g}%)")


def _kill_switch_refusal(operation: str) -> Refusal:
    return Refusal(
        code="kill_switch_off",
        reason=f"the environment is switched off (enabled: false), so {operation} would serve nothing more; "
        "switch it back on or roll the rollout back",
    )


def advance(rollout: Rollout, *, now: datetime, enabled: bool = True) -> Outcome:
    """Move a running rollout exactly one stage forward; from the last stage, complete it.

    ``enabled`` is the environment's kill switch: an operator who pulled it is never overridden by an advance.
    """
    if rollout.state is not RolloutState.RUNNING:
        hint = "resume it first" if rollout.state is RolloutState.PAUSED else "only a running rollout advances"
        return _refuse(rollout, "advance", hint)
    if not enabled:
        return _kill_switch_refusal("advance")
    if rollout.stage_index == len(rollout.stages) - 1:
        completed = replace(rollout, state=RolloutState.COMPLETED, stage_started_at=now)
        return Transition(completed, f"completed at {completed.percentage:g}%")
    moved = replace(rollout, stage_index=rollout.stage_index + 1, stage_started_at=now)
    return Transition(
        moved,
        f"advanced to stage {moved.stage_index + 1}/{len(rollout.stages)} ({moved.percentage:g}%)",
    )


def pause(rollout: Rollout, *, now: datetime) -> Outcome:
    """Hold a running rollout where it is: no automatic advance until resumed."""
    if rollout.state is not RolloutState.RUNNING:
        return _refuse(rollout, "pause", "only a running rollout can be paused")
    return Transition(replace(rollout, state=RolloutState.PAUSED), f"paused at {rollout.percentage:g}%")


def resume(rollout: Rollout, *, now: datetime, enabled: bool = True) -> Outcome:
    """Resume a paused rollout; the stage's bake time starts again from now."""
    if rollout.state is not RolloutState.PAUSED:
        return _refuse(rollout, "resume", "only a paused rollout can be resumed")
    if not enabled:
        return _kill_switch_refusal("resume")
    # The bake clock restarts: time spent paused was time nobody vouched for the stage.
    resumed = replace(rollout, state=RolloutState.RUNNING, stage_started_at=now)
    return Transition(resumed, f"resumed at {resumed.percentage:g}%")


def rollback(rollout: Rollout, *, now: datetime, policy: RollbackPolicy | None = None) -> Outcome:
    """Roll back: to off (the off variant for everyone), or one stage back and paused."""
    if rollout.state not in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED):
        return _refuse(rollout, "roll back", "only a running, paused or completed rollout can be rolled back")
    chosen = policy or rollout.rollback_policy
    in_progress = rollout.state is not RolloutState.COMPLETED
    if chosen is RollbackPolicy.PREVIOUS_STAGE and in_progress and rollout.stage_index > 0:
        back = replace(rollout, state=RolloutState.PAUSED, stage_index=rollout.stage_index - 1, stage_started_at=now)
        return Transition(back, f"rolled back one stage to {back.percentage:g}% and paused")
    off = replace(rollout, state=RolloutState.ROLLED_BACK, stage_started_at=now)
    return Transition(off, f"rolled back to off (was {rollout.percentage:g}%)")


def bake_remaining(rollout: Rollout, *, now: datetime) -> timedelta:
    """How long the current stage must still bake; zero once baked or when not running."""
    if rollout.state is not RolloutState.RUNNING or rollout.stage_started_at is None:
        return timedelta(0)
    return max(timedelta(0), rollout.stage_started_at + rollout.stage.bake - now)


def progress_deadline_at(rollout: Rollout) -> datetime | None:
    """When the running stage's progress deadline passes; None when the rollout is not running.

    Time spent paused does not count (as Argo's ``progressDeadlineSeconds``): resume restarts the stage's clock.
    """
    if rollout.state is not RolloutState.RUNNING or rollout.stage_started_at is None:
        return None
    return rollout.stage_started_at + progress_deadline(rollout.stage)


def deadline_passed(rollout: Rollout, *, now: datetime) -> bool:
    """True when the rollout runs and its stage has been running for its progress deadline or longer."""
    deadline_at = progress_deadline_at(rollout)
    return deadline_at is not None and now >= deadline_at


def tick(rollout: Rollout, *, now: datetime, enabled: bool = True) -> Outcome | None:
    """Advance a running auto-advance stage once its bake time has passed; None when there is nothing to do.

    A switched-off environment (``enabled`` false) holds: the scheduler never brings a flag back by itself.
    Guards are judged by the caller (``rollouts.service.tick_rollout``, through its ``GateReader``), which holds
    the stage while they refuse.
    """
    if rollout.state is not RolloutState.RUNNING or not rollout.stage.auto_advance or not enabled:
        return None
    if bake_remaining(rollout, now=now) > timedelta(0):
        return None
    outcome = advance(rollout, now=now)
    if isinstance(outcome, Transition):
        return Transition(outcome.rollout, f"{outcome.summary} after bake time")
    return outcome


def promotion_refusal(
    environment: str, previous_environment: str | None, previous_state: RolloutState | None
) -> Refusal | None:
    """Refuse a start before the previous environment in the promotion order has completed; None when allowed."""
    if previous_environment is None or previous_state is RolloutState.COMPLETED:
        return None
    state = previous_state.value if previous_state else RolloutState.PENDING.value
    return Refusal(
        code="promotion_order",
        reason=f"cannot start in {environment} before the rollout has completed in {previous_environment} "
        f"(there it is {state})",
    )
