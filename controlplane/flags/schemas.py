"""Wire types of flags and their per-environment state (msgspec Structs, validated on decode)."""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from controlplane_client.provider.wire import Condition, ConditionOperator, PercentageRollout, TargetingRule
from controlplane_client.provider.wire import Name as Name
from controlplane_client.provider.wire import Percentage as Percentage

__all__ = [
    "ActiveIncidentRead",
    "Condition",
    "ConditionOperator",
    "EnvironmentStateRead",
    "EnvironmentStateUpdate",
    "FlagCreate",
    "FlagDefinitionError",
    "FlagKind",
    "FlagRead",
    "FlagType",
    "FlagUpdate",
    "HeldRollbackRead",
    "IncidentEnvironmentRead",
    "IncidentRead",
    "IncidentUndo",
    "IncidentUndoRead",
    "PercentageRollout",
    "SetVariantRequest",
    "TargetingRule",
    "check_flag_variants",
    "check_variant_values",
]

FLAG_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
FlagKey = Annotated[str, msgspec.Meta(pattern=FLAG_KEY_PATTERN, description="flag key: letters, digits, . _ -")]


class FlagType(enum.StrEnum):
    """The type of every variant value of a flag."""

    BOOLEAN = "boolean"
    STRING = "string"
    NUMBER = "number"
    OBJECT = "object"


class FlagKind(enum.StrEnum):
    """Why the flag exists, which decides how long it should live."""

    RELEASE = "release"
    KILL_SWITCH = "kill-switch"
    OPERATIONAL = "operational"


class FlagDefinitionError(ValueError):
    """A flag's variants do not fit together; ``field`` names where (variants.<name>, off_variant, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


_VALUE_TYPES: dict[FlagType, tuple[type, ...]] = {
    FlagType.BOOLEAN: (bool,),
    FlagType.STRING: (str,),
    FlagType.NUMBER: (int, float),
    FlagType.OBJECT: (dict,),
}


def check_variant_values(flag_type: FlagType, variants: dict[str, Any]) -> None:
    """Refuse variants whose values do not match the flag type, or whose names are not usable."""
    for name, value in variants.items():
        is_bool_as_number = flag_type is FlagType.NUMBER and isinstance(value, bool)
        if not isinstance(value, _VALUE_TYPES[flag_type]) or is_bool_as_number:
            raise FlagDefinitionError(
                f"variants.{name}", f"variant `{name}` must be a {flag_type.value}, got {type(value).__name__}"
            )
        if not re.match(r"^[A-Za-z0-9._-]{1,64}$", name):
            raise FlagDefinitionError(f"variants.{name}", f"variant name `{name}` must be 1-64 letters, digits, . _ -")


def check_flag_variants(
    flag_type: FlagType, variants: dict[str, Any], off_variant: str, rollout_variant: str | None
) -> None:
    """The one check of a flag's variants, shared by the API and definition files."""
    check_variant_values(flag_type, variants)
    for field, name in (("off_variant", off_variant), ("rollout_variant", rollout_variant)):
        if name is not None and name not in variants:
            declared = ", ".join(f"`{variant}`" for variant in variants)
            raise FlagDefinitionError(field, f"`{field}`: unknown variant `{name}`; this flag declares {declared}")
    if rollout_variant is not None and rollout_variant == off_variant:
        raise FlagDefinitionError(
            "rollout_variant", f"`rollout_variant` is the off variant `{off_variant}`: rolling it out changes nothing"
        )


class FlagCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A new flag. Every environment starts disabled, serving ``off_variant``."""

    key: FlagKey
    type: FlagType
    variants: Annotated[dict[str, Any], msgspec.Meta(min_length=1)]
    off_variant: Name
    rollout_variant: Name | None = None
    description: str = ""
    owner: Annotated[str, msgspec.Meta(max_length=128)] = ""
    kind: FlagKind = FlagKind.RELEASE
    tags: list[Name] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        check_flag_variants(self.type, self.variants, self.off_variant, self.rollout_variant)


class FlagUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Changes to a flag's definition; fields left out keep their value. The type and key never change."""

    variants: dict[str, Any] | None = None
    off_variant: Name | None = None
    rollout_variant: Name | None = None
    description: str | None = None
    owner: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    kind: FlagKind | None = None
    tags: list[Name] | None = None


class EnvironmentStateUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Changes to a flag's state in one environment; fields left out keep their value."""

    enabled: bool | None = None
    default_variant: Name | None = None
    rules: list[TargetingRule] | None = None
    rollout: PercentageRollout | None = None


class ActiveIncidentRead(msgspec.Struct):
    """An incident action in force in an environment: which, the variant it serves to everyone, since when, by whom,
    why, and the command that undoes it."""

    id: int
    variant: str
    since: datetime
    actor: str
    reason: str
    undo: str


class EnvironmentStateRead(msgspec.Struct):
    """A flag's state in one environment; ``incident`` is the incident action in force there (None: none is)."""

    environment: str
    enabled: bool
    default_variant: str
    rules: list[TargetingRule]
    rollout: PercentageRollout | None
    revision: int
    updated_at: datetime
    incident: ActiveIncidentRead | None = None


class FlagRead(msgspec.Struct):
    """A flag with its state in every environment."""

    key: str
    type: FlagType
    variants: dict[str, Any]
    off_variant: str
    rollout_variant: str | None
    description: str
    owner: str
    kind: FlagKind
    tags: list[str]
    revision: int
    created_at: datetime
    updated_at: datetime
    environments: list[EnvironmentStateRead]


# A reason is checked by the use case (`reason-required` names what needs one), not refused here as a malformed body.
IncidentReason = Annotated[str, msgspec.Meta(max_length=2000)]


class SetVariantRequest(msgspec.Struct, forbid_unknown_fields=True):
    """An incident action: serve ``variant`` to everyone in ``environments``, or in every environment where the flag
    is switched on (``all_environments``). ``reason`` is required."""

    variant: Name
    reason: IncidentReason | None = None
    environments: list[Name] = msgspec.field(default_factory=list)
    all_environments: bool = False


class IncidentUndo(msgspec.Struct, forbid_unknown_fields=True):
    """Undo an incident action; ``force`` restores environments changed since it, overwriting those changes."""

    reason: IncidentReason | None = None
    force: bool = False


class HeldRollbackRead(msgspec.Struct):
    """An automatic rollback an incident override held back: the rule that asked for it (``trigger``: ``guard``, the
    control plane's own evaluation, or ``alertmanager``), when it first did, and what it measured."""

    rule: str
    trigger: str
    at: datetime
    why: str


class IncidentEnvironmentRead(msgspec.Struct):
    """What an incident action did to one environment: its serving state before and after, the revision it left,
    whether it paused running rollouts there (and which segments', of a plan run per segment), and the automatic
    rollbacks it held back while in force."""

    environment: str
    before: dict[str, Any]
    after: dict[str, Any]
    revision: int
    rollout_paused: bool
    paused_segments: list[str] = msgspec.field(default_factory=list)
    held: list[HeldRollbackRead] = msgspec.field(default_factory=list)


class IncidentUndoRead(msgspec.Struct):
    """What an undo did to one environment: the state it restored, whether that overwrote a change made since,
    and what became of a rollout the action had paused (empty when it paused none)."""

    environment: str
    restored: dict[str, Any]
    changed_since: bool
    rollout: str


class IncidentRead(msgspec.Struct):
    """An incident action and, once undone, its undo. ``skipped`` (in the answer to the action only) names the
    environments it left alone and why."""

    id: int
    flag: str
    variant: str
    actor: str
    reason: str
    created_at: datetime
    environments: list[IncidentEnvironmentRead]
    undone_at: datetime | None
    undone_by: str | None
    undo_reason: str | None
    undo: list[IncidentUndoRead] | None
    skipped: dict[str, str] = msgspec.field(default_factory=dict)
