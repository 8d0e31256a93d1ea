"""Use cases of rollouts: load state, ask the stage machine (through ``decide_operation``), persist, audit.

Takes a session, never commits. Guards are read through the ``GateReader`` the caller hands over
(``rollouts.gates``): this domain does not read alert states itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Subquery, and_, func, or_, select, update
from sqlalchemy.orm import Session

from controlplane.audit.service import append_audit_record
from controlplane.catalog.rules import AlertState
from controlplane.errors import DomainError
from controlplane.flags import service as flag_service
from controlplane.flags.models import Flag, FlagEnvironment
from controlplane.rollouts import stages as machine
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.holds import RolloutHold
from controlplane.rollouts.models import Rollout as RolloutRow
from controlplane.rollouts.models import RolloutPlan
from controlplane.rollouts.operations import (
    Operation,
    PromotionOrder,
    Refused,
    RolloutTarget,
    check_operation,
    decide_operation,
)
from controlplane.rollouts.schemas import RolloutOperation, RolloutStatus
from controlplane.rollouts.segments import SegmentRef, segment_rule_names
from controlplane.rollouts.stages import Rollout, RolloutState, stages_from_json, stages_to_json
from controlplane.rollouts.status import (
    LoadedRollout,
    build_status,
    load_rollout,
    pending_from_plan,
    promotion_order,
    serving_state,
    stage_verdict,
    to_machine,
)
from controlplane.rollouts.steps import (
    StepAnnouncer,
    StepContext,
    deadline_due,
    deadline_step,
    holding_reasons,
    operation_step,
    tick_step,
)

__all__ = [
    "GuardedRollout",
    "TickResult",
    "guarded_rollouts",
    "is_rollout_serving",
    "operate_rollout",
    "running_rollout_targets",
    "tick_rollout",
]


def _snapshot(rollout: Rollout, state: FlagEnvironment, segment: tuple[str, str] | None) -> dict[str, Any]:
    snapshot: dict[str, Any] = {
        "state": rollout.state.value,
        "stage_index": rollout.stage_index,
        "percentage": rollout.percentage,
        "enabled": state.enabled,
    }
    if segment is not None:
        snapshot["segment"] = f"{segment[0]}={segment[1]}"
    return snapshot


def _serve(loaded: LoadedRollout, rollout: Rollout, *, switch_on: bool) -> None:
    """Make the environment serve what the rollout says; only a start turns the kill switch on."""
    state = loaded.state
    base = state.rollout or {"bucket_by": "targetingKey", "when": []}
    variant = loaded.flag.rollout_variant or base.get("variant")
    segmentation = loaded.segmentation
    if segmentation is not None and loaded.segment is not None:
        # One segment moves; every other declared segment keeps what it serves (0 until it starts).
        stored = base.get("segments") or {}
        kept = stored.get("percentages", {}) if stored.get("attribute") == segmentation.attribute else {}
        percentages = {value: float(kept.get(value, 0.0)) for value in segmentation.values}
        percentages[loaded.segment] = rollout.percentage
        state.rollout = {
            **base,
            "variant": variant,
            "percentage": 0.0,  # unused while segments are served: each serves its own
            "segments": {"attribute": segmentation.attribute, "percentages": percentages},
        }
        # A segment's rollback serves it 0%, not the kill switch: the other segments' rollouts go on.
        if switch_on:
            state.enabled = True
        return
    state.rollout = {**base, "variant": variant, "percentage": rollout.percentage}
    if rollout.state is RolloutState.ROLLED_BACK:
        # The kill switch as well as 0%: rules that served the new variant to some tenants stop too.
        state.enabled = False
    elif switch_on:
        state.enabled = True


def operate_rollout(
    session: Session,
    *,
    target: RolloutTarget,
    operation: Operation,
    body: RolloutOperation,
    actor: str,
    environments: Sequence[str],
    now: datetime,
    gates: GateReader,
    announcer: StepAnnouncer | None,
    hold: RolloutHold | None,
    incident: str | None = None,
) -> RolloutStatus:
    """Apply one operator operation to the rollout of a flag in an environment; ``announcer`` is told the step
    (None: nobody is, as for an automatic rollback, which is told as its guard's alert); ``hold`` may refuse the
    operation before anything changes (``rollouts.holds``). Both required, so a new way in (a page, a command) says
    whether its steps are told and what may hold it rather than forgetting to.

    ``incident`` (a rollback with ``purge_uploads_since``) is recorded in the audit record's ``after``, with the
    purge's start: the purge asked for once this commits carries the same incident id."""
    check_operation(operation, body, target)
    if hold is not None:
        hold.check(session, target, operation)
    loaded = load_rollout(session, target, environments)
    if body.expected_revision is not None:
        flag_service.check_revision(
            f"flag `{target.flag}` in",
            target.environment,
            expected=body.expected_revision,
            actual=loaded.state.revision,
        )
    row = loaded.row
    # A start after a rollback begins a new rollout from the current plan; the old one stays in the history.
    fresh = row is None or (operation is Operation.START and row.state == RolloutState.ROLLED_BACK)
    current = pending_from_plan(loaded.plan) if fresh or row is None else to_machine(row)
    # What the decision may need for this operation, read up front (it is judged after the stage machine's say).
    verdict = stage_verdict(session, loaded, current, gates) if operation is Operation.ADVANCE else None
    firing: list[str] = []
    promotion: PromotionOrder | None = None
    if operation is Operation.START:
        readings = gates.readings(session, loaded.guards(current.stages[0]), loaded.plan.environment)
        firing = [reading.rule for reading in readings if reading.state is AlertState.FIRING and not reading.shadow]
        promotion = promotion_order(session, loaded)
    decision = decide_operation(
        operation,
        body=body,
        current=current,
        enabled=loaded.state.enabled,
        now=now,
        gates=verdict,
        firing_guards=firing,
        promotion=promotion,
    )
    if isinstance(decision, Refused):
        raise decision.error()
    if operation is Operation.START:
        if fresh or row is None:
            row = RolloutRow(
                flag_id=loaded.flag.id, environment=target.environment, segment=loaded.segment, created_at=now
            )
            session.add(row)
        row.started_by = actor
        row.auto_rollback = loaded.plan.auto_rollback
        row.forced_reason = body.reason if decision.forced else None
    assert row is not None
    _persist_and_audit(
        session,
        loaded,
        row,
        current,
        decision.transition,
        now=now,
        actor=actor,
        action=f"rollout.{operation.value}",
        reason=decision.audit_reason,
        switch_on=operation is Operation.START,
        incident=_incident_note(incident, body),
    )
    if announcer is not None:
        step = operation_step(
            operation.value,
            context=_step_context(loaded, row),
            before=current,
            after=decision.transition.rollout,
            actor=actor,
            reason=body.reason.strip() if body.reason else "",
            summary=decision.transition.summary,
            now=now,
            forced_past_guards=decision.forced_past_guards is not None,
            forced=decision.forced,
        )
        announcer.announce(session, [step], now=now)
    return build_status(session, loaded, row, now, gates)


def _incident_note(incident: str | None, body: RolloutOperation) -> dict[str, Any]:
    if incident is None:
        return {}
    since = body.purge_uploads_since
    return {"incident": incident, "purge_uploads_since": since.isoformat() if since is not None else None}


def _step_context(loaded: LoadedRollout, row: RolloutRow) -> StepContext:
    return StepContext(
        flag=loaded.flag.key,
        pipeline=loaded.flag.pipeline or "",
        environment=loaded.plan.environment,
        rollout_id=row.id,
        segment=None if loaded.segment_label is None else "=".join(loaded.segment_label),
    )


def _persist_and_audit(
    session: Session,
    loaded: LoadedRollout,
    row: RolloutRow,
    current: Rollout,
    outcome: machine.Transition,
    *,
    now: datetime,
    actor: str,
    action: str,
    reason: str,
    switch_on: bool = False,
    incident: dict[str, Any] | None = None,
) -> None:
    """Store the rollout after a transition, make the environment serve it, and audit the change (with the
    ``incident`` it belongs to, if any)."""
    after = outcome.rollout
    before = _snapshot(current, loaded.state, loaded.segment_label) | {"revision": loaded.state.revision}
    row.state = after.state.value
    row.stage_index = after.stage_index
    row.stages = stages_to_json(after.stages)
    row.rollback_policy = after.rollback_policy.value
    row.stage_started_at = after.stage_started_at
    row.updated_at = now
    if after.state in (RolloutState.COMPLETED, RolloutState.ROLLED_BACK):
        row.ended_at = now
    # A new stage run (or no run at all) has its own progress deadline, told afresh.
    row.deadline_notified_at = None
    _serve(loaded, after, switch_on=switch_on)
    flag_service.announce_configuration_change(session)
    # Every operation moves the environment's revision, even a pause that changes nothing served:
    # the revision is what concurrent operators compare against.
    loaded.state.updated_at = now
    session.flush()
    append_audit_record(
        session,
        now=now,
        actor=actor,
        action=action,
        target_type="flag",
        target=loaded.flag.key,
        environment=loaded.plan.environment,
        reason=reason,
        before=before,
        after=_snapshot(after, loaded.state, loaded.segment_label)
        | {"revision": loaded.state.revision}
        | (incident or {}),
    )


def _newest_rollouts() -> Subquery:
    """The id of the current (newest) rollout of each flag, environment and segment."""
    return (
        select(func.max(RolloutRow.id).label("id"))
        .group_by(RolloutRow.flag_id, RolloutRow.environment, RolloutRow.segment)
        .subquery()
    )


def _segment_ref(plan: RolloutPlan | None, segment: str | None) -> SegmentRef | None:
    if segment is None or plan is None or plan.segment_attribute is None:
        return None
    return SegmentRef(plan.segment_attribute, segment)


def running_rollout_targets(session: Session) -> list[RolloutTarget]:
    """Every flag and environment (and segment) whose current (newest) rollout is running."""
    newest = _newest_rollouts()
    rows = session.execute(
        select(Flag.key, RolloutRow.environment, RolloutRow.segment, RolloutPlan)
        .join(Flag, Flag.id == RolloutRow.flag_id)
        .join(newest, newest.c.id == RolloutRow.id)
        .outerjoin(
            RolloutPlan,
            and_(RolloutPlan.flag_id == RolloutRow.flag_id, RolloutPlan.environment == RolloutRow.environment),
        )
        .where(RolloutRow.state == RolloutState.RUNNING.value)
        .order_by(RolloutRow.id)
    ).all()
    return [RolloutTarget(key, environment, _segment_ref(plan, segment)) for key, environment, segment, plan in rows]


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one tick did to one rollout: the status after an advance (None: it did not advance), whether it told
    that the stage's progress deadline passed, and why ``hold`` kept a due advance back (None: nothing held it)."""

    advanced: RolloutStatus | None = None
    deadline_told: bool = False
    held: str | None = None


def tick_rollout(
    session: Session,
    *,
    target: RolloutTarget,
    environments: Sequence[str],
    now: datetime,
    gates: GateReader,
    announcer: StepAnnouncer | None,
    hold: RolloutHold | None,
) -> TickResult:
    """Advance one running rollout whose auto-advance stage has baked with clear gates, unless ``hold`` refuses the
    advance (an incident override in force: the scheduler fights it no more than an operator may); otherwise, once
    its stage has held past its progress deadline, tell ``announcer`` why it holds (once per stage run)."""
    loaded = load_rollout(session, target, environments)
    row = loaded.row
    if row is None:
        return TickResult()
    current = to_machine(row)
    outcome = machine.tick(current, now=now, enabled=loaded.state.enabled)
    verdict = None
    held = None
    if isinstance(outcome, machine.Transition):
        verdict = stage_verdict(session, loaded, current, gates)
        held = _held_back(session, hold, target) if verdict.clear else None
        if verdict.clear and held is None:
            moved = machine.Transition(outcome.rollout, f"{outcome.summary}; {verdict.summary}")
            _persist_and_audit(
                session,
                loaded,
                row,
                current,
                moved,
                now=now,
                actor="scheduler",
                action="rollout.auto_advance",
                reason=moved.summary,
            )
            if announcer is not None:
                step = tick_step(
                    _step_context(loaded, row), before=current, after=moved.rollout, summary=moved.summary, now=now
                )
                announcer.announce(session, [step], now=now)
            return TickResult(advanced=build_status(session, loaded, row, now, gates))
    # The stage holds (guards, samples, the kill switch, an incident, or it advances by hand): past its deadline,
    # say why.
    if announcer is None or not deadline_due(current, now=now, notified_at=row.deadline_notified_at):
        return TickResult(held=held)
    verdict = verdict or stage_verdict(session, loaded, current, gates)
    held = held or _held_back(session, hold, target)
    gate_reasons = (*verdict.reasons, held) if held is not None else verdict.reasons
    reasons = holding_reasons(current, enabled=loaded.state.enabled, gate_reasons=gate_reasons)
    if not _claim_deadline(session, row, current, now=now):
        return TickResult(held=held)
    announcer.announce(session, [deadline_step(_step_context(loaded, row), current, reasons=reasons, now=now)], now=now)
    return TickResult(deadline_told=True, held=held)


def _held_back(session: Session, hold: RolloutHold | None, target: RolloutTarget) -> str | None:
    """Why ``hold`` refuses an advance of ``target`` now (its refusal's sentence), or None when it lets it through."""
    if hold is None:
        return None
    try:
        hold.check(session, target, Operation.ADVANCE)
    except DomainError as refusal:
        return refusal.detail
    return None


def _claim_deadline(session: Session, row: RolloutRow, current: Rollout, *, now: datetime) -> bool:
    """Record that the stage run's deadline is told, only if the row is still that untold stage run."""
    # Compare-and-set, not read-then-write: an operator who moved the rollout meanwhile (or another tick) wins, and
    # this tick tells nothing about a stage that is no longer current.
    claim = (
        update(RolloutRow)
        .where(
            RolloutRow.id == row.id,
            RolloutRow.state == RolloutState.RUNNING.value,
            RolloutRow.stage_started_at == current.stage_started_at,
            or_(
                RolloutRow.deadline_notified_at.is_(None),
                RolloutRow.deadline_notified_at < current.stage_started_at,
            ),
        )
        .values(deadline_notified_at=now)
        .execution_options(synchronize_session=False)
    )
    claimed = cast(CursorResult[Any], session.execute(claim)).rowcount == 1
    session.expire(row, ["deadline_notified_at"])
    return claimed


def is_rollout_serving(session: Session, *, key: str, environment: str) -> bool:
    """True while a rollout of the flag (or of any segment of one run per segment) is running, paused or completed in
    the environment."""
    flag = flag_service.get_flag(session, key)
    return serving_state(session, flag.id, environment) is not None


@dataclass(frozen=True, slots=True)
class GuardedRollout:
    """A running or paused rollout and the guards of the stage it is at."""

    flag: str
    environment: str
    state: RolloutState
    guards: tuple[str, ...]
    auto_rollback: bool
    #: The segment of a plan run per segment; its guards are then the ones scoped to it.
    segment: SegmentRef | None = None

    @property
    def target(self) -> RolloutTarget:
        """What an operation on this rollout names."""
        return RolloutTarget(self.flag, self.environment, self.segment)


def guarded_rollouts(session: Session) -> list[GuardedRollout]:
    """Every current rollout that is running or paused, with its current stage's guards (a segment's scoped to it)."""
    newest = _newest_rollouts()
    rows = session.execute(
        select(Flag.key, RolloutRow, RolloutPlan)
        .join(Flag, Flag.id == RolloutRow.flag_id)
        .join(newest, newest.c.id == RolloutRow.id)
        .outerjoin(
            RolloutPlan,
            and_(RolloutPlan.flag_id == RolloutRow.flag_id, RolloutPlan.environment == RolloutRow.environment),
        )
        .where(RolloutRow.state.in_([RolloutState.RUNNING.value, RolloutState.PAUSED.value]))
        .order_by(RolloutRow.id)
    ).all()
    guarded = []
    for key, row, plan in rows:
        stages = stages_from_json(row.stages)
        segment = _segment_ref(plan, row.segment)
        guards = stages[row.stage_index].guards
        if segment is not None:
            guards = segment_rule_names(guards, segment.attribute, segment.value)
        guarded.append(
            GuardedRollout(
                flag=key,
                environment=row.environment,
                state=RolloutState(row.state),
                guards=guards,
                auto_rollback=row.auto_rollback,
                segment=segment,
            )
        )
    return guarded
