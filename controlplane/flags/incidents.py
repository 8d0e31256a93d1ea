"""Incident actions decided without a database: which environments a "serve this variant to everyone" reaches, the
state it leaves each one in, and whether an undo may restore what was recorded.

    incident_scope(states, variant, off_variant=, named=, all_environments=)  -> Scope(targets, skipped)
    overridden_state(before, variant)                           -> the serving state during the incident
    undo_verdicts(recorded, current_revisions, force=)          -> per environment: restore, or changed since
    undo_command(incident_id)                                   -> the command that undoes it, in words

What "serves to everyone" means, exactly: the environment is switched on, its default variant is the incident's,
its targeting rules are removed and its rollout (if it has one) serves 0% and no segments, so evaluation answers the
default variant to every context: no rule, no percentage, no segment, no missing bucketing or segment attribute can
answer anything else. Every
client (OFREP, the in-process provider, the stream) already evaluates that state: nothing new to learn, and what
``flags show`` prints is what is served. Undo puts back the four recorded fields (enabled, default variant, rules,
rollout) as they were, which is exact because nothing else decides what an environment serves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EnvironmentRecord",
    "Scope",
    "UndoVerdict",
    "incident_scope",
    "overridden_state",
    "paused_rollouts",
    "undo_command",
    "undo_verdicts",
]


def undo_command(incident_id: int) -> str:
    """The command that undoes an incident, as refusals, notifications and ``flags show`` print it."""
    return f"controlplane flags undo {incident_id} --reason TEXT"


@dataclass(frozen=True, slots=True)
class Scope:
    """The environments an incident action changes, and those it leaves alone with why."""

    targets: tuple[str, ...]
    skipped: Mapping[str, str]


def incident_scope(
    states: Mapping[str, Mapping[str, Any]],
    variant: str,
    *,
    off_variant: str,
    named: Sequence[str],
    all_environments: bool,
) -> Scope:
    """Which environments serving ``states`` (environment -> serving snapshot) an action reaches.

    ``all_environments`` reaches every environment where the flag is switched on; a switched-off one already serves
    its off variant to everyone, and an incident never switches on what someone switched off (name it to do so).
    ``named`` environments are reached whatever their state. One already serving ``variant`` to everyone (overridden
    already, or switched off when ``variant`` is the off variant) is left alone: there is nothing to undo there.
    """
    targets: list[str] = []
    skipped: dict[str, str] = {}
    for environment, state in states.items():
        if environment not in named and not (all_environments and state["enabled"]):
            if all_environments:
                skipped[environment] = (
                    "switched off (serves the off variant to everyone); name it with --env to include it"
                )
            continue
        if (not state["enabled"] and variant == off_variant) or state == overridden_state(state, variant):
            skipped[environment] = f"already serves `{variant}` to everyone"
            continue
        targets.append(environment)
    return Scope(targets=tuple(targets), skipped=skipped)


def paused_rollouts(rollout_paused: bool, segments: Sequence[str]) -> str:
    """The rollouts an incident action paused in one environment, in words: ``running rollouts of queue=support,
    queue=sales`` (a plan run per segment), ``running rollout``, or "" when it paused none."""
    if segments:
        return f"running rollouts of {', '.join(segments)}"
    return "running rollout" if rollout_paused else ""


def overridden_state(before: Mapping[str, Any], variant: str) -> dict[str, Any]:
    """The serving state that answers ``variant`` to every context (see the module's docstring)."""
    rollout = before.get("rollout")
    # Kept at 0% rather than dropped: its variant and bucketing stay visible, and a rollout status reads 0% served.
    # Its segments are dropped: a rollout run per segment serves each segment its own percentage, and the off
    # variant to a context outside every segment, whatever its overall percentage says.
    kept = {name: value for name, value in rollout.items() if name != "segments"} if rollout else None
    return {
        "enabled": True,
        "default_variant": variant,
        "rules": [],
        "rollout": {**kept, "percentage": 0.0} if kept is not None else None,
    }


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    """What an incident action did to one environment, as the incident stores it."""

    environment: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    revision: int
    rollout_paused: bool
    #: The segments (``attribute=value``) whose rollouts it paused, of a plan run per segment; empty otherwise.
    paused_segments: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The record as stored in ``FlagIncident.environments``."""
        return {
            "environment": self.environment,
            "before": dict(self.before),
            "after": dict(self.after),
            "revision": self.revision,
            "rollout_paused": self.rollout_paused,
            "paused_segments": list(self.paused_segments),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnvironmentRecord:
        """A stored record."""
        return cls(
            environment=data["environment"],
            before=data["before"],
            after=data["after"],
            revision=int(data["revision"]),
            rollout_paused=bool(data["rollout_paused"]),
            # Absent from incidents recorded before segments were paused one by one.
            paused_segments=tuple(data.get("paused_segments", ())),
        )


@dataclass(frozen=True, slots=True)
class UndoVerdict:
    """Whether undo restores one environment, and whether that overrides a change made since the incident."""

    environment: str
    restore: bool
    changed_since: bool
    recorded_revision: int
    current_revision: int


def undo_verdicts(
    recorded: Sequence[EnvironmentRecord], current_revisions: Mapping[str, int], *, force: bool
) -> list[UndoVerdict]:
    """Per environment: restore it when nobody changed it since the incident (its revision is the one the action
    left), or when ``force`` says to anyway. Every environment moves together: the caller refuses the whole undo
    when any verdict is ``changed_since`` without ``force``."""
    verdicts = []
    for record in recorded:
        current = current_revisions[record.environment]
        changed = current != record.revision
        verdicts.append(
            UndoVerdict(
                environment=record.environment,
                restore=force or not changed,
                changed_since=changed,
                recorded_revision=record.revision,
                current_revision=current,
            )
        )
    return verdicts
