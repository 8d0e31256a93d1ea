"""Property tests for the rollout stage machine: random valid plans driven by random operations in time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.rollouts.stages import (
    Refusal,
    RollbackPolicy,
    Rollout,
    RolloutState,
    Stage,
    Transition,
    advance,
    new_rollout,
    pause,
    resume,
    rollback,
    start,
    tick,
)

Outcome = Transition | Refusal | None
Operation = Callable[[Rollout, datetime], Outcome]

OPERATIONS: dict[str, Operation] = {
    "start": lambda r, now: start(r, now=now),
    "advance": lambda r, now: advance(r, now=now),
    "pause": lambda r, now: pause(r, now=now),
    "resume": lambda r, now: resume(r, now=now),
    "rollback": lambda r, now: rollback(r, now=now),
    "rollback_off": lambda r, now: rollback(r, now=now, policy=RollbackPolicy.OFF),
    "rollback_previous_stage": lambda r, now: rollback(r, now=now, policy=RollbackPolicy.PREVIOUS_STAGE),
    "tick": lambda r, now: tick(r, now=now),
}
# Weighted so histories get far before a rollback ends them: rolled_back is terminal.
OPERATION_MIX = ["tick"] * 6 + ["advance"] * 3 + ["resume"] * 2 + ["pause", "start", "rollback"] + sorted(OPERATIONS)

# 150 examples per property keeps both stage test files under 10 s together.
SETTINGS = settings(max_examples=150, deadline=None)


# Quarter hours make "now == stage start + bake" (the tick boundary) come up often; a microsecond now and
# then lands just either side of it. One integer draw per duration keeps generation cheap.
def _duration(n: int) -> timedelta:
    return timedelta(minutes=15 * n) if n <= 8 else timedelta(microseconds=n - 8)


DURATIONS = st.integers(0, 9).map(_duration)


@st.composite
def plans(draw: st.DrawFn) -> tuple[Stage, ...]:
    """1..6 stages with strictly increasing percentages ending at 100, random bake times and auto flags."""
    # Tenths of a percent in 0.1..99.9: fractional percentages (a 0% stage is refused by validate_stages).
    below_100 = sorted(draw(st.sets(st.integers(1, 999), max_size=5)))
    percentages = [tenths / 10 for tenths in below_100] + [100.0]
    details = draw(
        st.lists(
            st.tuples(DURATIONS, st.integers(0, 1000), st.booleans()),
            min_size=len(percentages),
            max_size=len(percentages),
        )
    )
    return tuple(
        Stage(percentage, bake=bake, min_samples=min_samples, auto_advance=auto_advance)
        for percentage, (bake, min_samples, auto_advance) in zip(percentages, details, strict=True)
    )


@dataclass(frozen=True)
class Step:
    """One operation applied at one instant: the rollout before it and what came back."""

    before: Rollout
    op: str
    now: datetime
    outcome: Outcome

    @property
    def after(self) -> Rollout:
        return self.outcome.rollout if isinstance(self.outcome, Transition) else self.before


@st.composite
def histories(draw: st.DrawFn) -> list[Step]:
    """A new rollout over a random plan, driven by random operations on a clock that never goes back."""
    rollout = new_rollout(draw(plans()), draw(st.sampled_from(RollbackPolicy)))
    now = datetime(2026, 1, 1, tzinfo=UTC) + draw(DURATIONS)
    operations = draw(
        st.lists(
            st.tuples(st.sampled_from(OPERATION_MIX), DURATIONS),
            min_size=4,
            max_size=30,
        )
    )
    steps = []
    for op, elapsed in [("start", timedelta(0)), *operations] if draw(st.booleans()) else operations:
        now += elapsed
        outcome = OPERATIONS[op](rollout, now)
        step = Step(rollout, op, now, outcome)
        steps.append(step)
        rollout = step.after
    return steps


def _resolves_to_previous_stage(step: Step) -> bool:
    return step.op == "rollback_previous_stage" or (
        step.op == "rollback" and step.before.rollback_policy is RollbackPolicy.PREVIOUS_STAGE
    )


def _resolves_to_off(step: Step) -> bool:
    return step.op == "rollback_off" or (step.op == "rollback" and step.before.rollback_policy is RollbackPolicy.OFF)


def _accepted(steps: list[Step]) -> list[Step]:
    return [step for step in steps if isinstance(step.outcome, Transition)]


@SETTINGS
@given(histories())
def test_a_stage_is_never_skipped(steps: list[Step]) -> None:
    for step in _accepted(steps):
        delta = step.after.stage_index - step.before.stage_index
        if delta == 1:
            assert step.op in ("advance", "tick")
        elif delta == -1:
            assert _resolves_to_previous_stage(step)
        else:
            assert delta == 0, step


@SETTINGS
@given(histories())
def test_percentage_only_increases_to_the_next_stages_percentage(steps: list[Step]) -> None:
    for step in _accepted(steps):
        before, after = step.before, step.after
        if after.percentage > before.percentage:
            if before.state is RolloutState.PENDING:
                next_percentage = before.stages[0].percentage
            else:
                next_percentage = before.stages[before.stage_index + 1].percentage
            assert after.percentage == next_percentage, step


@SETTINGS
@given(histories())
def test_rollback_off_serves_the_off_variant(steps: list[Step]) -> None:
    for step in _accepted(steps):
        if _resolves_to_off(step):
            assert step.after.state is RolloutState.ROLLED_BACK
            assert step.after.percentage == 0
            assert step.after.is_serving is False


@SETTINGS
@given(histories())
def test_rollback_previous_stage_strictly_lowers_the_percentage_or_goes_off(steps: list[Step]) -> None:
    for step in _accepted(steps):
        if not _resolves_to_previous_stage(step):
            continue
        before, after = step.before, step.after
        # Every stage serves more than 0% (validate_stages), so a rollback always lowers the percentage.
        assert after.percentage < before.percentage, step
        if before.stage_index == 0 or before.state is RolloutState.COMPLETED:
            assert after.state is RolloutState.ROLLED_BACK
            assert after.percentage == 0
            assert after.is_serving is False
        else:
            assert after.state is RolloutState.PAUSED
            assert after.stage_index == before.stage_index - 1


@SETTINGS
@given(histories())
def test_completed_means_last_stage_at_100_percent(steps: list[Step]) -> None:
    for step in steps:
        for rollout in (step.before, step.after):
            if rollout.state is RolloutState.COMPLETED:
                assert rollout.stage_index == len(rollout.stages) - 1
                assert rollout.percentage == 100


@SETTINGS
@given(histories())
def test_operations_are_pure_and_refusals_leave_the_rollout_unchanged(steps: list[Step]) -> None:
    for step in steps:
        snapshot = Rollout(
            step.before.stages,
            step.before.state,
            step.before.stage_index,
            step.before.stage_started_at,
            step.before.rollback_policy,
        )
        again = OPERATIONS[step.op](step.before, step.now)
        assert again == step.outcome
        assert step.before == snapshot
        if isinstance(step.outcome, Refusal):
            assert step.outcome.code == "illegal_transition"
            assert step.outcome.reason.strip()
            assert step.before.state.value in step.outcome.reason


@SETTINGS
@given(histories())
def test_states_are_always_one_of_five_and_off_states_serve_0_percent(steps: list[Step]) -> None:
    five = {"pending", "running", "paused", "completed", "rolled_back"}
    for step in steps:
        for rollout in (step.before, step.after):
            assert isinstance(rollout.state, RolloutState)
            assert rollout.state.value in five
            assert 0 <= rollout.stage_index < len(rollout.stages)
            if rollout.state in (RolloutState.PENDING, RolloutState.ROLLED_BACK):
                assert rollout.percentage == 0
                assert rollout.is_serving is False
            else:
                assert rollout.is_serving is True
                assert rollout.percentage == rollout.stage.percentage


@SETTINGS
@given(histories())
def test_tick_only_advances_a_running_auto_stage_whose_bake_has_elapsed(steps: list[Step]) -> None:
    for step in steps:
        if step.op != "tick":
            continue
        before = step.before
        assert not isinstance(step.outcome, Refusal)
        due = (
            before.state is RolloutState.RUNNING
            and before.stage.auto_advance
            and before.stage_started_at is not None
            and step.now >= before.stage_started_at + before.stage.bake
        )
        assert (step.outcome is not None) == due, step
