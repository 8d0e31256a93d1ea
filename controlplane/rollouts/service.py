"""Use cases of rollouts: load state, ask the stage machine, persist, audit. Takes a session, never commits."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.alerting.guards import GateVerdict
from controlplane.alerting.readings import gate_verdict, guard_readings
from controlplane.alerting.rules import AlertState
from controlplane.audit.service import append_audit_record
from controlplane.errors import Conflict, InvalidInput, NotFound, PreconditionRequired
from controlplane.flags import service as flag_service
from controlplane.flags.models import Flag, FlagEnvironment
from controlplane.rollouts import stages as machine
from controlplane.rollouts.models import Rollout as RolloutRow
from controlplane.rollouts.models import RolloutPlan
from controlplane.rollouts.schemas import GuardRead, RolloutOperation, RolloutRead, RolloutStatus, StageRead
from controlplane.rollouts.stages import RollbackPolicy, Rollout, RolloutState, Stage

__all__ = [
    "SERVING_STATES",
    "GuardedRollout",
    "Operation",
    "RolloutTarget",
    "current_rollout_state",
    "guarded_rollouts",
    "is_rollout_serving",
    "list_rollout_history",
    "operate_rollout",
    "rollout_status",
    "running_rollout_targets",
    "serving_environments",
    "stages_from_json",
    "stages_to_json",
    "tick_rollout",
]


class Operation(enum.StrEnum):
    """An operator's rollout operation."""

    START = "start"
    ADVANCE = "advance"
    PAUSE = "pause"
    RESUME = "resume"
    ROLLBACK = "rollback"


_NEEDS_REASON = {Operation.ADVANCE, Operation.PAUSE, Operation.ROLLBACK}
_NEEDS_REVISION = {Operation.START, Operation.ADVANCE, Operation.RESUME}
_FORCIBLE = {Operation.START, Operation.ADVANCE}
#: States in which a rollout decides what its environment serves.
SERVING_STATES = frozenset({RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED})


@dataclass(frozen=True, slots=True)
class RolloutTarget:
    """A flag in an environment."""

    flag: str
    environment: str


def stages_to_json(stages: Sequence[Stage]) -> list[dict[str, Any]]:
    """The stored form of a plan's stages."""
    return [
        {
            "percentage": stage.percentage,
            "bake_seconds": stage.bake.total_seconds(),
            "min_samples": stage.min_samples,
            "guards": list(stage.guards),
            "auto_advance": stage.auto_advance,
        }
        for stage in stages
    ]


def stages_from_json(items: Sequence[dict[str, Any]]) -> tuple[Stage, ...]:
    """Stages read back from storage."""
    return tuple(
        Stage(
            percentage=float(item["percentage"]),
            bake=timedelta(seconds=float(item["bake_seconds"])),
            min_samples=int(item["min_samples"]),
            guards=tuple(item["guards"]),
            auto_advance=bool(item["auto_advance"]),
        )
        for item in items
    )


def _to_machine(row: RolloutRow) -> Rollout:
    return Rollout(
        stages=stages_from_json(row.stages),
        state=RolloutState(row.state),
        stage_index=row.stage_index,
        stage_started_at=row.stage_started_at,
        rollback_policy=RollbackPolicy(row.rollback_policy),
    )


def _snapshot(rollout: Rollout, state: FlagEnvironment) -> dict[str, Any]:
    return {
        "state": rollout.state.value,
        "stage_index": rollout.stage_index,
        "percentage": rollout.percentage,
        "enabled": state.enabled,
    }


@dataclass(slots=True)
class _Loaded:
    flag: Flag
    state: FlagEnvironment
    plans: list[RolloutPlan]
    plan: RolloutPlan
    row: RolloutRow | None


def _load(session: Session, target: RolloutTarget, environments: Sequence[str]) -> _Loaded:
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
            f"it has plans for {[p.environment for p in plans]}",
            flag=target.flag,
            environment=target.environment,
        )
    return _Loaded(state.flag, state, plans, plan, _current_row(session, state.flag_id, target.environment))


def _current_row(session: Session, flag_id: int, environment: str) -> RolloutRow | None:
    query = (
        select(RolloutRow)
        .where(RolloutRow.flag_id == flag_id, RolloutRow.environment == environment)
        .order_by(RolloutRow.id.desc())
        .limit(1)
    )
    return session.scalar(query)


