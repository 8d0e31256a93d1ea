"""Wire types of rollout plans, rollout operations and rollout status."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from controlplane.rollouts.stages import RollbackPolicy, RolloutState

__all__ = ["GuardRead", "RolloutOperation", "RolloutRead", "RolloutStatus", "SegmentRead", "StageRead"]

Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]


class RolloutOperation(msgspec.Struct, forbid_unknown_fields=True):
    """The body of start, advance, pause, resume and rollback.

    ``expected_revision`` is the environment revision the operator last saw; it is required where acting on a
    stale view could skip a stage (start, advance, resume) and optional where the operation only makes things
    safer (pause, rollback), so an operator at 3 a.m. is never blocked from stopping a bad rollout.
    """

    reason: Reason | None = None
    expected_revision: int | None = None
    force: bool = False
    policy: RollbackPolicy | None = None
    #: The segment of a plan run per segment, ``attribute=value`` (``queue=support``): required there, refused
    #: elsewhere.
    segment: Annotated[str, msgspec.Meta(min_length=1, max_length=300)] | None = None
    #: Rollback only: also purge what was uploaded to the pipeline's buckets from this instant until the rollback
    #: (the bad window), asked for once the rollback is committed and audited with it as one incident.
    purge_uploads_since: Annotated[datetime, msgspec.Meta(tz=True)] | None = None


class StageRead(msgspec.Struct):
    """One stage of a plan."""

    percentage: float
    bake_seconds: float
    min_samples: int
    guards: list[str]
    auto_advance: bool
    #: How long the stage may run without moving on before someone is told (declared, or bake + max(10m, bake/4)).
    progress_deadline_seconds: float = 0.0


class GuardRead(msgspec.Struct):
    """A guard of the current stage and its latest state in this environment."""

    rule: str
    state: str
    condition: str
    value: float | None = None
    samples: int = 0
    detail: str = ""


class SegmentRead(msgspec.Struct):
    """One segment of a plan run per segment: its own rollout's state, stage, percentage and gates."""

    segment: str  # attribute=value, as operations name it
    value: str
    state: RolloutState
    stage_index: int
    stage_count: int
    percentage: float
    serving_percentage: float
    gates: str
    gates_detail: str
    rollout_id: int | None = None
    stage_started_at: datetime | None = None
    bake_remaining_seconds: float = 0.0
    updated_at: datetime | None = None


class RolloutStatus(msgspec.Struct):
    """Where a flag's rollout stands in one environment, and what the environment serves because of it.

    ``percentage`` is the rollout's stage; ``serving_percentage`` is what the environment really serves the rollout
    variant to right now (0 when switched off), so a kill switch or a manual edit is never hidden.
    """

    flag: str
    environment: str
    state: RolloutState
    stage_index: int
    stage_count: int
    percentage: float
    serving_percentage: float
    revision: int
    enabled: bool
    stages: list[StageRead]
    rollback_policy: RollbackPolicy
    gates: str
    gates_detail: str
    guards: list[GuardRead] = msgspec.field(default_factory=list)
    rollout_id: int | None = None
    stage_started_at: datetime | None = None
    bake_remaining_seconds: float = 0.0
    next_auto_advance_at: datetime | None = None
    previous_environment: str | None = None
    previous_environment_state: RolloutState | None = None
    started_by: str | None = None
    forced_reason: str | None = None
    updated_at: datetime | None = None
    #: While running: when the stage's progress deadline passes, whether it has, and when that was told.
    progress_deadline_at: datetime | None = None
    progress_deadline_passed: bool = False
    progress_deadline_notified_at: datetime | None = None
    #: The segment this status is of (``queue=support``); None for a plan run once, or for the overview of a plan run
    #: per segment, whose ``state`` adds up its segments' and whose ``gates`` is ``per_segment``.
    segment: str | None = None
    #: Every segment of a plan run per segment (empty for a plan run once).
    segments: list[SegmentRead] = msgspec.field(default_factory=list)
    #: A rollback with ``purge_uploads_since``: the incident its audit record and its purges share, and the purges.
    incident: str | None = None
    purge_runs: list[int] = msgspec.field(default_factory=list)


class RolloutRead(msgspec.Struct):
    """One past or current rollout, for the history."""

    id: int
    environment: str
    state: RolloutState
    stage_index: int
    percentage: float
    started_by: str | None
    forced_reason: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    segment: str | None = None  # the segment's value, for a plan run per segment
