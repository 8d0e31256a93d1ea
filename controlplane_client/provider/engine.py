"""Flag evaluation: a pure function of (compiled flag, context) to a resolution, shared by server and clients.

Order (the same everywhere): a disabled environment serves the off variant (DISABLED); then targeting rules in
order, first match wins (TARGETING_MATCH); then the percentage rollout (SPLIT), for contexts inside its `when`
conditions (a rollout run per segment serves each declared value of its segment attribute that segment's percentage,
and a context without the attribute or with an undeclared value the off variant, DEFAULT, its metadata `detail`
saying why); then the default variant (STATIC when the flag has no rules and no rollout, DEFAULT otherwise).
Reasons and error codes are OpenFeature's vocabulary.

A flag is compiled once per snapshot, not interpreted per call: every resolution it can give (its outcomes) is
built up front, and its targeting becomes ``flag.decide(targeting_key, attributes)``, closures shaped after the flag
that return the index of the outcome in ``flag.outcomes``. ``decide`` reads only the attributes the flag's
conditions name, so a caller holding the targeting key apart from the attributes (an OpenFeature
``EvaluationContext``) passes both as they are; the attribute ``targetingKey`` is the targeting key when there is
one, else the attribute of that name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from controlplane_client.provider.bucketing import hash_limit, unit_hash

__all__ = [
    "TARGETING_KEY",
    "CompiledCondition",
    "CompiledFlag",
    "CompiledRollout",
    "CompiledRule",
    "CompiledSegments",
    "Decide",
    "Match",
    "Resolution",
    "evaluate_flag",
    "flag_not_found",
]

#: The attribute that names the targeting key (OFREP's and flagd's spelling).
TARGETING_KEY = "targetingKey"

#: A test of a context, given as (targeting key or None, attributes).
Match = Callable[[Any, Mapping[str, Any]], bool]
#: A flag's targeting: the index in ``CompiledFlag.outcomes`` of the resolution a context gets.
Decide = Callable[[Any, Mapping[str, Any]], int]


@dataclass(frozen=True, slots=True)
class CompiledCondition:
    """A test on one context attribute (see wire.ConditionOperator for the operators)."""

    attribute: str
    op: str
    value: Any = None
    values: frozenset[Any] = frozenset()

    def predicate(self) -> Match:
        """The condition as a function; a missing attribute satisfies only nothing."""
        return _predicate(self.attribute, self.op, self.value, self.values)


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """Serve ``variant`` when every condition matches."""

    name: str
    conditions: tuple[CompiledCondition, ...]
    variant: str


@dataclass(frozen=True, slots=True)
class CompiledSegments:
    """A rollout run per segment: ``percentages`` holds each declared value of ``attribute`` with its percentage."""

    attribute: str
    percentages: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class CompiledRollout:
    """Serve ``variant`` to ``percentage`` % of contexts (by ``bucket_by``) among those matching ``when``; with
    ``segments``, each segment's own percentage instead of ``percentage``."""

    variant: str
    percentage: float
    bucket_by: str = TARGETING_KEY
    when: tuple[CompiledCondition, ...] = ()
    segments: CompiledSegments | None = None
    threshold: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        # Buckets below this are in (bucketing.in_rollout's comparison, computed once instead of per call).
        object.__setattr__(self, "threshold", round(self.percentage * 1000))


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


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    """Everything needed to evaluate a flag in one environment, nothing else.

    ``outcomes`` and ``decide`` are derived from the other fields when the flag is built (see the module's
    docstring); they take no part in comparisons.
    """

    key: str
    type: str
    variants: Mapping[str, Any]
    off_variant: str
    default_variant: str
    enabled: bool
    rules: tuple[CompiledRule, ...] = ()
    rollout: CompiledRollout | None = None
    revision: int = 0
    outcomes: tuple[Resolution, ...] = field(init=False, compare=False, repr=False)
    decide: Decide = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        outcomes = _Outcomes(self)
        decide = _compile(self, outcomes)
        object.__setattr__(self, "outcomes", tuple(outcomes.built))
        object.__setattr__(self, "decide", decide)

    @property
    def fallthrough_reason(self) -> Reason:
        """STATIC for a flag with nothing dynamic about it, DEFAULT when rules or a rollout were passed over."""
        return Reason.STATIC if not self.rules and self.rollout is None else Reason.DEFAULT


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


