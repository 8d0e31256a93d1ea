"""What a rollout is now, read from the database: a flag's plan and current rollout in an environment, the state of
each environment's rollout, the status operators see (with its guards, through a ``GateReader``) and the history.
Never writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.errors import NotFound
from controlplane.flags import service as flag_service
from controlplane.flags.models import Flag, FlagEnvironment
from controlplane.rollouts import stages as machine
from controlplane.rollouts.gates import GateReader, GateVerdict
from controlplane.rollouts.models import Rollout as RolloutRow
from controlplane.rollouts.models import RolloutPlan
from controlplane.rollouts.operations import PromotionOrder, RolloutTarget
from controlplane.rollouts.schemas import GuardRead, RolloutRead, RolloutStatus, SegmentRead, StageRead
from controlplane.rollouts.segments import Segmentation, refuse_segment, segment_rule_names
from controlplane.rollouts.stages import (
    RollbackPolicy,
    Rollout,
    RolloutState,
    Stage,
    stages_from_json,
    stages_to_json,
)

__all__ = [
    "SERVING_STATES",
    "LoadedRollout",
    "build_status",
    "current_rollout_state",
    "list_rollout_history",
    "load_rollout",
    "pending_from_plan",
    "plan_segmentation",
    "promotion_order",
    "rollout_status",
    "serving_environments",
    "serving_state",
    "stage_verdict",
    "to_machine",
]

#: States in which a rollout decides what its environment serves.
SERVING_STATES = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED})


@dataclass(slots=True)
class LoadedRollout:
    """A flag in one environment with its plans (in promotion order), this environment's plan and newest rollout;
    for a plan run per segment, the segment this rollout is (``segment``, None for the plan as a whole)."""

    flag: Flag
    state: FlagEnvironment
    plans: list[RolloutPlan]
    plan: RolloutPlan
    row: RolloutRow | None
    segment: str | None = None

    @property
    def segmentation(self) -> Segmentation | None:
        """The plan's ``per``: the attribute and values it runs per; None for a plan run once."""
        return plan_segmentation(self.plan)

    def guards(self, stage: Stage) -> tuple[str, ...]:
        """The guards this rollout reads for ``stage``: scoped to its segment's events when it is one."""
        segmentation = self.segmentation
        if segmentation is None or self.segment is None:
            return stage.guards
        return segment_rule_names(stage.guards, segmentation.attribute, self.segment)

    def scoped(self, stage: Stage) -> Stage:
        """``stage`` with the guards this rollout reads."""
        guards = self.guards(stage)
        return stage if guards == stage.guards else replace(stage, guards=guards)

    @property
    def segment_label(self) -> tuple[str, str] | None:
        """(attribute, value) of this rollout's segment; None when it is not one."""
        segmentation = self.segmentation
        if segmentation is None or self.segment is None:
            return None
        return (segmentation.attribute, self.segment)


def plan_segmentation(plan: RolloutPlan) -> Segmentation | None:
    """A stored plan's ``per``; None for a plan run once for the whole environment."""
    if plan.segment_attribute is None:
        return None
    return Segmentation(plan.segment_attribute, tuple(plan.segment_values or ()))


def to_machine(row: RolloutRow) -> Rollout:
    """A stored rollout as the stage machine sees it."""
    return Rollout(
        stages=stages_from_json(row.stages),
        state=RolloutState(row.state),
        stage_index=row.stage_index,
        stage_started_at=row.stage_started_at,
        rollback_policy=RollbackPolicy(row.rollback_policy),
    )


def pending_from_plan(plan: RolloutPlan) -> Rollout:
    """A rollout not yet started over a stored plan."""
    return machine.new_rollout(stages_from_json(plan.stages), RollbackPolicy(plan.rollback_policy))


