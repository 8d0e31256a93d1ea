"""Flag evaluation: a pure function of (compiled flag, context) to a resolution, shared by server and clients.

Order (the same everywhere): a disabled environment serves the off variant (DISABLED); then targeting rules in
order, first match wins (TARGETING_MATCH); then the percentage rollout (SPLIT), for contexts inside its `when`
conditions; then the default variant (STATIC when the flag has no rules and no rollout, DEFAULT otherwise).
Reasons and error codes are OpenFeature's vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from controlplane_client.provider.bucketing import bucket

__all__ = [
    "CompiledCondition",
    "CompiledFlag",
    "CompiledRollout",
    "CompiledRule",
    "Resolution",
    "evaluate_flag",
    "flag_not_found",
]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A test on one context attribute (see wire.ConditionOperator for the operators)."""

    attribute: str
    op: str
    value: Any = None
    values: frozenset[Any] = frozenset()

    def matches(self, context: Mapping[str, Any]) -> bool:
        """True when the context satisfies the condition; a missing attribute satisfies only nothing."""
        actual = context.get(self.attribute)
        if actual is None:
            return False
        op = self.op
        if op == "in":
            # The common case first: `tenant in [...]`. A str is hashable, so no type check is needed for it.
            return (type(actual) is str or _hashable(actual)) and actual in self.values
        if op == "equals":
            return bool(actual == self.value)
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
    threshold: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Buckets below this are in (bucketing.in_rollout's comparison, computed once instead of per call).
        object.__setattr__(self, "threshold", round(self.percentage * 1000))


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
    resolutions: dict[tuple[str, Reason, str | None], Resolution] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def fallthrough_reason(self) -> Reason:
        """STATIC for a flag with nothing dynamic about it, DEFAULT when rules or a rollout were passed over."""
        return Reason.STATIC if not self.rules and self.rollout is None else Reason.DEFAULT


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


def _serve(flag: CompiledFlag, variant: str, reason: Reason, rule: str | None = None) -> Resolution:
    # Resolutions are immutable and few per flag: build each once, then hand out the same object. This is
    # the evaluation hot path, where constructing a result per call was the largest cost.
    cache_key = (variant, reason, rule)
    cached = flag.resolutions.get(cache_key)
    if cached is None:
        metadata: dict[str, str | int | float | bool] = {}
        if rule is not None:
            metadata["rule"] = rule
        if reason is Reason.DEFAULT and variant == flag.off_variant and flag.rollout is not None:
            metadata["detail"] = f"bucketing attribute `{flag.rollout.bucket_by}` missing: served the off variant"
        cached = Resolution(flag.key, flag.variants[variant], variant, reason, metadata=MappingProxyType(metadata))
        flag.resolutions[cache_key] = cached
    return cached


def _match_all(conditions: tuple[CompiledCondition, ...], context: Mapping[str, Any]) -> bool:
    for condition in conditions:  # noqa: SIM110 - a plain loop: no generator per call on the hot path
        if not condition.matches(context):
            return False
    return True


def evaluate_flag(flag: CompiledFlag, context: Mapping[str, Any]) -> Resolution:
    """Resolve a flag for a context (a flat mapping; the targeting key under ``targetingKey``)."""
    if not flag.enabled:
        return _serve(flag, flag.off_variant, Reason.DISABLED)
    for rule in flag.rules:
        if _match_all(rule.conditions, context):
            return _serve(flag, rule.variant, Reason.TARGETING_MATCH, rule.name)
    rollout = flag.rollout
    if rollout is not None and rollout.percentage > 0 and _match_all(rollout.when, context):
        if rollout.percentage >= 100:
            return _serve(flag, rollout.variant, Reason.SPLIT)
        unit = context.get(rollout.bucket_by)
        if unit is None or unit == "":
            # Below 100% a context without the bucketing attribute cannot be placed: never guess, serve off
            # (the resolution's metadata `detail` says why).
            return _serve(flag, flag.off_variant, Reason.DEFAULT)
        if bucket(flag.key, unit if type(unit) is str else str(unit)) < rollout.threshold:
            return _serve(flag, rollout.variant, Reason.SPLIT)
        return _serve(flag, flag.default_variant, Reason.SPLIT)
    return _serve(flag, flag.default_variant, flag.fallthrough_reason)