def evaluate_flag(flag: CompiledFlag, context: Mapping[str, Any]) -> Resolution:
    """Resolve a flag for a context (a flat mapping; the targeting key under ``targetingKey``)."""
    return flag.outcomes[flag.decide(context.get(TARGETING_KEY), context)]


# --- compilation ------------------------------------------------------------------------------------------------


class _Outcomes:
    """The resolutions of one flag, built as its compilation reaches them; ``add`` returns the new one's index."""

    def __init__(self, flag: CompiledFlag) -> None:
        self._flag = flag
        self.built: list[Resolution] = []

    def add(self, variant: str, reason: Reason, **metadata: str) -> int:
        flag = self._flag
        # Immutable and shared by every context that gets it: callers (the provider's details, the server's
        # encoded OFREP bodies) key their own per-outcome work on it.
        self.built.append(
            Resolution(flag.key, flag.variants[variant], variant, reason, metadata=MappingProxyType(metadata))
        )
        return len(self.built) - 1


def _compile(flag: CompiledFlag, outcomes: _Outcomes) -> Decide:
    if not flag.enabled:
        return _constant(outcomes.add(flag.off_variant, Reason.DISABLED))
    rules = tuple(
        (_all(rule.conditions), outcomes.add(rule.variant, Reason.TARGETING_MATCH, rule=rule.name))
        for rule in flag.rules
    )
    fallthrough = outcomes.add(flag.default_variant, flag.fallthrough_reason)
    return _first_match(rules, _rollout(flag, fallthrough, outcomes))


def _constant(outcome: int) -> Decide:
    def decide(targeting_key: Any, attributes: Mapping[str, Any]) -> int:
        return outcome

    return decide


def _first_match(rules: tuple[tuple[Match, int], ...], otherwise: Decide) -> Decide:
    if not rules:
        return otherwise
    if len(rules) == 1:
        # The usual shape (one rule, then a rollout or the default), without a loop.
        ((matches, matched),) = rules

        def decide_one(targeting_key: Any, attributes: Mapping[str, Any]) -> int:
            return matched if matches(targeting_key, attributes) else otherwise(targeting_key, attributes)

        return decide_one

    def decide(targeting_key: Any, attributes: Mapping[str, Any]) -> int:
        for matches, outcome in rules:
            if matches(targeting_key, attributes):
                return outcome
        return otherwise(targeting_key, attributes)

    return decide


def _rollout(flag: CompiledFlag, fallthrough: int, outcomes: _Outcomes) -> Decide:
    rollout = flag.rollout
    if rollout is None:
        return _constant(fallthrough)
    if rollout.segments is not None:
        split = _segmented(flag, rollout, rollout.segments, fallthrough, outcomes)
    elif rollout.percentage <= 0:
        return _constant(fallthrough)
    else:
        split = _percentage(flag, rollout, rollout.percentage, fallthrough, outcomes)
    if not rollout.when:
        return split
    inside = _all(rollout.when)

    def decide(targeting_key: Any, attributes: Mapping[str, Any]) -> int:
        return split(targeting_key, attributes) if inside(targeting_key, attributes) else fallthrough

    return decide


def _percentage(
    flag: CompiledFlag, rollout: CompiledRollout, percentage: float, fallthrough: int, outcomes: _Outcomes
) -> Decide:
    """Serve the rollout variant to ``percentage`` % of contexts: the split of one rollout, or of one segment."""
    if percentage <= 0:
        return _constant(fallthrough)
    served = outcomes.add(rollout.variant, Reason.SPLIT)
    if percentage >= 100:
        return _constant(served)
    # Below 100% a context without the bucketing attribute cannot be placed: never guess, serve off (the
    # resolution's metadata `detail` says why).
    unplaced = outcomes.add(
        flag.off_variant,
        Reason.DEFAULT,
        detail=f"bucketing attribute `{rollout.bucket_by}` missing: served the off variant",
    )
    passed = outcomes.add(flag.default_variant, Reason.SPLIT)
    return _split(flag.key, rollout.bucket_by, hash_limit(round(percentage * 1000)), served, passed, unplaced)