def _pending_from_plan(plan: RolloutPlan) -> Rollout:
    return machine.new_rollout(stages_from_json(plan.stages), RollbackPolicy(plan.rollback_policy))


def _previous_environment(loaded: _Loaded) -> RolloutPlan | None:
    earlier = [p for p in loaded.plans if p.position < loaded.plan.position]
    return earlier[-1] if earlier else None


def current_rollout_state(session: Session, flag_id: int, environment: str) -> RolloutState:
    """The state of the newest rollout of a flag in an environment; pending when there has been none."""
    row = _current_row(session, flag_id, environment)
    return RolloutState(row.state) if row else RolloutState.PENDING


def serving_environments(session: Session, flag_id: int, environments: Sequence[str]) -> list[str]:
    """The environments where a rollout of the flag is running, paused or completed (serving its variant)."""
    return [env for env in environments if current_rollout_state(session, flag_id, env) in SERVING_STATES]


def _promotion(session: Session, loaded: _Loaded) -> machine.Refusal | None:
    previous = _previous_environment(loaded)
    previous_state = current_rollout_state(session, loaded.flag.id, previous.environment) if previous else None
    return machine.promotion_refusal(
        loaded.plan.environment, previous.environment if previous else None, previous_state
    )


def _serve(loaded: _Loaded, rollout: Rollout, *, switch_on: bool) -> None:
    """Make the environment serve what the rollout says; only a start turns the kill switch on."""
    state = loaded.state
    base = state.rollout or {"bucket_by": "targetingKey", "when": []}
    variant = loaded.flag.rollout_variant or base.get("variant")
    state.rollout = {**base, "variant": variant, "percentage": rollout.percentage}
    if rollout.state is RolloutState.ROLLED_BACK:
        # The kill switch as well as 0%: rules that served the new variant to some tenants stop too.
        state.enabled = False
    elif switch_on:
        state.enabled = True


def _check_operation(operation: Operation, body: RolloutOperation, target: RolloutTarget) -> None:
    if operation in _NEEDS_REASON and not (body.reason and body.reason.strip()):
        raise InvalidInput(
            "reason-required", f"{operation.value} needs a reason: say why, for the audit log", field="reason"
        )
    if body.force and operation not in _FORCIBLE:
        raise InvalidInput("invalid-field", "`force` applies to start and advance only", field="force")
    if body.force and not (body.reason and body.reason.strip()):
        raise InvalidInput(
            "reason-required", f"forcing a {operation.value} past its refusals needs a reason", field="reason"
        )
    if operation in _NEEDS_REVISION and body.expected_revision is None:
        raise PreconditionRequired(
            "revision-required",
            f"{operation.value} needs `expected_revision`: the revision of `{target.flag}` in "
            f"{target.environment} you last saw (see rollout status), so two operators cannot skip a stage",
            field="expected_revision",
        )
    if body.policy is not None and operation is not Operation.ROLLBACK:
        raise InvalidInput("invalid-field", "`policy` applies to rollback only", field="policy")


def _transition(
    operation: Operation, rollout: Rollout, body: RolloutOperation, now: datetime, enabled: bool
) -> machine.Transition | machine.Refusal:
    steps: dict[Operation, Callable[[], machine.Transition | machine.Refusal]] = {
        Operation.START: lambda: machine.start(rollout, now=now),
        Operation.ADVANCE: lambda: machine.advance(rollout, now=now, enabled=enabled),
        Operation.PAUSE: lambda: machine.pause(rollout, now=now),
        Operation.RESUME: lambda: machine.resume(rollout, now=now, enabled=enabled),
        Operation.ROLLBACK: lambda: machine.rollback(rollout, now=now, policy=body.policy),
    }
    return steps[operation]()


