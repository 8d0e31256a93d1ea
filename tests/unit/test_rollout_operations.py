"""Unit tests of the pure operation decision (controlplane.rollouts.operations): no database, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.errors import Conflict, DomainError, InvalidInput, PreconditionRequired
from controlplane.rollouts.gates import GateVerdict
from controlplane.rollouts.operations import (
    Allowed,
    Operation,
    PromotionOrder,
    Refused,
    RolloutTarget,
    check_operation,
    decide_operation,
)
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.segments import SegmentRef
from controlplane.rollouts.stages import RollbackPolicy, Rollout, RolloutState, Stage, new_rollout

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STAGES = (
    Stage(10, bake=timedelta(hours=1), guards=("error-rate",)),
    Stage(50, bake=timedelta(hours=1), guards=("error-rate",)),
    Stage(100),
)
CLEAR = GateVerdict(clear=True, reasons=())
HOLDING = GateVerdict(clear=False, reasons=("guard `error-rate` is firing: value 0.1, 40 samples",))
FIRST = PromotionOrder("qa")
AFTER_QA_COMPLETED = PromotionOrder("staging", "qa", RolloutState.COMPLETED)
AFTER_QA_RUNNING = PromotionOrder("staging", "qa", RolloutState.RUNNING)


def pending() -> Rollout:
    return new_rollout(STAGES)


def running(stage_index: int = 0) -> Rollout:
    return replace(pending(), state=RolloutState.RUNNING, stage_index=stage_index, stage_started_at=NOW)


def body(reason: str | None = None, *, force: bool = False, policy: RollbackPolicy | None = None) -> RolloutOperation:
    return RolloutOperation(reason=reason, expected_revision=3, force=force, policy=policy)


def allowed(decision: Allowed | Refused) -> Allowed:
    assert isinstance(decision, Allowed), decision
    return decision


def refused(decision: Allowed | Refused) -> Refused:
    assert isinstance(decision, Refused), decision
    return decision


# --- allowed ----------------------------------------------------------------------------------------------------


def test_a_start_with_nothing_in_the_way_is_allowed_unforced() -> None:
    decision = allowed(
        decide_operation(Operation.START, body=body(), current=pending(), enabled=False, now=NOW, promotion=FIRST)
    )
    assert decision.transition.rollout.state is RolloutState.RUNNING
    assert decision.transition.rollout.stage_started_at == NOW
    assert not decision.forced
    assert decision.forced_past_guards is None and not decision.forced_past_promotion
    assert decision.audit_reason == "[started at stage 1/3 (10%)]"


def test_an_advance_with_clear_gates_moves_one_stage_and_keeps_the_operators_words() -> None:
    decision = allowed(
        decide_operation(
            Operation.ADVANCE, body=body("  looks healthy "), current=running(), enabled=True, now=NOW, gates=CLEAR
        )
    )
    assert decision.transition.rollout.stage_index == 1
    assert not decision.forced
    assert decision.audit_reason == "looks healthy [advanced to stage 2/3 (50%)]"


def test_pause_resume_and_rollback_need_no_gates() -> None:
    paused = allowed(decide_operation(Operation.PAUSE, body=body("hold"), current=running(), enabled=True, now=NOW))
    assert paused.transition.rollout.state is RolloutState.PAUSED
    resumed = allowed(
        decide_operation(Operation.RESUME, body=body(), current=paused.transition.rollout, enabled=True, now=NOW)
    )
    assert resumed.transition.rollout.state is RolloutState.RUNNING
    back = allowed(
        decide_operation(
            Operation.ROLLBACK,
            body=body("bad", policy=RollbackPolicy.PREVIOUS_STAGE),
            current=running(1),
            enabled=True,
            now=NOW,
        )
    )
    assert (back.transition.rollout.state, back.transition.rollout.stage_index) == (RolloutState.PAUSED, 0)


# --- force --------------------------------------------------------------------------------------------------------


def test_force_carries_an_advance_past_holding_guards_and_says_so() -> None:
    decision = allowed(
        decide_operation(
            Operation.ADVANCE,
            body=body("known flake", force=True),
            current=running(),
            enabled=True,
            now=NOW,
            gates=HOLDING,
        )
    )
    assert decision.forced and decision.forced_past_guards == HOLDING.summary
    assert not decision.forced_past_promotion
    assert decision.audit_reason == (f"known flake (forced past: {HOLDING.summary}) [advanced to stage 2/3 (50%)]")


def test_force_carries_a_start_past_firing_guards() -> None:
    decision = allowed(
        decide_operation(
            Operation.START,
            body=body("the alert is the old build", force=True),
            current=pending(),
            enabled=True,
            now=NOW,
            firing_guards=["error-rate"],
            promotion=FIRST,
        )
    )
    assert decision.forced_past_guards == "guards `error-rate` of the first stage are firing"
    assert "(forced past: guards `error-rate` of the first stage are firing)" in decision.audit_reason


def test_force_carries_a_start_out_of_promotion_order() -> None:
    decision = allowed(
        decide_operation(
            Operation.START,
            body=body("hotfix", force=True),
            current=pending(),
            enabled=True,
            now=NOW,
            promotion=AFTER_QA_RUNNING,
        )
    )
    assert decision.forced and decision.forced_past_promotion and decision.forced_past_guards is None
    assert decision.audit_reason == "hotfix (forced out of promotion order) [started at stage 1/3 (10%)]"


def test_force_past_guards_and_promotion_at_once_names_the_guards() -> None:
    decision = allowed(
        decide_operation(
            Operation.START,
            body=body("hotfix", force=True),
            current=pending(),
            enabled=True,
            now=NOW,
            firing_guards=["error-rate", "latency"],
            promotion=AFTER_QA_RUNNING,
        )
    )
    assert decision.forced_past_guards is not None and decision.forced_past_promotion
    assert "forced past: guards `error-rate`, `latency` of the first stage are firing" in decision.audit_reason
    assert "promotion order" not in decision.audit_reason


def test_force_without_a_refusal_overrides_nothing() -> None:
    decision = allowed(
        decide_operation(
            Operation.START,
            body=body("just in case", force=True),
            current=pending(),
            enabled=True,
            now=NOW,
            promotion=AFTER_QA_COMPLETED,
        )
    )
    assert not decision.forced
    assert decision.audit_reason == "just in case [started at stage 1/3 (10%)]"


# --- refusals -----------------------------------------------------------------------------------------------------


def test_an_advance_held_by_guards_is_refused_with_the_guards_reasons() -> None:
    decision = refused(
        decide_operation(Operation.ADVANCE, body=body("go"), current=running(), enabled=True, now=NOW, gates=HOLDING)
    )
    assert decision.code == "guard-holding"
    assert decision.detail == f"cannot advance: {HOLDING.summary}"
    assert dict(decision.extra) == {"state": "running", "operation": "advance", "overridable_with": "force"}


def test_a_start_with_firing_guards_is_refused() -> None:
    decision = refused(
        decide_operation(
            Operation.START,
            body=body(),
            current=pending(),
            enabled=True,
            now=NOW,
            firing_guards=["error-rate"],
            promotion=FIRST,
        )
    )
    assert decision.code == "guard-holding"
    assert "guards `error-rate` of the first stage are firing" in decision.detail
    assert dict(decision.extra) == {"state": "pending", "operation": "start", "overridable_with": "force"}


def test_a_start_before_the_previous_environment_completed_is_refused_with_where_it_stands() -> None:
    decision = refused(
        decide_operation(
            Operation.START, body=body(), current=pending(), enabled=True, now=NOW, promotion=AFTER_QA_RUNNING
        )
    )
    assert decision.code == "promotion-order"
    assert "before the rollout has completed in qa (there it is running)" in decision.detail
    assert list(decision.extra.items()) == [
        ("state", "pending"),
        ("operation", "start"),
        ("previous_environment", "qa"),
        ("previous_state", "running"),
        ("overridable_with", "force"),
    ]


def test_the_guards_are_judged_before_the_promotion_order() -> None:
    decision = refused(
        decide_operation(
            Operation.START,
            body=body(),
            current=pending(),
            enabled=True,
            now=NOW,
            firing_guards=["error-rate"],
            promotion=AFTER_QA_RUNNING,
        )
    )
    assert decision.code == "guard-holding"


def test_an_illegal_transition_is_refused_even_when_forced() -> None:
    decision = refused(
        decide_operation(
            Operation.START,
            body=body("again", force=True),
            current=running(),
            enabled=True,
            now=NOW,
            promotion=FIRST,
        )
    )
    assert decision.code == "illegal-transition"
    assert dict(decision.extra) == {"state": "running", "operation": "start"}


def test_the_stage_machine_is_asked_before_the_guards() -> None:
    paused = replace(running(), state=RolloutState.PAUSED)
    decision = refused(
        decide_operation(Operation.ADVANCE, body=body("go"), current=paused, enabled=True, now=NOW, gates=HOLDING)
    )
    assert decision.code == "illegal-transition"
    assert "resume it first" in decision.detail


@pytest.mark.parametrize("operation", [Operation.ADVANCE, Operation.RESUME])
def test_the_kill_switch_refuses_advance_and_resume_even_when_forced(operation: Operation) -> None:
    current = running() if operation is Operation.ADVANCE else replace(running(), state=RolloutState.PAUSED)
    decision = refused(
        decide_operation(operation, body=body("go", force=True), current=current, enabled=False, now=NOW, gates=CLEAR)
    )
    assert decision.code == "kill-switch-off"
    assert "switched off (enabled: false)" in decision.detail
    assert dict(decision.extra)["operation"] == operation.value


def test_a_refusal_is_a_409_with_its_extra_fields() -> None:
    error = refused(
        decide_operation(
            Operation.START, body=body(), current=pending(), enabled=True, now=NOW, promotion=AFTER_QA_RUNNING
        )
    ).error()
    assert isinstance(error, Conflict)
    problem = error.to_problem()
    assert problem["status"] == 409 and problem["type"].endswith("/promotion-order")
    assert problem["previous_environment"] == "qa" and problem["previous_state"] == "running"


def test_an_advance_without_its_gate_verdict_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="gate verdict"):
        decide_operation(Operation.ADVANCE, body=body("go"), current=running(), enabled=True, now=NOW)


# --- the body -----------------------------------------------------------------------------------------------------


TARGET = RolloutTarget("enable-reference-images", "qa")


@pytest.mark.parametrize(
    ("operation", "operation_body", "error", "slug"),
    [
        (Operation.ADVANCE, RolloutOperation(expected_revision=1), InvalidInput, "reason-required"),
        (Operation.PAUSE, RolloutOperation(reason="hold", force=True), InvalidInput, "invalid-field"),
        (Operation.START, RolloutOperation(expected_revision=1, force=True), InvalidInput, "reason-required"),
        (Operation.RESUME, RolloutOperation(), PreconditionRequired, "revision-required"),
        (
            Operation.PAUSE,
            RolloutOperation(reason="hold", policy=RollbackPolicy.OFF),
            InvalidInput,
            "invalid-field",
        ),
    ],
)
def test_a_body_that_cannot_carry_the_operation_is_refused(
    operation: Operation, operation_body: RolloutOperation, error: type[DomainError], slug: str
) -> None:
    with pytest.raises(error) as raised:
        check_operation(operation, operation_body, TARGET)
    assert raised.value.slug == slug


def test_a_rollback_needs_no_revision() -> None:
    check_operation(Operation.ROLLBACK, RolloutOperation(reason="bad"), TARGET)


def test_a_rollback_of_one_segment_refuses_a_purge_of_every_segments_uploads() -> None:
    since = datetime(2026, 11, 1, 12, tzinfo=UTC)
    body = RolloutOperation(reason="sales broken", purge_uploads_since=since)
    segment = RolloutTarget("ai.reply.streaming.enabled", "production", SegmentRef("queue", "sales"))

    with pytest.raises(InvalidInput) as raised:
        check_operation(Operation.ROLLBACK, body, segment)

    assert raised.value.slug == "purge-not-per-segment"
    assert "queue=sales" in raised.value.detail and "controlplane cleanup purge" in raised.value.detail
    check_operation(Operation.ROLLBACK, body, TARGET)  # a plan run once purges its pipeline's window
    check_operation(Operation.ROLLBACK, RolloutOperation(reason="sales broken"), segment)