def _segmented(
    flag: CompiledFlag, rollout: CompiledRollout, segments: CompiledSegments, fallthrough: int, outcomes: _Outcomes
) -> Decide:
    """Serve each segment its own percentage with the one bucketing (the flag key and the unit, never the segment),
    and the off variant to a context that names no declared segment."""
    by_segment = {
        value: _percentage(flag, rollout, percentage, fallthrough, outcomes)
        for value, percentage in segments.percentages
    }
    attribute = segments.attribute
    by_key = attribute == TARGETING_KEY
    declared = ", ".join(value for value, _ in segments.percentages)
    missing = outcomes.add(
        flag.off_variant,
        Reason.DEFAULT,
        detail=f"segment attribute `{attribute}` missing: served the off variant",
    )
    undeclared = outcomes.add(
        flag.off_variant,
        Reason.DEFAULT,
        detail=f"`{attribute}` is not a segment of this rollout ({declared}): served the off variant",
    )

    def decide(targeting_key: Any, attributes: Mapping[str, Any]) -> int:
        value = targeting_key if by_key and targeting_key is not None else attributes.get(attribute)
        if value is None or value == "":
            return missing
        split = by_segment.get(value if type(value) is str else str(value))
        return undeclared if split is None else split(targeting_key, attributes)

    return decide


def _split(flag_key: str, bucket_by: str, limit: int, served: int, passed: int, unplaced: int) -> Decide:
    by_key = bucket_by == TARGETING_KEY

    def decide(targeting_key: Any, attributes: Mapping[str, Any]) -> int:
        unit = targeting_key if by_key and targeting_key is not None else attributes.get(bucket_by)
        if unit is None or unit == "":
            return unplaced
        # hash < limit is bucketing's `bucket(flag_key, unit) < threshold`, without scaling the hash per call.
        return served if unit_hash(flag_key + (unit if type(unit) is str else str(unit))) < limit else passed

    return decide


def _all(conditions: tuple[CompiledCondition, ...]) -> Match:
    predicates = tuple(condition.predicate() for condition in conditions)
    if len(predicates) == 1:
        return predicates[0]

    def match_all(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
        for predicate in predicates:  # noqa: SIM110 - a plain loop: no generator per call on the hot path
            if not predicate(targeting_key, attributes):
                return False
        return True

    return match_all


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _predicate(name: str, op: str, expected: Any, values: frozenset[Any]) -> Match:
    # One closure per operator, each reading its attribute itself: a shared reader would be one more call per test.
    by_key = name == TARGETING_KEY
    if op == "in":

        def is_in(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
            actual = targeting_key if by_key and targeting_key is not None else attributes.get(name)
            # The common case first: `tenant in [...]`. A str is hashable, so no type check is needed for it.
            return actual is not None and (type(actual) is str or _hashable(actual)) and actual in values

        return is_in
    if op == "equals":

        def equals(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
            actual = targeting_key if by_key and targeting_key is not None else attributes.get(name)
            return actual is not None and bool(actual == expected)

        return equals
    if op == "not_in":

        def not_in(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
            actual = targeting_key if by_key and targeting_key is not None else attributes.get(name)
            return actual is not None and not (_hashable(actual) and actual in values)

        return not_in
    if op == "starts_with":

        def starts_with(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
            actual = targeting_key if by_key and targeting_key is not None else attributes.get(name)
            return isinstance(actual, str) and actual.startswith(expected)

        return starts_with
    if op == "exists":

        def exists(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
            actual = targeting_key if by_key and targeting_key is not None else attributes.get(name)
            return actual is not None

        return exists

    def unknown(targeting_key: Any, attributes: Mapping[str, Any]) -> bool:
        return False

    return unknown