def load_rollout(
    session: Session, target: RolloutTarget, environments: Sequence[str], *, overview: bool = False
) -> LoadedRollout:
    """The flag, its plans and its newest rollout in ``target``'s environment (and segment); NotFound without a plan
    there. A plan run per segment needs the segment named (InvalidInput), unless ``overview`` asks for the plan as a
    whole (no row); a plan run once refuses one."""
    state = flag_service.get_environment_state(
        session, key=target.flag, environment=target.environment, environments=environments
    )
    plans = list(
        session.scalars(select(RolloutPlan).where(RolloutPlan.flag_id == state.flag_id).order_by(RolloutPlan.position))
    )
    plan = next((p for p in plans if p.environment == target.environment), None)
    if plan is None:
        raise NotFound(
            "rollout-plan-not-found",
            f"flag `{target.flag}` has no rollout plan for {target.environment}; "
            f"it has plans for {', '.join(p.environment for p in plans) or 'no environment'}",
            flag=target.flag,
            environment=target.environment,
        )
    segmentation = plan_segmentation(plan)
    if segmentation is None:
        refuse_segment(target.segment, flag=target.flag, environment=target.environment)
        return LoadedRollout(state.flag, state, plans, plan, _current_row(session, state.flag_id, target.environment))
    if target.segment is None and overview:
        return LoadedRollout(state.flag, state, plans, plan, None)
    segment = segmentation.require(target.segment, flag=target.flag, environment=target.environment)
    row = _current_row(session, state.flag_id, target.environment, segment)
    return LoadedRollout(state.flag, state, plans, plan, row, segment)