def operate_rollout(
    session: Session,
    *,
    target: RolloutTarget,
    operation: Operation,
    body: RolloutOperation,
    actor: str,
    environments: Sequence[str],
    now: datetime,
) -> RolloutStatus:
    """Apply one operator operation to the rollout of a flag in an environment."""
    _check_operation(operation, body, target)
    loaded = _load(session, target, environments)
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
    current = _pending_from_plan(loaded.plan) if fresh or row is None else _to_machine(row)
    outcome = _transition(operation, current, body, now, loaded.state.enabled)
    if isinstance(outcome, machine.Refusal):
        raise _conflict(outcome, current, operation)
    forced = False
    overridden = _gate_refusal(session, loaded, current, operation)
    if overridden is not None:
        if not body.force:
            raise Conflict(
                "guard-holding",
                f"cannot {operation.value}: {overridden}; pass force with a reason to override (audited)",
                state=current.state.value,
                operation=operation.value,
            )
        forced = True
    if operation is Operation.START:
        promotion = _promotion(session, loaded)
        if promotion is not None and not body.force:
            previous = _previous_environment(loaded)
            assert previous is not None
            raise _conflict(
                promotion,
                current,
                operation,
                previous_environment=previous.environment,
                previous_state=current_rollout_state(session, loaded.flag.id, previous.environment).value,
            )
        forced = forced or promotion is not None
        if fresh or row is None:
            row = RolloutRow(flag_id=loaded.flag.id, environment=target.environment, created_at=now)
            session.add(row)
        row.started_by = actor
        row.auto_rollback = loaded.plan.auto_rollback
        row.forced_reason = body.reason if forced else None
    assert row is not None
    _persist_and_audit(
        session,
        loaded,
        row,
        current,
        outcome,
        now=now,
        actor=actor,
        action=f"rollout.{operation.value}",
        reason=_audit_reason(body, outcome, forced=forced, overridden=overridden),
        switch_on=operation is Operation.START,
    )
    return _status(session, loaded, row, now)


def _conflict(refusal: machine.Refusal, current: Rollout, operation: Operation, **extra: Any) -> Conflict:
    return Conflict(
        refusal.code.replace("_", "-"), refusal.reason, state=current.state.value, operation=operation.value, **extra
    )


def _audit_reason(
    body: RolloutOperation, outcome: machine.Transition, *, forced: bool, overridden: str | None = None
) -> str:
    said = body.reason.strip() if body.reason else ""
    note = ""
    if overridden is not None:
        note = f" (forced past: {overridden})"
    elif forced:
        note = " (forced out of promotion order)"
    return f"{said}{note} [{outcome.summary}]" if said else f"[{outcome.summary}]"


def _gates(session: Session, loaded: _Loaded, rollout: Rollout) -> GateVerdict:
    return gate_verdict(
        session,
        flag=loaded.flag.key,
        environment=loaded.plan.environment,
        stage=rollout.stage,
        stage_started_at=rollout.stage_started_at,
        variant=loaded.flag.rollout_variant,
    )


def _gate_refusal(session: Session, loaded: _Loaded, current: Rollout, operation: Operation) -> str | None:
    """Why the guards refuse this operation, or None: advancing needs clear gates, starting no firing guard."""
    if operation is Operation.ADVANCE:
        verdict = _gates(session, loaded, current)
        return None if verdict.clear else verdict.summary
    if operation is Operation.START:
        firing = [
            reading.rule
            for reading in guard_readings(session, current.stages[0].guards, loaded.plan.environment)
            if reading.state is AlertState.FIRING
        ]
        if firing:
            return f"guards {', '.join(f'`{name}`' for name in firing)} of the first stage are firing"
    return None


def _persist_and_audit(
    session: Session,
    loaded: _Loaded,
    row: RolloutRow,
    current: Rollout,
    outcome: machine.Transition,
    *,
    now: datetime,
    actor: str,
    action: str,
    reason: str,
    switch_on: bool = False,
) -> None:
    """Store the rollout after a transition, make the environment serve it, and audit the change."""
    after = outcome.rollout
    before = _snapshot(current, loaded.state) | {"revision": loaded.state.revision}
    row.state = after.state.value
    row.stage_index = after.stage_index
    row.stages = stages_to_json(after.stages)
    row.rollback_policy = after.rollback_policy.value
    row.stage_started_at = after.stage_started_at
    row.updated_at = now
    if after.state in (RolloutState.COMPLETED, RolloutState.ROLLED_BACK):
        row.ended_at = now
    _serve(loaded, after, switch_on=switch_on)
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
        after=_snapshot(after, loaded.state) | {"revision": loaded.state.revision},
    )


def rollout_status(
    session: Session, *, target: RolloutTarget, environments: Sequence[str], now: datetime
) -> RolloutStatus:
    """The rollout of a flag in an environment, as an operator needs to see it."""
    loaded = _load(session, target, environments)
    return _status(session, loaded, loaded.row, now)


