"""Unit tests for what rollouts tell people: the step each operation makes, the progress deadline of a stage, and
when it is due (pure: no database, the clock passed in)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.announcements import step_events
from controlplane.notifications.messages import ROLLOUT_KINDS
from controlplane.rollouts import stages as machine
from controlplane.rollouts.stages import (
    Rollout,
    RolloutState,
    Stage,
    Transition,
    deadline_passed,
    progress_deadline,
    progress_deadline_at,
    stages_from_json,
    stages_to_json,
)
from controlplane.rollouts.steps import (
    StepContext,
    StepKind,
    deadline_due,
    deadline_step,
    holding_reasons,
    operation_step,
    tick_step,
)

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
STAGES = (
    Stage(10, bake=HOUR, min_samples=500, guards=("error-rate",), auto_advance=True),
    Stage(50, bake=2 * HOUR, auto_advance=True),
    Stage(100, bake=24 * HOUR),
)
CONTEXT = StepContext(
    flag="enable-reference-images", pipeline="reference-images", environment="production", rollout_id=7
)


def running(stage_index: int = 0, started: datetime = T0) -> Rollout:
    return Rollout(STAGES, RolloutState.RUNNING, stage_index, started)


def moved(outcome: machine.Outcome) -> Rollout:
    assert isinstance(outcome, Transition), outcome
    return outcome.rollout


# --- the progress deadline ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bake", "deadline"),
    [
        (timedelta(0), timedelta(minutes=10)),  # no bake: Argo's and Flagger's 600 s
        (timedelta(minutes=30), timedelta(minutes=40)),  # a quarter (7.5m) is less than 10m
        (HOUR, timedelta(hours=1, minutes=15)),  # a quarter of the bake
        (24 * HOUR, 30 * HOUR),
    ],
)
def test_the_default_deadline_is_the_bake_plus_the_larger_of_10_minutes_and_a_quarter_of_it(
    bake: timedelta, deadline: timedelta
) -> None:
    assert progress_deadline(Stage(100, bake=bake)) == deadline


def test_a_declared_deadline_replaces_the_default_and_is_stored_only_when_declared() -> None:
    declared = Stage(10, bake=HOUR, deadline=3 * HOUR)
    assert progress_deadline(declared) == 3 * HOUR

    stored = stages_to_json([declared, Stage(100)])
    assert stored[0]["progress_deadline_seconds"] == 3 * 3600
    assert "progress_deadline_seconds" not in stored[1], "plans stored before deadlines existed compare equal"
    assert stages_from_json(stored) == (declared, Stage(100))


def test_a_deadline_not_longer_than_the_bake_is_refused() -> None:
    with pytest.raises(ValueError, match=r"longer than the stage's bake \(1h\), got 1h"):
        Stage(10, bake=HOUR, deadline=HOUR)


def test_the_deadline_passes_at_exactly_the_stage_start_plus_its_deadline_and_only_while_running() -> None:
    rollout = running()
    due = T0 + timedelta(hours=1, minutes=15)
    assert progress_deadline_at(rollout) == due
    assert not deadline_passed(rollout, now=due - timedelta(seconds=1))
    assert deadline_passed(rollout, now=due)
    paused = moved(machine.pause(rollout, now=T0))
    assert progress_deadline_at(paused) is None
    assert not deadline_passed(paused, now=due + HOUR), "time spent paused does not count"


def test_resuming_restarts_the_deadline_with_the_bake() -> None:
    paused = moved(machine.pause(running(), now=T0))
    resumed = moved(machine.resume(paused, now=T0 + 5 * HOUR))
    assert progress_deadline_at(resumed) == T0 + 5 * HOUR + timedelta(hours=1, minutes=15)


def test_a_deadline_is_due_once_per_stage_run() -> None:
    rollout = running()
    due = T0 + timedelta(hours=1, minutes=15)
    assert not deadline_due(rollout, now=due - timedelta(seconds=1), notified_at=None)
    assert deadline_due(rollout, now=due, notified_at=None)
    assert not deadline_due(rollout, now=due + HOUR, notified_at=due), "told already for this stage run"
    # Told during an earlier run of the stage (before a resume restarted it): due again for the new run.
    later = running(started=T0 + 10 * HOUR)
    assert deadline_due(later, now=T0 + 12 * HOUR, notified_at=due)


def test_a_deadline_is_never_due_for_a_rollout_that_is_not_running() -> None:
    for state in (RolloutState.PENDING, RolloutState.PAUSED, RolloutState.COMPLETED, RolloutState.ROLLED_BACK):
        rollout = Rollout(STAGES, state, 0, T0)
        assert not deadline_due(rollout, now=T0 + 100 * HOUR, notified_at=None), state


# --- why a stage holds ------------------------------------------------------------------------------------------


def test_holding_reasons_name_the_kill_switch_the_gates_and_a_stage_that_advances_by_hand() -> None:
    gate = "guard `error-rate` lacks data: no value, 0 samples"
    assert holding_reasons(running(), enabled=True, gate_reasons=[gate]) == (gate,)
    switched_off = holding_reasons(running(), enabled=False, gate_reasons=[])
    assert switched_off[0].startswith("the environment is switched off")
    assert holding_reasons(running(2), enabled=True, gate_reasons=[]) == (
        "the stage advances by hand: it waits for an operator's `advance`",
    )


def test_the_deadline_step_says_how_long_the_stage_held_and_why() -> None:
    now = T0 + timedelta(hours=1, minutes=20)
    step = deadline_step(CONTEXT, running(), reasons=["the stage has 12 events; it needs 500"], now=now)
    assert step.kind is StepKind.DEADLINE_PASSED
    assert step.severity == "ticket"
    assert (step.stage, step.stage_count, step.percentage, step.actor) == (1, 3, 10.0, "scheduler")
    assert step.summary == (
        "enable-reference-images in production: stage 1/3 (10%) has not moved on for 1h20m, past its progress "
        "deadline of 1h15m: the stage has 12 events; it needs 500"
    )
    assert step.key == f"enable-reference-images/production/rollout-7/deadline/stage-1/{T0.isoformat()}"


# --- the step each operation makes ------------------------------------------------------------------------------


def step_of(operation: str, before: Rollout, after: Rollout, **kw: bool) -> tuple[StepKind, str]:
    step = operation_step(
        operation,
        context=CONTEXT,
        before=before,
        after=after,
        actor="olivia",
        reason="looks healthy",
        summary="did it",
        now=T0,
        **kw,
    )
    assert (step.flag, step.environment, step.actor, step.reason) == (
        "enable-reference-images",
        "production",
        "olivia",
        "looks healthy",
    )
    assert (
        step.key
        == f"enable-reference-images/production/rollout-7/{step.kind.value}/stage-{step.stage}/{T0.isoformat()}"
    )
    return step.kind, step.severity


def test_each_operation_makes_its_step_with_a_severity() -> None:
    pending = machine.new_rollout(STAGES)
    started = moved(machine.start(pending, now=T0))
    advanced = moved(machine.advance(started, now=T0))
    paused = moved(machine.pause(advanced, now=T0))
    resumed = moved(machine.resume(paused, now=T0))
    last = running(2)
    completed = moved(machine.advance(last, now=T0))
    rolled_back = moved(machine.rollback(resumed, now=T0))

    assert step_of("start", pending, started) == (StepKind.STARTED, "info")
    assert step_of("advance", started, advanced) == (StepKind.ADVANCED, "info")
    assert step_of("pause", advanced, paused) == (StepKind.PAUSED, "info")
    assert step_of("resume", paused, resumed) == (StepKind.RESUMED, "info")
    assert step_of("advance", last, completed) == (StepKind.COMPLETED, "info")
    assert step_of("rollback", resumed, rolled_back) == (StepKind.ROLLED_BACK, "ticket")
    assert step_of("advance", started, advanced, forced_past_guards=True) == (StepKind.FORCED_ADVANCE, "ticket")
    assert step_of("advance", last, completed, forced_past_guards=True) == (StepKind.FORCED_ADVANCE, "ticket")
    # A start forced out of promotion order is still a start, but someone should look at it.
    assert step_of("start", pending, started, forced=True) == (StepKind.STARTED, "ticket")


def test_an_advance_carries_the_stage_it_reached_and_the_share_it_left() -> None:
    started = running()
    advanced = moved(machine.advance(started, now=T0))
    step = operation_step(
        "advance", context=CONTEXT, before=started, after=advanced, actor="a", reason="", summary="s", now=T0
    )
    assert (step.stage, step.stage_count, step.percentage, step.previous_percentage) == (2, 3, 50.0, 10.0)


def test_the_tick_advances_and_completes_as_the_scheduler() -> None:
    started = running()
    step = tick_step(CONTEXT, before=started, after=moved(machine.advance(started, now=T0)), summary="s", now=T0)
    assert (step.kind, step.actor, step.severity) == (StepKind.ADVANCED, "scheduler", "info")


def test_every_step_kind_is_a_kind_notifications_know() -> None:
    assert {kind.value for kind in StepKind} == set(ROLLOUT_KINDS)


def test_a_step_of_one_segment_names_it_in_what_on_call_is_told() -> None:
    segment = replace(CONTEXT, segment="queue=sales")
    started = running()
    rolled_back = moved(machine.rollback(started, now=T0))
    step = operation_step(
        "rollback", context=segment, before=started, after=rolled_back, actor="ana", reason="r", summary="s", now=T0
    )
    deadline = deadline_step(segment, running(started=T0 - 2 * HOUR), reasons=["gates hold"], now=T0)

    assert step.summary == "enable-reference-images in production (queue=sales): s"
    assert deadline.summary.startswith("enable-reference-images in production (queue=sales): stage 1/3")
    told = step_events([step])
    assert [event.details["segment"] for event in told] == ["queue=sales", "queue=sales"]
    assert told[1].summary.startswith("enable-reference-images rolled back in production (queue=sales) by ana")
    # A rollout run once says nothing of segments.
    once = operation_step(
        "rollback", context=CONTEXT, before=started, after=rolled_back, actor="ana", reason="r", summary="s", now=T0
    )
    assert (once.summary, once.segment) == ("enable-reference-images in production: s", None)
