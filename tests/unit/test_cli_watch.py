"""`rollout status --watch` without a server: what it says changed, the exit code each state means, and the loop
that reads until a final state, a stage rollback or its deadline, on a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from controlplane.cli.client import ApiProblem, CommandError
from controlplane.cli.rollout_watch import Pacing, RolloutExit, WatchEnd, exit_for, follow_rollout, rollout_changes


def status(state: str = "running", stage: int = 0, **changes: Any) -> dict[str, Any]:
    """A rollout status as the API sends it: a three-stage plan, 10/50/100%."""
    base: dict[str, Any] = {
        "flag": "new-checkout",
        "environment": "production",
        "state": state,
        "stage_index": stage,
        "stage_count": 3,
        "percentage": (10.0, 50.0, 100.0)[stage],
        "gates": "holding" if state == "running" else "not_running",
        "gates_detail": "guard `errors` has not been evaluated yet",
        "enabled": state != "rolled_back",
        "rollout_id": 7,
        "guards": [{"rule": "errors", "state": "not_evaluated", "value": None, "samples": 0}],
    }
    return base | changes


@pytest.mark.parametrize(
    ("state", "code"),
    [
        ("completed", RolloutExit.COMPLETED),
        ("rolled_back", RolloutExit.ROLLED_BACK),
        ("paused", RolloutExit.PAUSED),
        ("running", RolloutExit.UNFINISHED),
        ("pending", RolloutExit.UNFINISHED),
    ],
)
def test_each_state_has_its_exit_code(state: str, code: RolloutExit) -> None:
    assert exit_for(status(state)) is code


def test_the_exit_codes_are_distinct_and_leave_2_to_argparse() -> None:
    codes = [int(code) for code in RolloutExit]
    assert len(set(codes)) == len(codes) and 2 not in codes and int(RolloutExit.COMPLETED) == 0


def test_the_first_reading_says_where_the_rollout_stands() -> None:
    assert rollout_changes(None, status()) == [
        "running at stage 1/3 (10%), gates holding: guard `errors` has not been evaluated yet"
    ]


def test_a_rollout_not_started_says_what_its_first_stage_will_serve() -> None:
    pending = status("pending", percentage=0.0, stages=[{"percentage": 10.0}, {"percentage": 100.0}])
    assert rollout_changes(None, pending) == ["not started; its first stage serves 10%"]


def test_changes_are_told_in_words() -> None:
    running = status()
    assert rollout_changes(running, running) == []
    assert rollout_changes(running, status(stage=1)) == ["advanced to stage 2/3 (50%)"]
    assert rollout_changes(running, status("paused")) == ["paused at stage 1/3 (10%)"]
    assert rollout_changes(status("paused"), running) == [
        "resumed at stage 1/3 (10%)",
        "gates holding: guard `errors` has not been evaluated yet",  # not judged while paused: news again
    ]
    assert rollout_changes(status(stage=1), status("completed", 2)) == ["completed at stage 3/3 (100%)"]
    assert rollout_changes(running, status("rolled_back")) == [
        "rolled back: serving the off variant",
        "environment switched off (kill switch)",
    ]
    assert rollout_changes(status(stage=1), status("paused", 0)) == [
        "rolled back one stage and paused at stage 1/3 (10%)"
    ]
    clear = status(gates="clear", gates_detail="every guard is clear")
    assert rollout_changes(running, clear) == ["gates clear: every guard is clear"]
    firing = status(guards=[{"rule": "errors", "state": "firing", "value": 0.0412, "samples": 900}])
    assert rollout_changes(running, firing) == ["guard errors not evaluated -> firing at 0.0412 (900 samples)"]


@dataclass
class Scripted:
    """A server whose status moves one step per wait, on a clock that moves by the waits."""

    readings: Iterator[dict[str, Any] | Exception]
    now: float = 0.0
    waits: list[float] = field(default_factory=list)
    reports: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def read(self) -> dict[str, Any]:
        reading = next(self.readings)
        if isinstance(reading, Exception):
            raise reading
        return reading

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def follow(self, timeout: float | None, interval: float = 2.0) -> WatchEnd:
        return follow_rollout(
            self.read,
            timeout=timeout,
            interval=interval,
            pacing=Pacing(monotonic=lambda: self.now, wait=self.wait),
            report=lambda _, changes: self.reports.append(changes),
            warn=self.warnings.append,
        )


def test_a_watch_ends_at_completion_with_0_and_reports_only_changes() -> None:
    server = Scripted(iter([status(), status(), status(stage=1), status("completed", 2)]))
    end = server.follow(timeout=None)
    assert end.code is RolloutExit.COMPLETED and end.reason == "completed"
    assert server.reports[1:] == [["advanced to stage 2/3 (50%)"], ["completed at stage 3/3 (100%)"]]
    assert server.waits == [2.0, 2.0, 2.0]


def test_a_watch_ends_at_a_rollback_with_3() -> None:
    server = Scripted(iter([status(stage=1), status("rolled_back", 1)]))
    assert server.follow(timeout=None).code is RolloutExit.ROLLED_BACK


def test_a_rollback_to_the_previous_stage_ends_the_watch_with_3_though_the_state_is_paused() -> None:
    server = Scripted(iter([status(stage=0), status(stage=1), status("paused", 0)]))
    end = server.follow(timeout=None)
    assert end.code is RolloutExit.ROLLED_BACK and end.reason == "rolled back to stage 1/3 (10%)"


def test_a_pause_is_not_a_rollback_and_a_timeout_then_exits_4() -> None:
    server = Scripted(iter([status(stage=1), *[status("paused", 1)] * 10]))
    end = server.follow(timeout=5.0)
    assert end.code is RolloutExit.PAUSED and end.reason == "timed out paused at stage 2/3 (50%)"
    assert server.waits == [2.0, 2.0, 1.0]  # the last wait is cut to the deadline, not a whole interval past it


def test_holding_at_the_timeout_exits_5() -> None:
    server = Scripted(iter([status()] * 10))
    end = server.follow(timeout=3.0)
    assert end.code is RolloutExit.UNFINISHED and "running, gates holding" in end.reason


def test_an_unreachable_server_is_retried_and_said_once_but_a_refusal_ends_the_watch() -> None:
    unreachable = CommandError("cannot reach the control plane at http://127.0.0.1:9")
    unavailable = ApiProblem(503, "database-unavailable", "the control plane lost its database", {})
    server = Scripted(iter([status(), unreachable, unavailable, status(stage=1), status("completed", 2)]))
    assert server.follow(timeout=None).code is RolloutExit.COMPLETED
    assert len(server.warnings) == 2 and "retrying" in server.warnings[0]
    assert server.warnings[1] == "reading the status again"

    refused = ApiProblem(404, "flag-not-found", "no flag `new-checkout`", {})
    with pytest.raises(ApiProblem):
        Scripted(iter([status(), refused])).follow(timeout=None)
