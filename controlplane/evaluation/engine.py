"""Flag evaluation: a pure function of (compiled flag, context) to a resolution, shared by server and clients.

Order (the same everywhere): a disabled environment serves the off variant (DISABLED); then targeting rules in
order, first match wins (TARGETING_MATCH); then the percentage rollout (SPLIT), for contexts inside its `when`
conditions; then the default variant (STATIC when the flag has no rules and no rollout, DEFAULT otherwise).
Reasons and error codes are OpenFeature's vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from controlplane.evaluation.bucketing import in_rollout

__all__ = [
    "CompiledCondition",
    "CompiledFlag",
    "CompiledRollout",
    "CompiledRule",
    "Resolution",
    "evaluate_flag",
    "flag_not_found",
]

_MISSING = object()


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A test on one context attribute (see flags.schemas.ConditionOperator for the operators)."""

    attribute: str
    op: str
    value: Any = None
    values: frozenset[Any] = frozenset()

    def matches(self, context: Mapping[str, Any]) -> bool:
        """True when the context satisfies the condition; a missing attribute satisfies only nothing."""
        actual = context.get(self.attribute, _MISSING)
        if actual is _MISSING or actual is None:
            return False
        op = self.op
        if op == "equals":
            return bool(actual == self.value)
        if op == "in":
            return _hashable(actual) and actual in self.values
        if op == "not_in":
            return not (_hashable(actual) and actual in self.values)
        if op == "starts_with":
            return isinstance(actual, str) and actual.startswith(self.value)
        return op == "exists"


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """Serve ``variant`` when every condition matches."""

    name: str
    conditions: tuple[CompiledCondition, ...]
    variant: str


@dataclass(frozen=True, slots=True)
class CompiledRollout:
    """Serve ``variant`` to ``percentage`` % of contexts (by ``bucket_by``) among those matching ``when``."""

    variant: str
    percentage: float
    bucket_by: str = "targetingKey"
    when: tuple[CompiledCondition, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    """Everything needed to evaluate a flag in one environment, nothing else."""

    key: str
    type: str
    variants: Mapping[str, Any]
    off_variant: str
    default_variant: str
    enabled: bool
    rules: tuple[CompiledRule, ...] = ()
    rollout: CompiledRollout | None = None
    revision: int = 0


@dataclass(frozen=True, slots=True)
class Resolution:
    """The result of evaluating a flag: value, variant, reason, and an error code and message on errors."""

    key: str
    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None = None
    error_message: str | None = None
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)


def flag_not_found(key: str) -> Resolution:
    """The resolution of a key the environment does not have."""
    return Resolution(
        key=key,
        value=None,
        variant=None,
        reason=Reason.ERROR,
        error_code=ErrorCode.FLAG_NOT_FOUND,
        error_message=f"flag `{key}` is not defined in this environment",
    )


def _serve(flag: CompiledFlag, variant: str, reason: Reason, **metadata: str | int | float | bool) -> Resolution:
    return Resolution(flag.key, flag.variants[variant], variant, reason, metadata=metadata)


def evaluate_flag(flag: CompiledFlag, context: Mapping[str, Any]) -> Resolution:
    """Resolve a flag for a context (a flat mapping; the targeting key under ``targetingKey``)."""
    if not flag.enabled:
        return _serve(flag, flag.off_variant, Reason.DISABLED)
    for rule in flag.rules:
        if all(condition.matches(context) for condition in rule.conditions):
            return _serve(flag, rule.variant, Reason.TARGETING_MATCH, rule=rule.name)
    rollout = flag.rollout
    if rollout is not None and rollout.percentage > 0 and all(condition.matches(context) for condition in rollout.when):
        if rollout.percentage >= 100:
            return _serve(flag, rollout.variant, Reason.SPLIT)
        unit = context.get(rollout.bucket_by)
        if unit is None or unit == "":
            # Below 100% a context without the bucketing attribute cannot be placed: never guess, serve off.
            detail = f"bucketing attribute `{rollout.bucket_by}` missing: served the off variant"
            return _serve(flag, flag.off_variant, Reason.DEFAULT, detail=detail)
        if in_rollout(flag.key, str(unit), rollout.percentage):
            return _serve(flag, rollout.variant, Reason.SPLIT)
        return _serve(flag, flag.default_variant, Reason.SPLIT)
    reason = Reason.STATIC if not flag.rules and rollout is None else Reason.DEFAULT
    return _serve(flag, flag.default_variant, reason)