def _status(session: Session, loaded: _Loaded, row: RolloutRow | None, now: datetime) -> RolloutStatus:
    rollout = _to_machine(row) if row else _pending_from_plan(loaded.plan)
    readings = guard_readings(session, rollout.stage.guards, loaded.plan.environment)
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
    if rollout.state is RolloutState.RUNNING:
        verdict = _gates(session, loaded, rollout)
        gates, gates_detail = ("clear" if verdict.clear else "holding"), verdict.summary
    else:
        gates, gates_detail = "not_running", f"gates are judged while the rollout runs; it is {rollout.state.value}"
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
        percentage=rollout.percentage,
        serving_percentage=_serving_percentage(loaded.state),
        revision=loaded.state.revision,
        enabled=loaded.state.enabled,
        stages=[StageRead(**item) for item in stages_to_json(rollout.stages)],
        rollback_policy=rollout.rollback_policy,
        gates=gates,
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
    )


def _serving_percentage(state: FlagEnvironment) -> float:
    if not state.enabled or not state.rollout:
        return 0.0
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
        rollout = _to_machine(row)
        reads.append(
            RolloutRead(
                id=row.id,
                environment=row.environment,
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


def running_rollout_targets(session: Session) -> list[RolloutTarget]:
    """Every flag and environment whose current (newest) rollout is running."""
    newest = select(func.max(RolloutRow.id).label("id")).group_by(RolloutRow.flag_id, RolloutRow.environment).subquery()
    rows = session.execute(
        select(Flag.key, RolloutRow.environment)
        .join(Flag, Flag.id == RolloutRow.flag_id)
        .join(newest, newest.c.id == RolloutRow.id)
        .where(RolloutRow.state == RolloutState.RUNNING.value)
        .order_by(RolloutRow.id)
    ).all()
    return [RolloutTarget(key, environment) for key, environment in rows]


def tick_rollout(
    session: Session, *, target: RolloutTarget, environments: Sequence[str], now: datetime
) -> RolloutStatus | None:
    """Advance one running rollout whose auto-advance stage has baked; None when there was nothing to do."""
    loaded = _load(session, target, environments)
    if loaded.row is None:
        return None
    current = _to_machine(loaded.row)
    outcome = machine.tick(current, now=now, enabled=loaded.state.enabled)
    if not isinstance(outcome, machine.Transition):
        return None
    verdict = _gates(session, loaded, current)
    if not verdict.clear:
        # The bake time is over but the guards hold the stage: it stays, and status says why.
        return None
    outcome = machine.Transition(outcome.rollout, f"{outcome.summary}; {verdict.summary}")
    _persist_and_audit(
        session,
        loaded,
        loaded.row,
        current,
        outcome,
        now=now,
        actor="scheduler",
        action="rollout.auto_advance",
        reason=outcome.summary,
    )
    return _status(session, loaded, loaded.row, now)


def is_rollout_serving(session: Session, *, key: str, environment: str) -> bool:
    """True while a rollout of the flag is running, paused or completed in the environment."""
    flag = flag_service.get_flag(session, key)
    return current_rollout_state(session, flag.id, environment) in SERVING_STATES


@dataclass(frozen=True, slots=True)
class GuardedRollout:
    """A running or paused rollout and the guards of the stage it is at."""

    flag: str
    environment: str
    state: RolloutState
    guards: tuple[str, ...]
    auto_rollback: bool


def guarded_rollouts(session: Session) -> list[GuardedRollout]:
    """Every current rollout that is running or paused, with its current stage's guards."""
    newest = select(func.max(RolloutRow.id).label("id")).group_by(RolloutRow.flag_id, RolloutRow.environment).subquery()
    rows = session.execute(
        select(Flag.key, RolloutRow)
        .join(Flag, Flag.id == RolloutRow.flag_id)
        .join(newest, newest.c.id == RolloutRow.id)
        .where(RolloutRow.state.in_([RolloutState.RUNNING.value, RolloutState.PAUSED.value]))
        .order_by(RolloutRow.id)
    ).all()
    guarded = []
    for key, row in rows:
        stages = stages_from_json(row.stages)
        guarded.append(
            GuardedRollout(
                flag=key,
                environment=row.environment,
                state=RolloutState(row.state),
                guards=stages[row.stage_index].guards,
                auto_rollback=row.auto_rollback,
            )
        )
    return guarded
