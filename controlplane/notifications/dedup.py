"""Whether an alert event is sent, recorded as silenced, or dropped: a pure decision per (receiver, alert).

What a receiver last heard about an alert (its ``dedup_key``) is one of three states:

    closed  nothing open: never notified, or the last notified trigger was resolved
    open    a trigger (or rollback) was notified and not resolved since
    muted   the last trigger was silenced, so the receiver never heard of it

    event      closed                      open                         muted
    trigger    send -> open                drop (already notified)      send -> open
               silenced: silence -> muted                               silenced: drop (already recorded)
    rollback   send -> open                send (news on the incident)  send -> open
               silenced: silence -> muted  silenced: silence (stays open) silenced: silence
    resolve    drop (never notified)       send -> closed, even when    silence -> closed
                                           silenced: never leave an     (the receiver never heard of it)
                                           incident open

A rollout step or incident action (``messages.ANNOUNCEMENT_KINDS``) is decided as a trigger of its own key: sent
once, never resolved.

Silences mute notifications only; they never change an alert's state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.notifications.messages import ANNOUNCEMENT_KINDS, AlertEvent

__all__ = ["MATCHER_FIELDS", "Action", "Decision", "Notified", "decide", "notified_state", "silence_matches"]

#: The alert fields a silence may match on, each by equality.
MATCHER_FIELDS = ("rule", "environment", "pipeline", "flag", "severity")


class Notified(enum.StrEnum):
    """What a receiver last heard about an alert."""

    CLOSED = "closed"
    OPEN = "open"
    MUTED = "muted"


class Action(enum.StrEnum):
    """What to do with one event for one receiver."""

    SEND = "send"
    SILENCE = "silence"  # record it as silenced: the delivery log shows it, nobody receives it
    DROP = "drop"  # record nothing: a duplicate, or a resolve of something never notified


@dataclass(frozen=True, slots=True)
class Decision:
    """The action for an event, the receiver's state for that alert afterwards, and why."""

    action: Action
    state: Notified
    reason: str = ""


def decide(kind: str, state: Notified, *, silenced: bool) -> Decision:
    """The decision for an event of ``kind`` when the receiver is in ``state`` (see the module's table)."""
    if kind == "resolve":
        if state is Notified.OPEN:
            return Decision(Action.SEND, Notified.CLOSED)
        if state is Notified.MUTED:
            return Decision(Action.SILENCE, Notified.CLOSED, "the trigger it resolves was silenced and never sent")
        return Decision(Action.DROP, state, "never notified")
    # A rollout step's key names that step alone: seen again, it is the same step told twice.
    once = kind == "trigger" or kind in ANNOUNCEMENT_KINDS
    if once and state is Notified.OPEN:
        return Decision(Action.DROP, state, "already notified")
    if silenced:
        if once and state is Notified.MUTED:
            return Decision(Action.DROP, state, "already recorded as silenced")
        # A silenced rollback on an open incident leaves it open: its resolve must still go out.
        return Decision(Action.SILENCE, Notified.OPEN if state is Notified.OPEN else Notified.MUTED)
    return Decision(Action.SEND, Notified.OPEN)


def notified_state(history: Iterable[tuple[str, bool]]) -> Notified:
    """The state left by a receiver's past events for one alert, given newest first as (kind, was_silenced)."""
    muted = False
    for kind, was_silenced in history:
        if kind == "resolve":
            return Notified.MUTED if muted else Notified.CLOSED
        if not was_silenced:
            return Notified.OPEN
        muted = True
    return Notified.MUTED if muted else Notified.CLOSED


def silence_matches(matchers: Mapping[str, str], event: AlertEvent) -> bool:
    """True when every matcher equals the event's field (an empty matcher set matches nothing)."""
    # An unknown field never matches: a silence must not mute more than it says.
    return bool(matchers) and all(
        name in MATCHER_FIELDS and getattr(event, name) == value for name, value in matchers.items()
    )
