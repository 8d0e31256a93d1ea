"""Operators' rollout operations, decided without a database: what a request body must carry, and whether the
stage machine, the guards and the promotion order let the operation through, and what ``force`` overrode.

    check_operation(operation, body, target)                 raises InvalidInput / PreconditionRequired
    decide_operation(operation, body=, current=, enabled=,   -> Allowed(transition, what force overrode, audit reason)
                     now=, gates=, firing_guards=, promotion=)  | Refused(problem code, detail, extra fields)

Refusals are judged in this order: the stage machine (illegal transition, kill switch), then the guards (an
advance needs clear gates, a start no firing guard of its first stage), then the promotion order (a start needs the
previous environment completed). ``force`` with a reason overrides the last two, never the machine.
The caller (``rollouts.service.operate_rollout``) loads what is asked for here, persists the transition and audits.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controlplane.errors import Conflict, InvalidInput, PreconditionRequired
from controlplane.rollouts import stages as machine
from controlplane.rollouts.gates import GateVerdict
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.segments import SegmentRef
from controlplane.rollouts.stages import Rollout, RolloutState

__all__ = [
    "OVERRIDE_FIELD",
    "Allowed",
    "Operation",
    "PromotionOrder",
    "Refused",
    "RolloutTarget",
    "check_operation",
    "decide_operation",
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
#: The body field a refusal names in `overridable_with` when sending it (with a reason) would override it: each
#: client says so in its own words (the CLI as `--force`), so the detail names no field.
OVERRIDE_FIELD = "force"


@dataclass(frozen=True, slots=True)
class RolloutTarget:
    """A flag in an environment, and the segment of a plan run per segment (None: the plan as a whole)."""

    flag: str
    environment: str
    segment: SegmentRef | None = None

    def __str__(self) -> str:
        return f"{self.environment} ({self.segment})" if self.segment else self.environment


def check_operation(operation: Operation, body: RolloutOperation, target: RolloutTarget) -> None:
    """Refuse a body that cannot carry this operation: a missing reason or revision, a misplaced force or policy."""
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
    if body.purge_uploads_since is not None and operation is not Operation.ROLLBACK:
        raise InvalidInput(
            "invalid-field", "`purge_uploads_since` applies to rollback only", field="purge_uploads_since"
        )
    if body.purge_uploads_since is not None and target.segment is not None:
        # Uploads carry no segment: the purge would delete what every segment uploaded, the healthy ones' too.
        raise InvalidInput(
            "purge-not-per-segment",
            f"`purge_uploads_since` would delete what every segment of `{target.flag}` uploaded since then, not only "
            f"{target.segment}'s (uploads carry no segment): roll the segment back without it, and purge the window "
            "with `controlplane cleanup purge` if every segment's uploads must go",
            field="purge_uploads_since",
        )


@dataclass(frozen=True, slots=True)
class PromotionOrder:
    """Where an environment stands in its flag's promotion order: the environment before it (None when it is the
    first) and the state of that environment's current rollout."""

    environment: str
    previous_environment: str | None = None
    previous_state: RolloutState | None = None


@dataclass(frozen=True, slots=True)
class Allowed:
    """An operation let through: the transition, what ``force`` overrode, and the reason for the audit log."""

    transition: machine.Transition
    audit_reason: str
    forced_past_guards: str | None = None  # the guards' refusal force overrode
    forced_past_promotion: bool = False

    @property
    def forced(self) -> bool:
        """True when ``force`` overrode a refusal (the guards', the promotion order's or both)."""
        return self.forced_past_guards is not None or self.forced_past_promotion


@dataclass(frozen=True, slots=True)
class Refused:
    """An operation refused: the problem's code and sentence, and the extra fields the 409 carries."""

    code: str
    detail: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def error(self) -> Conflict:
        """The refusal as the 409 problem operators see."""
        return Conflict(self.code, self.detail, **self.extra)


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


def _refused(refusal: machine.Refusal, current: Rollout, operation: Operation, **extra: Any) -> Refused:
    return Refused(
        refusal.code.replace("_", "-"),
        refusal.reason,
        {"state": current.state.value, "operation": operation.value, **extra},
    )


def _guard_refusal(operation: Operation, gates: GateVerdict | None, firing_guards: Sequence[str]) -> str | None:
    """Why the guards refuse this operation, or None: advancing needs clear gates, starting no firing guard."""
    if operation is Operation.ADVANCE:
        if gates is None:
            raise ValueError("deciding an advance needs the stage's gate verdict")
        return None if gates.clear else gates.summary
    if operation is Operation.START and firing_guards:
        return f"guards {', '.join(f'`{name}`' for name in firing_guards)} of the first stage are firing"
    return None


def _audit_reason(
    body: RolloutOperation, transition: machine.Transition, *, overridden: str | None, out_of_order: bool
) -> str:
    said = body.reason.strip() if body.reason else ""
    note = ""
    if overridden is not None:
        note = f" (forced past: {overridden})"
    elif out_of_order:
        note = " (forced out of promotion order)"
    return f"{said}{note} [{transition.summary}]" if said else f"[{transition.summary}]"


def decide_operation(
    operation: Operation,
    *,
    body: RolloutOperation,
    current: Rollout,
    enabled: bool,
    now: datetime,
    gates: GateVerdict | None = None,
    firing_guards: Sequence[str] = (),
    promotion: PromotionOrder | None = None,
) -> Allowed | Refused:
    """Decide one operation on ``current`` (the rollout as stored, or a fresh one from the plan for a start).

    ``enabled`` is the environment's kill switch. An advance needs ``gates`` (its stage's verdict); a start needs
    ``firing_guards`` (its first stage's guards that are firing) and ``promotion``; other operations need neither.
    """
    outcome = _transition(operation, current, body, now, enabled)
    if isinstance(outcome, machine.Refusal):
        return _refused(outcome, current, operation)
    overridden = _guard_refusal(operation, gates, firing_guards)
    if overridden is not None and not body.force:
        return Refused(
            "guard-holding",
            f"cannot {operation.value}: {overridden}",
            {"state": current.state.value, "operation": operation.value, "overridable_with": OVERRIDE_FIELD},
        )
    out_of_order = False
    if operation is Operation.START:
        if promotion is None:
            raise ValueError("deciding a start needs the environment's promotion order")
        refusal = machine.promotion_refusal(
            promotion.environment, promotion.previous_environment, promotion.previous_state
        )
        if refusal is not None and not body.force:
            previous_state = promotion.previous_state or RolloutState.PENDING
            return _refused(
                refusal,
                current,
                operation,
                previous_environment=promotion.previous_environment,
                previous_state=previous_state.value,
                overridable_with=OVERRIDE_FIELD,
            )
        out_of_order = refusal is not None
    return Allowed(
        transition=outcome,
        audit_reason=_audit_reason(body, outcome, overridden=overridden, out_of_order=out_of_order),
        forced_past_guards=overridden,
        forced_past_promotion=out_of_order,
    )
