"""The compiled configuration of one environment: what the server evaluates and in-process clients download.

The wire form (``Snapshot``) is plain JSON; ``compile_snapshot`` turns it into the engine's frozen structures.
Server and clients run the same compile step and the same engine, so they cannot disagree.
"""

from __future__ import annotations

from typing import Any

import msgspec

from controlplane_client.provider.engine import (
    CompiledCondition,
    CompiledFlag,
    CompiledRollout,
    CompiledRule,
    CompiledSegments,
)
from controlplane_client.provider.wire import Condition, PercentageRollout, SegmentSplit, TargetingRule

__all__ = ["FlagConfig", "Snapshot", "compile_flag", "compile_snapshot"]


class FlagConfig(msgspec.Struct, frozen=True):
    """One flag as an environment serves it."""

    key: str
    type: str
    variants: dict[str, Any]
    off_variant: str
    default_variant: str
    enabled: bool
    rules: list[TargetingRule]
    rollout: PercentageRollout | None
    revision: int


class Snapshot(msgspec.Struct, frozen=True):
    """Every flag of one environment at one configuration revision."""

    environment: str
    revision: int
    flags: list[FlagConfig]


def _condition(condition: Condition) -> CompiledCondition:
    return CompiledCondition(
        attribute=condition.attribute,
        op=condition.op.value,
        value=condition.value,
        values=frozenset(condition.values or ()),
    )


def compile_flag(config: FlagConfig) -> CompiledFlag:
    """The engine's form of one flag."""
    rollout = config.rollout
    return CompiledFlag(
        key=config.key,
        type=config.type,
        variants=config.variants,
        off_variant=config.off_variant,
        default_variant=config.default_variant,
        enabled=config.enabled,
        rules=tuple(
            CompiledRule(rule.name, tuple(_condition(c) for c in rule.when), rule.variant) for rule in config.rules
        ),
        rollout=None
        if rollout is None
        else CompiledRollout(
            variant=rollout.variant,
            percentage=rollout.percentage,
            bucket_by=rollout.bucket_by,
            when=tuple(_condition(c) for c in rollout.when),
            segments=CompiledSegments(rollout.segments.attribute, tuple(rollout.segments.percentages.items()))
            if isinstance(rollout.segments, SegmentSplit)
            else None,
        ),
        revision=config.revision,
    )


def compile_snapshot(snapshot: Snapshot) -> dict[str, CompiledFlag]:
    """Every flag of a snapshot, compiled, by key."""
    return {config.key: compile_flag(config) for config in snapshot.flags}
