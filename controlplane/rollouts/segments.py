"""Rollouts run per segment, decided without a database: a plan's ``per`` (a bounded attribute of the flag's
evaluation context, and its declared values), the segment an operation names, and the guards a segment reads.

    parse_segment("queue=support")              -> SegmentRef("queue", "support")   | InvalidInput
    Segmentation("queue", ("support", ...)).require(ref, flag=, environment=)    -> the value | InvalidInput
    segment_rule_name("ai-fallback-rate", "queue", "support")  -> "ai-fallback-rate-queue-support"

Each segment of a plan is its own rollout (state, stage, bake clock, gates); its guards are the plan's guards scoped
to the segment's events (rules the definitions loader derives, one per guard and segment value, named by
``segment_rule_name``), so one segment's breach rolls back that segment alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from controlplane.catalog.rules import segment_name
from controlplane.errors import InvalidInput

__all__ = [
    "SEGMENT_VALUE",
    "SegmentRef",
    "Segmentation",
    "parse_segment",
    "refuse_segment",
    "segment_rule_name",
    "segment_rule_names",
]

#: What a segment value may be: lowercase words joined by dashes, so a guard scoped to it is a valid rule name.
SEGMENT_VALUE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A segment named by an operator: ``attribute=value``."""

    attribute: str
    value: str

    def __str__(self) -> str:
        return segment_name(self.attribute, self.value)


@dataclass(frozen=True, slots=True)
class Segmentation:
    """A plan's ``per``: the context attribute its rollouts are run per, and the values that are segments."""

    attribute: str
    values: tuple[str, ...]

    def require(self, ref: SegmentRef | None, *, flag: str, environment: str) -> str:
        """The segment value ``ref`` names; InvalidInput when it names none, another attribute or an undeclared
        value."""
        declared = ", ".join(f"{self.attribute}={value}" for value in self.values)
        if ref is None:
            raise InvalidInput(
                "segment-required",
                f"the plan of `{flag}` in {environment} runs per `{self.attribute}`: name the segment ({declared})",
                field="segment",
            )
        if ref.attribute != self.attribute or ref.value not in self.values:
            raise InvalidInput(
                "unknown-segment",
                f"`{ref}` is not a segment of the plan of `{flag}` in {environment}; its segments are {declared}",
                field="segment",
            )
        return ref.value


def parse_segment(text: str | None) -> SegmentRef | None:
    """``attribute=value`` as a ``SegmentRef`` (None for None); InvalidInput when it is not of that shape."""
    if text is None:
        return None
    attribute, equals, value = text.partition("=")
    if not equals or not attribute.strip() or not value.strip():
        raise InvalidInput(
            "invalid-segment", f"segment `{text}` must be written attribute=value, e.g. queue=support", field="segment"
        )
    return SegmentRef(attribute.strip(), value.strip())


def refuse_segment(ref: SegmentRef | None, *, flag: str, environment: str) -> None:
    """Refuse a segment named for a plan that is not run per segment."""
    if ref is not None:
        raise InvalidInput(
            "segment-not-applicable",
            f"the plan of `{flag}` in {environment} is not run per segment: leave out `{ref}`",
            field="segment",
        )


def segment_rule_name(rule: str, attribute: str, value: str) -> str:
    """The name of guard ``rule`` scoped to one segment's events."""
    return f"{rule}-{attribute.replace('_', '-').lower()}-{value}"


def segment_rule_names(guards: Sequence[str], attribute: str, value: str) -> tuple[str, ...]:
    """A stage's guards as one segment reads them."""
    return tuple(segment_rule_name(guard, attribute, value) for guard in guards)
