"""Wire types of a flag's targeting that a snapshot carries: conditions, targeting rules, percentage rollouts.

msgspec Structs, validated on decode. The server's flag API takes and returns the same types
(``controlplane.flags.schemas`` imports them from here), so what an operator writes is what a client decodes.
"""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

__all__ = [
    "Attribute",
    "Condition",
    "ConditionOperator",
    "Name",
    "Percentage",
    "PercentageRollout",
    "SegmentSplit",
    "TargetingRule",
]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Attribute = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Percentage = Annotated[float, msgspec.Meta(ge=0, le=100)]


class ConditionOperator(enum.StrEnum):
    """How a context attribute is compared."""

    EQUALS = "equals"
    IN = "in"
    NOT_IN = "not_in"
    STARTS_WITH = "starts_with"
    EXISTS = "exists"


class Condition(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One test on a context attribute; ``value`` for equals/starts_with, ``values`` for in/not_in."""

    attribute: Attribute
    op: ConditionOperator
    value: str | int | float | bool | None = None
    values: list[str | int | float | bool] | None = None

    def __post_init__(self) -> None:
        needs_values = self.op in (ConditionOperator.IN, ConditionOperator.NOT_IN)
        needs_value = self.op in (ConditionOperator.EQUALS, ConditionOperator.STARTS_WITH)
        if needs_values and not self.values:
            raise ValueError(f"operator `{self.op}` needs a non-empty `values` list")
        if needs_value and self.value is None:
            raise ValueError(f"operator `{self.op}` needs a `value`")
        if self.op is ConditionOperator.STARTS_WITH and not isinstance(self.value, str):
            raise ValueError("operator `starts_with` needs a string `value`")


class TargetingRule(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Serve ``variant`` to contexts matching every condition of ``when``."""

    name: Name
    when: Annotated[list[Condition], msgspec.Meta(min_length=1)]
    variant: Name


class SegmentSplit(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A rollout run per segment: each declared value of ``attribute`` is served its own percentage.

    A context whose ``attribute`` is missing, or is a value not declared here, is served the off variant (the
    resolution's metadata ``detail`` says which); bucketing is the same in every segment, so a user's bucket never
    depends on the segment's percentage, only whether it is under it.
    """

    attribute: Attribute
    percentages: Annotated[dict[str, Percentage], msgspec.Meta(min_length=1)]


class PercentageRollout(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Serve ``variant`` to ``percentage`` % of contexts, bucketed by ``bucket_by``.

    ``when`` restricts who takes part (e.g. one queue); contexts outside it get the default variant. With
    ``segments``, each segment is served its own percentage instead of ``percentage`` (see ``SegmentSplit``).
    """

    variant: Name
    percentage: Percentage = 0.0
    bucket_by: Attribute = "targetingKey"
    when: list[Condition] = msgspec.field(default_factory=list)
    # Left out of the wire entirely unless set (msgspec's UNSET is never encoded): a snapshot of flags that do not
    # run per segment stays readable by providers of earlier releases, whose wire types refuse unknown fields.
    segments: SegmentSplit | msgspec.UnsetType = msgspec.UNSET