def _current_row(session: Session, flag_id: int, environment: str, segment: str | None = None) -> RolloutRow | None:
    query = (
        select(RolloutRow)
        .where(
            RolloutRow.flag_id == flag_id,
            RolloutRow.environment == environment,
            RolloutRow.segment.is_(None) if segment is None else RolloutRow.segment == segment,
        )
        .order_by(RolloutRow.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def _segment_rows(session: Session, flag_id: int, environment: str) -> dict[str | None, RolloutRow]:
    """The newest rollout of each segment (None: of a plan run once) of a flag in an environment."""
    rows: dict[str | None, RolloutRow] = {}
    query = (
        select(RolloutRow)
        .where(RolloutRow.flag_id == flag_id, RolloutRow.environment == environment)
        .order_by(RolloutRow.id.desc())
    )
    for row in session.scalars(query):
        rows.setdefault(row.segment, row)
    return rows


#: How segments' states add up to the environment's: the first state any declared segment is in, in this order, and
#: completed only when every one has completed. A segment rolled back or never started is unfinished business: the
#: environment is not completed, so the next environment's promotion check (which needs it completed) holds.
_ENVIRONMENT_STATE_ORDER = (
    RolloutState.RUNNING,
    RolloutState.PAUSED,
    RolloutState.ROLLED_BACK,
    RolloutState.PENDING,
)


def _previous_environment(loaded: LoadedRollout) -> RolloutPlan | None:
    earlier = [p for p in loaded.plans if p.position < loaded.plan.position]
    return earlier[-1] if earlier else None


def _rollout_states(session: Session, flag_id: int, environment: str) -> list[RolloutState]:
    """The state of the current rollout of each declared segment of the environment's plan (pending for one never
    started); for a plan run once (or no plan), the one state of its newest rollout."""
    rows = _segment_rows(session, flag_id, environment)
    plan = session.scalar(
        select(RolloutPlan).where(RolloutPlan.flag_id == flag_id, RolloutPlan.environment == environment)
    )
    segmentation = None if plan is None else plan_segmentation(plan)
    if segmentation is None:
        row = rows.get(None)
        return [RolloutState(row.state) if row else RolloutState.PENDING]
    return [RolloutState(rows[value].state) if value in rows else RolloutState.PENDING for value in segmentation.values]


def current_rollout_state(session: Session, flag_id: int, environment: str) -> RolloutState:
    """The state of the newest rollout of a flag in an environment; pending when there has been none.

    Run per segment, the environment is running while any segment runs, else paused while any is paused, else rolled
    back while any is rolled back, else pending while any has not started, and completed only once every declared
    segment has completed. This is the state the next environment's promotion check reads: it passes only when every
    segment here completed. Whether the environment serves the rollout variant at all is ``serving_state``.
    """
    states = _rollout_states(session, flag_id, environment)
    if len(states) == 1:
        return states[0]
    return next((state for state in _ENVIRONMENT_STATE_ORDER if state in states), RolloutState.COMPLETED)


def serving_state(session: Session, flag_id: int, environment: str) -> RolloutState | None:
    """Why the environment serves the flag's rollout variant: running, paused or completed, the first of these its
    rollout (any segment of one run per segment) is in; None when none serves."""
    states = _rollout_states(session, flag_id, environment)
    serving = (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED)
    return next((state for state in serving if state in states), None)


def serving_environments(session: Session, flag_id: int, environments: Sequence[str]) -> list[str]:
    """The environments where a rollout of the flag (or of any of its segments) is running, paused or completed
    (serving its variant)."""
    return [env for env in environments if serving_state(session, flag_id, env) is not None]


def promotion_order(session: Session, loaded: LoadedRollout) -> PromotionOrder:
    """The environment before this one in the flag's promotion order, and the state of its rollout."""
    previous = _previous_environment(loaded)
    if previous is None:
        return PromotionOrder(loaded.plan.environment)
    state = current_rollout_state(session, loaded.flag.id, previous.environment)
    return PromotionOrder(loaded.plan.environment, previous.environment, state)


def stage_verdict(session: Session, loaded: LoadedRollout, rollout: Rollout, gates: GateReader) -> GateVerdict:
    """Whether the stage ``rollout`` is at may be left."""
    return gates.verdict(
        session,
        flag=loaded.flag.key,
        environment=loaded.plan.environment,
        stage=loaded.scoped(rollout.stage),
        stage_started_at=rollout.stage_started_at,
        variant=loaded.flag.rollout_variant,
        segment=loaded.segment_label,
    )


def rollout_status(
    session: Session, *, target: RolloutTarget, environments: Sequence[str], now: datetime, gates: GateReader
) -> RolloutStatus:
    """The rollout of a flag in an environment, as an operator needs to see it."""
    loaded = load_rollout(session, target, environments, overview=True)
    return build_status(session, loaded, loaded.row, now, gates)


def build_status(
    session: Session, loaded: LoadedRollout, row: RolloutRow | None, now: datetime, gates: GateReader
) -> RolloutStatus:
    """The status of ``row`` (or of the plan not yet started), with its stage's guards and gates."""
    rollout = to_machine(row) if row else pending_from_plan(loaded.plan)
    segmentation = loaded.segmentation
    overview = segmentation is not None and loaded.segment is None
    readings = [] if overview else gates.readings(session, loaded.guards(rollout.stage), loaded.plan.environment)
    guards = [
        GuardRead(
            rule=reading.rule,
            state=reading.state.value if reading.state else "not_evaluated",
            value=reading.value,
            samples=reading.samples,
            condition=reading.condition,
            detail=reading.detail,
        )
        for reading in readings
    ]
    segments = _segment_reads(session, loaded, segmentation, now, gates) if segmentation is not None else []
    if overview:
        assert segmentation is not None
        state = current_rollout_state(session, loaded.flag.id, loaded.plan.environment)
        rollout = replace(rollout, state=state)
        gate, gates_detail = (
            "per_segment",
            f"run per `{segmentation.attribute}`: each segment has its own stage, bake and gates (see segments)",
        )
    elif rollout.state is RolloutState.RUNNING:
        verdict = stage_verdict(session, loaded, rollout, gates)
        gate, gates_detail = ("clear" if verdict.clear else "holding"), verdict.summary
    else:
        gate, gates_detail = (
            "not_running",
            f"gates are judged while the rollout runs; it is {rollout.state.value.replace('_', ' ')}",
        )
    previous = _previous_environment(loaded)
    remaining = machine.bake_remaining(rollout, now=now)
    auto = rollout.state is RolloutState.RUNNING and rollout.stage.auto_advance
    started = rollout.stage_started_at
    return RolloutStatus(
        flag=loaded.flag.key,
        environment=loaded.plan.environment,
        state=rollout.state,
        stage_index=rollout.stage_index,
        stage_count=len(rollout.stages),
        percentage=0.0 if overview else rollout.percentage,
        serving_percentage=_serving_percentage(loaded.state, loaded.segment),
        revision=loaded.state.revision,
        enabled=loaded.state.enabled,
        stages=[
            StageRead(**{**item, "progress_deadline_seconds": machine.progress_deadline(stage).total_seconds()})
            for stage, item in zip(rollout.stages, stages_to_json(rollout.stages), strict=True)
        ],
        rollback_policy=rollout.rollback_policy,
        gates=gate,
        gates_detail=gates_detail,
        guards=guards,
        rollout_id=row.id if row else None,
        stage_started_at=started,
        bake_remaining_seconds=remaining.total_seconds(),
        next_auto_advance_at=(started + rollout.stage.bake) if auto and started else None,
        previous_environment=previous.environment if previous else None,
        previous_environment_state=(
            current_rollout_state(session, loaded.flag.id, previous.environment) if previous else None
        ),
        started_by=row.started_by if row else None,
        forced_reason=row.forced_reason if row else None,
        updated_at=row.updated_at if row else None,
        progress_deadline_at=machine.progress_deadline_at(rollout),
        progress_deadline_passed=machine.deadline_passed(rollout, now=now),
        progress_deadline_notified_at=row.deadline_notified_at if row else None,
        segment=f"{segmentation.attribute}={loaded.segment}" if segmentation and loaded.segment else None,
        segments=segments,
    )


def _segment_reads(
    session: Session, loaded: LoadedRollout, segmentation: Segmentation, now: datetime, gates: GateReader
) -> list[SegmentRead]:
    """Every segment of a plan run per segment, each with its own state, stage, percentage and gates."""
    rows = _segment_rows(session, loaded.flag.id, loaded.plan.environment)
    reads = []
    for value in segmentation.values:
        row = rows.get(value)
        rollout = to_machine(row) if row else pending_from_plan(loaded.plan)
        one = LoadedRollout(loaded.flag, loaded.state, loaded.plans, loaded.plan, row, value)
        gate, detail = "not_running", f"it is {rollout.state.value.replace('_', ' ')}"
        if rollout.state is RolloutState.RUNNING:
            verdict = stage_verdict(session, one, rollout, gates)
            gate, detail = ("clear" if verdict.clear else "holding"), verdict.summary
        reads.append(
            SegmentRead(
                segment=f"{segmentation.attribute}={value}",
                value=value,
                state=rollout.state,
                stage_index=rollout.stage_index,
                stage_count=len(rollout.stages),
                percentage=rollout.percentage,
                serving_percentage=_serving_percentage(loaded.state, value),
                gates=gate,
                gates_detail=detail,
                rollout_id=row.id if row else None,
                stage_started_at=rollout.stage_started_at,
                bake_remaining_seconds=machine.bake_remaining(rollout, now=now).total_seconds(),
                updated_at=row.updated_at if row else None,
            )
        )
    return reads


def _serving_percentage(state: FlagEnvironment, segment: str | None = None) -> float:
    if not state.enabled or not state.rollout:
        return 0.0
    if segment is not None:
        segments = state.rollout.get("segments") or {}
        return float((segments.get("percentages") or {}).get(segment, 0.0))
    return float(state.rollout.get("percentage", 0.0))


def list_rollout_history(
    session: Session, *, key: str, environment: str | None, environments: Sequence[str]
) -> list[RolloutRead]:
    """Every rollout of a flag (in one environment, or all), newest first."""
    flag = flag_service.get_flag(session, key)
    query = select(RolloutRow).where(RolloutRow.flag_id == flag.id).order_by(RolloutRow.id.desc())
    if environment is not None:
        flag_service.require_environment(environment, environments)
        query = query.where(RolloutRow.environment == environment)
    reads = []
    for row in session.scalars(query):
        rollout = to_machine(row)
        reads.append(
            RolloutRead(
                id=row.id,
                environment=row.environment,
                segment=row.segment,
                state=rollout.state,
                stage_index=row.stage_index,
                percentage=rollout.percentage,
                started_by=row.started_by,
                forced_reason=row.forced_reason,
                created_at=row.created_at,
                updated_at=row.updated_at,
                ended_at=row.ended_at,
            )
        )
    return reads
