"""Unit tests for the pure rollout stage machine: every state against every operation, and the edges."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.rollouts.stages import (
    Refusal,
    RollbackPolicy,
    Rollout,
    RolloutState,
    Stage,
    Transition,
    advance,
    bake_remaining,
    new_rollout,
    pause,
    resume,
    rollback,
    start,
    tick,
    validate_stages,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)
MICROSECOND = timedelta(microseconds=1)

PLAN = (
    Stage(10, bake=timedelta(hours=1), auto_advance=True),
    Stage(50, bake=timedelta(hours=2), auto_advance=True),
    Stage(100),
)

Operation = Callable[[Rollout, datetime], Transition | Refusal | None]

OPERATIONS: dict[str, Operation] = {
    "start": lambda r, now: start(r, now=now),
    "advance": lambda r, now: advance(r, now=now),
    "pause": lambda r, now: pause(r, now=now),
    "resume": lambda r, now: resume(r, now=now),
    "rollback_off": lambda r, now: rollback(r, now=now, policy=RollbackPolicy.OFF),
    "rollback_previous_stage": lambda r, now: rollback(r, now=now, policy=RollbackPolicy.PREVIOUS_STAGE),
    "tick": lambda r, now: tick(r, now=now),
}

# The rollout each state is tested from: mid-plan where the state allows it, so a step back is possible.
BEFORE: dict[RolloutState, Rollout] = {
    RolloutState.PENDING: new_rollout(PLAN),
    RolloutState.RUNNING: Rollout(PLAN, RolloutState.RUNNING, stage_index=1, stage_started_at=T0),
    RolloutState.PAUSED: Rollout(PLAN, RolloutState.PAUSED, stage_index=1, stage_started_at=T0),
    RolloutState.COMPLETED: Rollout(PLAN, RolloutState.COMPLETED, stage_index=2, stage_started_at=T0),
    RolloutState.ROLLED_BACK: Rollout(PLAN, RolloutState.ROLLED_BACK, stage_index=1, stage_started_at=T0),
}

REFUSED = "refused"
NOTHING = "nothing"
Expected = tuple[RolloutState, int, float, datetime | None] | str

S = RolloutState
# (state, operation) -> (state, stage_index, percentage, stage_started_at) after, REFUSED, or NOTHING (tick: None).
MATRIX: dict[tuple[RolloutState, str], Expected] = {
    (S.PENDING, "start"): (S.RUNNING, 0, 10, NOW),
    (S.PENDING, "advance"): REFUSED,
    (S.PENDING, "pause"): REFUSED,
    (S.PENDING, "resume"): REFUSED,
    (S.PENDING, "rollback_off"): REFUSED,
    (S.PENDING, "rollback_previous_stage"): REFUSED,
    (S.PENDING, "tick"): NOTHING,
    (S.RUNNING, "start"): REFUSED,
    (S.RUNNING, "advance"): (S.RUNNING, 2, 100, NOW),
    (S.RUNNING, "pause"): (S.PAUSED, 1, 50, T0),
    (S.RUNNING, "resume"): REFUSED,
    (S.RUNNING, "rollback_off"): (S.ROLLED_BACK, 1, 0, NOW),
    (S.RUNNING, "rollback_previous_stage"): (S.PAUSED, 0, 10, NOW),
    (S.RUNNING, "tick"): (S.RUNNING, 2, 100, NOW),
    (S.PAUSED, "start"): REFUSED,
    (S.PAUSED, "advance"): REFUSED,
    (S.PAUSED, "pause"): REFUSED,
    (S.PAUSED, "resume"): (S.RUNNING, 1, 50, NOW),
    (S.PAUSED, "rollback_off"): (S.ROLLED_BACK, 1, 0, NOW),
    (S.PAUSED, "rollback_previous_stage"): (S.PAUSED, 0, 10, NOW),
    (S.PAUSED, "tick"): NOTHING,
    (S.COMPLETED, "start"): REFUSED,
    (S.COMPLETED, "advance"): REFUSED,
    (S.COMPLETED, "pause"): REFUSED,
    (S.COMPLETED, "resume"): REFUSED,
    (S.COMPLETED, "rollback_off"): (S.ROLLED_BACK, 2, 0, NOW),
    (S.COMPLETED, "rollback_previous_stage"): (S.ROLLED_BACK, 2, 0, NOW),
    (S.COMPLETED, "tick"): NOTHING,
    (S.ROLLED_BACK, "start"): REFUSED,
    (S.ROLLED_BACK, "advance"): REFUSED,
    (S.ROLLED_BACK, "pause"): REFUSED,
    (S.ROLLED_BACK, "resume"): REFUSED,
    (S.ROLLED_BACK, "rollback_off"): REFUSED,
    (S.ROLLED_BACK, "rollback_previous_stage"): REFUSED,
    (S.ROLLED_BACK, "tick"): NOTHING,
}


def test_matrix_covers_every_state_and_every_operation() -> None:
    assert set(MATRIX) == {(state, op) for state in RolloutState for op in OPERATIONS}
    assert set(BEFORE) == set(RolloutState)
    assert all(rollout.state is state for state, rollout in BEFORE.items())


@pytest.mark.parametrize(
    ("state", "op", "expected"),
    [(state, op, expected) for (state, op), expected in MATRIX.items()],
    ids=[f"{state.value}-{op}" for state, op in MATRIX],
)
def test_every_state_and_operation_gives_the_exact_rollout_or_refuses_naming_the_state(
    state: RolloutState, op: str, expected: Expected
) -> None:
    before = BEFORE[state]
    outcome = OPERATIONS[op](before, NOW)

    if expected == NOTHING:
        assert outcome is None
    elif expected == REFUSED:
        assert isinstance(outcome, Refusal)
        assert outcome.code == "illegal_transition"
        assert f"that is {state.value};" in outcome.reason
    else:
        assert isinstance(expected, tuple)
        new_state, stage_index, percentage, stage_started_at = expected
        assert isinstance(outcome, Transition)
        assert outcome.summary
        after = outcome.rollout
        assert after == replace(before, state=new_state, stage_index=stage_index, stage_started_at=stage_started_at)
        assert after.state is new_state
        assert after.stage_index == stage_index
        assert after.percentage == percentage
        assert after.stage_started_at == stage_started_at
        assert after.stages == before.stages
        assert after.rollback_policy is before.rollback_policy
    assert BEFORE[state] == before  # the input is never altered


@pytest.mark.parametrize(
    ("state", "serving", "percentage"),
    [
        (S.PENDING, False, 0),
        (S.RUNNING, True, 50),
        (S.PAUSED, True, 50),
        (S.COMPLETED, True, 100),
        (S.ROLLED_BACK, False, 0),
    ],
)
def test_percentage_is_the_stage_percentage_only_while_serving(
    state: RolloutState, serving: bool, percentage: float
) -> None:
    assert BEFORE[state].is_serving is serving
    assert BEFORE[state].percentage == percentage


def test_refusing_to_advance_a_paused_rollout_says_to_resume_it_first() -> None:
    outcome = advance(BEFORE[S.PAUSED], now=NOW)
    assert isinstance(outcome, Refusal)
    assert "resume it first" in outcome.reason


# start / advance


def test_start_runs_the_first_stage_and_starts_its_bake_clock() -> None:
    outcome = start(new_rollout(PLAN), now=T0)
    assert isinstance(outcome, Transition)
    assert outcome.rollout.state is S.RUNNING
    assert outcome.rollout.stage_index == 0
    assert outcome.rollout.stage_started_at == T0
    assert outcome.rollout.percentage == 10
    assert outcome.summary == "started at stage 1/3 (10%)"


def test_advance_moves_exactly_one_stage_and_restarts_the_bake_clock() -> None:
    running = Rollout(PLAN, S.RUNNING, stage_index=0, stage_started_at=T0)
    outcome = advance(running, now=NOW)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(running, stage_index=1, stage_started_at=NOW)
    assert outcome.rollout.percentage == 50
    assert outcome.summary == "advanced to stage 2/3 (50%)"


def test_advance_from_last_stage_completes_at_100_percent() -> None:
    at_last = Rollout(PLAN, S.RUNNING, stage_index=2, stage_started_at=T0)
    outcome = advance(at_last, now=NOW)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(at_last, state=S.COMPLETED, stage_started_at=NOW)
    assert outcome.rollout.stage_index == len(PLAN) - 1
    assert outcome.rollout.percentage == 100
    assert outcome.summary == "completed at 100%"


def test_advancing_through_a_whole_plan_visits_every_stage_in_order_then_completes() -> None:
    outcome = start(new_rollout(PLAN), now=T0)
    assert isinstance(outcome, Transition)
    seen = [(outcome.rollout.state, outcome.rollout.percentage)]
    for _ in PLAN:
        outcome = advance(outcome.rollout, now=T0)
        assert isinstance(outcome, Transition)
        seen.append((outcome.rollout.state, outcome.rollout.percentage))
    assert seen == [(S.RUNNING, 10), (S.RUNNING, 50), (S.RUNNING, 100), (S.COMPLETED, 100)]
    assert isinstance(advance(outcome.rollout, now=T0), Refusal)


def test_a_single_stage_plan_starts_at_100_percent_and_completes_on_advance() -> None:
    started = start(new_rollout([Stage(100)]), now=T0)
    assert isinstance(started, Transition)
    assert started.rollout.percentage == 100
    completed = advance(started.rollout, now=NOW)
    assert isinstance(completed, Transition)
    assert completed.rollout.state is S.COMPLETED
    assert completed.rollout.percentage == 100


# pause / resume


def test_pause_holds_the_stage_and_keeps_its_start_time() -> None:
    running = Rollout(PLAN, S.RUNNING, stage_index=1, stage_started_at=T0)
    outcome = pause(running, now=NOW)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(running, state=S.PAUSED)
    assert outcome.summary == "paused at 50%"


def test_resume_restarts_the_bake_clock() -> None:
    # Baked for 59 minutes of its hour, then paused for a day: the hour starts again on resume.
    running = Rollout(PLAN, S.RUNNING, stage_index=0, stage_started_at=T0)
    paused = pause(running, now=T0 + timedelta(minutes=59))
    assert isinstance(paused, Transition)
    resumed_at = T0 + timedelta(days=1)
    resumed = resume(paused.rollout, now=resumed_at)
    assert isinstance(resumed, Transition)
    assert resumed.rollout.stage_started_at == resumed_at
    assert bake_remaining(resumed.rollout, now=resumed_at) == timedelta(hours=1)
    assert tick(resumed.rollout, now=resumed_at) is None
    assert tick(resumed.rollout, now=resumed_at + timedelta(hours=1) - MICROSECOND) is None
    advanced = tick(resumed.rollout, now=resumed_at + timedelta(hours=1))
    assert isinstance(advanced, Transition)
    assert advanced.rollout.stage_index == 1


# rollback


def test_rollback_off_serves_the_off_variant() -> None:
    outcome = rollback(BEFORE[S.RUNNING], now=NOW)
    assert isinstance(outcome, Transition)
    assert outcome.rollout.state is S.ROLLED_BACK
    assert outcome.rollout.percentage == 0
    assert outcome.rollout.is_serving is False
    assert outcome.summary == "rolled back to off (was 50%)"


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED])
def test_rollback_previous_stage_goes_one_stage_back_and_pauses(state: RolloutState) -> None:
    before = Rollout(PLAN, state, stage_index=2, stage_started_at=T0)
    outcome = rollback(before, now=NOW, policy=RollbackPolicy.PREVIOUS_STAGE)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(before, state=S.PAUSED, stage_index=1, stage_started_at=NOW)
    assert outcome.rollout.percentage == 50
    assert outcome.summary == "rolled back one stage to 50% and paused"


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED])
def test_rollback_previous_stage_from_stage_0_goes_to_off(state: RolloutState) -> None:
    before = Rollout(PLAN, state, stage_index=0, stage_started_at=T0)
    outcome = rollback(before, now=NOW, policy=RollbackPolicy.PREVIOUS_STAGE)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(before, state=S.ROLLED_BACK, stage_started_at=NOW)
    assert outcome.rollout.percentage == 0
    assert outcome.rollout.is_serving is False


@pytest.mark.parametrize("explicit", [None, RollbackPolicy.PREVIOUS_STAGE])
def test_rollback_of_a_completed_rollout_goes_to_off_even_with_previous_stage_policy(
    explicit: RollbackPolicy | None,
) -> None:
    completed = Rollout(
        PLAN,
        S.COMPLETED,
        stage_index=2,
        stage_started_at=T0,
        rollback_policy=RollbackPolicy.PREVIOUS_STAGE,
    )
    outcome = rollback(completed, now=NOW, policy=explicit)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(completed, state=S.ROLLED_BACK, stage_started_at=NOW)
    assert outcome.rollout.percentage == 0
    assert outcome.summary == "rolled back to off (was 100%)"


def test_rollback_without_a_policy_uses_the_rollouts_own_policy() -> None:
    before = Rollout(PLAN, S.RUNNING, stage_index=1, stage_started_at=T0, rollback_policy=RollbackPolicy.PREVIOUS_STAGE)
    outcome = rollback(before, now=NOW)
    assert isinstance(outcome, Transition)
    assert outcome.rollout.state is S.PAUSED
    assert outcome.rollout.stage_index == 0


def test_an_explicit_rollback_policy_overrides_the_rollouts_own() -> None:
    before = Rollout(PLAN, S.RUNNING, stage_index=1, stage_started_at=T0, rollback_policy=RollbackPolicy.PREVIOUS_STAGE)
    outcome = rollback(before, now=NOW, policy=RollbackPolicy.OFF)
    assert isinstance(outcome, Transition)
    assert outcome.rollout.state is S.ROLLED_BACK
    assert outcome.rollout.stage_index == 1


def test_new_rollout_keeps_the_plan_and_policy_and_is_pending() -> None:
    rollout = new_rollout(list(PLAN), RollbackPolicy.PREVIOUS_STAGE)
    assert rollout == Rollout(PLAN, S.PENDING, 0, None, RollbackPolicy.PREVIOUS_STAGE)
    assert rollout.percentage == 0
    assert rollout.is_serving is False


# tick and bake time


def _running_at_stage_0(bake: timedelta, *, auto_advance: bool = True) -> Rollout:
    plan = (Stage(10, bake=bake, auto_advance=auto_advance), Stage(100, auto_advance=True))
    return Rollout(plan, S.RUNNING, stage_index=0, stage_started_at=T0)


def test_tick_does_nothing_one_microsecond_before_bake_time_elapsed() -> None:
    rollout = _running_at_stage_0(timedelta(hours=1))
    just_before = T0 + timedelta(hours=1) - MICROSECOND
    assert bake_remaining(rollout, now=just_before) == MICROSECOND
    assert tick(rollout, now=just_before) is None


def test_tick_advances_exactly_when_bake_remaining_reaches_zero() -> None:
    rollout = _running_at_stage_0(timedelta(hours=1))
    boundary = T0 + timedelta(hours=1)
    assert bake_remaining(rollout, now=boundary) == timedelta(0)
    outcome = tick(rollout, now=boundary)
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(rollout, stage_index=1, stage_started_at=boundary)


def test_tick_does_nothing_right_after_start() -> None:
    rollout = _running_at_stage_0(timedelta(hours=1))
    assert bake_remaining(rollout, now=T0) == timedelta(hours=1)
    assert tick(rollout, now=T0) is None


def test_tick_advances_a_zero_bake_auto_stage_immediately() -> None:
    rollout = _running_at_stage_0(timedelta(0))
    outcome = tick(rollout, now=T0)
    assert isinstance(outcome, Transition)
    assert outcome.rollout.stage_index == 1


def test_tick_ignores_non_auto_stages_however_long_they_baked() -> None:
    rollout = _running_at_stage_0(timedelta(minutes=5), auto_advance=False)
    assert tick(rollout, now=T0 + timedelta(days=365)) is None


def test_tick_ignores_paused_rollouts_even_when_baked_and_auto() -> None:
    paused = replace(_running_at_stage_0(timedelta(minutes=5)), state=S.PAUSED)
    assert tick(paused, now=T0 + timedelta(days=365)) is None


def test_tick_summary_says_the_bake_time_passed() -> None:
    outcome = tick(_running_at_stage_0(timedelta(hours=1)), now=T0 + timedelta(hours=2))
    assert isinstance(outcome, Transition)
    assert outcome.summary == "advanced to stage 2/2 (100%) after bake time"


def test_tick_on_an_auto_last_stage_completes_at_100_percent() -> None:
    at_last = Rollout(
        (Stage(10), Stage(100, bake=timedelta(hours=1), auto_advance=True)),
        S.RUNNING,
        stage_index=1,
        stage_started_at=T0,
    )
    outcome = tick(at_last, now=T0 + timedelta(hours=1))
    assert isinstance(outcome, Transition)
    assert outcome.rollout == replace(at_last, state=S.COMPLETED, stage_started_at=T0 + timedelta(hours=1))
    assert outcome.rollout.percentage == 100
    assert outcome.summary == "completed at 100% after bake time"


@pytest.mark.parametrize("state", [S.PENDING, S.PAUSED, S.COMPLETED, S.ROLLED_BACK])
def test_bake_remaining_is_zero_when_not_running(state: RolloutState) -> None:
    assert bake_remaining(BEFORE[state], now=T0) == timedelta(0)


def test_bake_remaining_never_goes_negative() -> None:
    rollout = _running_at_stage_0(timedelta(hours=1))
    assert bake_remaining(rollout, now=T0 + timedelta(days=3)) == timedelta(0)


# validate_stages and Stage


def test_validate_stages_refuses_an_empty_plan() -> None:
    with pytest.raises(ValueError, match="at least one stage"):
        validate_stages([])


@pytest.mark.parametrize("percentages", [(50, 50, 100), (60, 40, 100), (10, 100, 100), (100, 100)], ids=str)
def test_validate_stages_refuses_non_increasing_percentages(percentages: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="strictly increase"):
        validate_stages([Stage(p) for p in percentages])


@pytest.mark.parametrize("percentages", [(10, 50), (99.9,)], ids=str)
def test_validate_stages_refuses_a_last_stage_that_is_not_100(percentages: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="last stage must be 100%"):
        validate_stages([Stage(p) for p in percentages])


@pytest.mark.parametrize("percentages", [(0,), (0, 100), (0, 50, 100)], ids=str)
def test_validate_stages_refuses_a_first_stage_at_0_percent(percentages: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="more than 0%"):
        validate_stages([Stage(p) for p in percentages])


@pytest.mark.parametrize("percentage", [-0.001, -1, 100.001, 101, math.inf, -math.inf, math.nan], ids=str)
def test_a_stage_percentage_outside_0_to_100_is_refused(percentage: float) -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        validate_stages([Stage(percentage), Stage(100)])


def test_a_negative_bake_time_is_refused() -> None:
    with pytest.raises(ValueError, match="bake time must not be negative"):
        validate_stages([Stage(10, bake=-MICROSECOND), Stage(100)])


def test_negative_min_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="min_samples must not be negative"):
        validate_stages([Stage(10, min_samples=-1), Stage(100)])


def test_new_rollout_refuses_an_invalid_plan() -> None:
    with pytest.raises(ValueError, match="last stage must be 100%"):
        new_rollout([Stage(10), Stage(50)])


@pytest.mark.parametrize("percentages", [(100,), (0.001, 100), (1, 2, 3, 100), (0.5, 99.5, 100)], ids=str)
def test_validate_stages_accepts_strictly_increasing_plans_ending_at_100(
    percentages: tuple[float, ...],
) -> None:
    validate_stages([Stage(p) for p in percentages])
