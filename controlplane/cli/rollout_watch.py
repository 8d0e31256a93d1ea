"""Following a rollout from the command line: what changed between two readings of its status, the exit code a
state means, and the loop that reads until a final state or a deadline (its clock and its wait are passed in).

    exit code   rollout
    0           completed
    1           error (unreachable, refused, bad arguments to the API)
    3           rolled back (to off, or one stage back while watched)
    4           paused
    5           not finished: running (baking, or holding at its gates) or not started

Argparse's own usage errors exit 2.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.cli.client import ApiProblem, CommandError

__all__ = [
    "FINAL_STATES",
    "Pacing",
    "RolloutExit",
    "WatchEnd",
    "exit_for",
    "follow_rollout",
    "rollout_changes",
    "stage_words",
]

#: States a rollout leaves only by a new start: watching ends there.
FINAL_STATES = frozenset({"completed", "rolled_back"})


class RolloutExit(enum.IntEnum):
    """The exit code of `rollout status`, by the rollout's state."""

    COMPLETED = 0
    ERROR = 1
    ROLLED_BACK = 3
    PAUSED = 4
    UNFINISHED = 5


def exit_for(status: dict[str, Any]) -> RolloutExit:
    """The exit code a rollout's state means."""
    state = status["state"]
    if state == "completed":
        return RolloutExit.COMPLETED
    if state == "rolled_back":
        return RolloutExit.ROLLED_BACK
    if state == "paused":
        return RolloutExit.PAUSED
    return RolloutExit.UNFINISHED


def stage_words(status: dict[str, Any]) -> str:
    """Where a rollout stands, e.g. `stage 2/3 (50%)`."""
    return f"stage {status['stage_index'] + 1}/{status['stage_count']} ({status['percentage']:g}%)"


def _state_change(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    old, new = before["state"], after["state"]
    if old == new:
        return None
    where = stage_words(after)
    if new == "running":
        return f"resumed at {where}" if old == "paused" else f"started at {where}"
    if new == "paused":
        went_back = after["stage_index"] < before["stage_index"]
        return f"rolled back one stage and paused at {where}" if went_back else f"paused at {where}"
    if new == "completed":
        return f"completed at {where}"
    if new == "rolled_back":
        return "rolled back: serving the off variant"
    return f"now {new.replace('_', ' ')}"


def rollout_changes(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """What changed from one status reading to the next, in words; the first reading describes where it stands."""
    if before is None:
        if after["state"] == "pending":
            stages = after.get("stages") or [{"percentage": after["percentage"]}]
            return [f"not started; its first stage serves {stages[0]['percentage']:g}%"]
        state = after["state"].replace("_", " ")
        gates = f", gates {after['gates']}: {after['gates_detail']}" if after["state"] == "running" else ""
        return [f"{state} at {stage_words(after)}{gates}"]
    changes: list[str] = []
    if before["rollout_id"] is not None and after["rollout_id"] != before["rollout_id"]:
        changes.append(f"a new rollout started (id {after['rollout_id']})")
    stated = _state_change(before, after)
    if stated is not None:
        changes.append(stated)
    elif after["stage_index"] > before["stage_index"]:
        changes.append(f"advanced to {stage_words(after)}")
    elif after["stage_index"] < before["stage_index"]:
        changes.append(f"rolled back to {stage_words(after)}")
    if after["state"] == "running" and after["gates"] != before["gates"]:
        changes.append(f"gates {after['gates']}: {after['gates_detail']}")
    if after["enabled"] != before["enabled"]:
        changes.append("environment switched on" if after["enabled"] else "environment switched off (kill switch)")
    guards_before = {guard["rule"]: guard["state"] for guard in before.get("guards", [])}
    for guard in after.get("guards", []):
        previous = guards_before.get(guard["rule"])
        if previous is not None and previous != guard["state"]:
            measured = "" if guard["value"] is None else f" at {guard['value']:.6g} ({guard['samples']} samples)"
            changes.append(f"guard {guard['rule']} {previous.replace('_', ' ')} -> {guard['state']}{measured}")
    return changes


@dataclass(frozen=True, slots=True)
class Pacing:
    """The watch's clock and its wait between readings: the real ones, or a test's that moves the world instead.
    With ``follows_pushes``, the wait also ends at once when the server pushes a change of the rollout."""

    monotonic: Callable[[], float] = time.monotonic
    wait: Callable[[float], object] = time.sleep
    follows_pushes: bool = False


@dataclass(frozen=True, slots=True)
class WatchEnd:
    """How a watch ended: its exit code, the last status read, and why, in words."""

    code: RolloutExit
    status: dict[str, Any]
    reason: str


def _rolled_back_while_watched(reached: dict[str, Any], status: dict[str, Any]) -> bool:
    """True when the watched rollout went back below a stage it `reached` (a `previous_stage` rollback pauses,
    it does not end)."""
    same = status["rollout_id"] == reached["rollout_id"]
    return bool(same and status["state"] == "paused" and status["stage_index"] < reached["stage_index"])


def follow_rollout(
    read: Callable[[], dict[str, Any]],
    *,
    timeout: float | None,
    interval: float,
    pacing: Pacing,
    report: Callable[[dict[str, Any], list[str]], None],
    warn: Callable[[str], None],
) -> WatchEnd:
    """Read the status every `interval` seconds until a final state, a stage rollback, or `timeout` seconds;
    `report` each change. The API's refusals (4xx) end the watch with an error; an unreachable server, a 429 or a
    5xx is retried until the deadline, said once through `warn`."""
    deadline = None if timeout is None else pacing.monotonic() + timeout
    status = read()
    report(status, rollout_changes(None, status))
    # The furthest stage reached: a rollback to the previous stage is told from a pause by the stage going down.
    reached = status
    failing = False
    while True:
        if status["state"] in FINAL_STATES:
            return WatchEnd(exit_for(status), status, status["state"].replace("_", " "))
        if _rolled_back_while_watched(reached, status):
            return WatchEnd(RolloutExit.ROLLED_BACK, status, f"rolled back to {stage_words(status)}")
        if status["stage_index"] > reached["stage_index"] or status["rollout_id"] != reached["rollout_id"]:
            reached = status
        left = None if deadline is None else deadline - pacing.monotonic()
        if left is not None and left <= 0:
            code = exit_for(status)
            what = status["state"] if code is RolloutExit.PAUSED else f"{status['state']}, gates {status['gates']}"
            return WatchEnd(code, status, f"timed out {what.replace('_', ' ')} at {stage_words(status)}")
        pacing.wait(interval if left is None else min(interval, left))
        try:
            latest = read()
        except ApiProblem as problem:
            if problem.status < 500 and problem.status != 429:  # too many requests: later, it may well pass
                raise
            failing = _warn_once(warn, failing, problem)
            continue
        except CommandError as error:  # the server did not answer: it may be restarting; the deadline still holds
            failing = _warn_once(warn, failing, error)
            continue
        if failing:
            warn("reading the status again")
            failing = False
        changes = rollout_changes(status, latest)
        if changes:
            report(latest, changes)
        status = latest


def _warn_once(warn: Callable[[str], None], failing: bool, error: Exception) -> bool:
    if not failing:
        warn(f"cannot read the rollout status ({error}); retrying")
    return True
