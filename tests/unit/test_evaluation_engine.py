"""Unit tests for the flag evaluation engine over flags compiled from their wire form (FlagConfig).

Order under test: disabled -> off (DISABLED); rules in order, first match (TARGETING_MATCH); the rollout among
contexts matching its `when` (SPLIT); else the default variant (STATIC without rules and rollout, else DEFAULT).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from controlplane_client.provider.bucketing import in_rollout
from controlplane_client.provider.engine import CompiledCondition, CompiledFlag, evaluate_flag, flag_not_found
from controlplane_client.provider.snapshot import FlagConfig, compile_flag
from controlplane_client.provider.wire import Condition, ConditionOperator, PercentageRollout, TargetingRule

FLAG_KEY = "enable-reference-images"
BOOLEAN_VARIANTS: dict[str, Any] = {"on": True, "off": False}
STRING_VARIANTS: dict[str, Any] = {"off": "none", "control": "v1", "treatment": "v2"}

Op = ConditionOperator


def make_flag(
    *,
    enabled: bool = True,
    rules: list[TargetingRule] | None = None,
    rollout: PercentageRollout | None = None,
    variants: dict[str, Any] | None = None,
    flag_type: str = "boolean",
    off_variant: str = "off",
    default_variant: str = "off",
    key: str = FLAG_KEY,
) -> CompiledFlag:
    """A flag compiled the way the server and in-process clients compile it."""
    return compile_flag(
        FlagConfig(
            key=key,
            type=flag_type,
            variants=dict(BOOLEAN_VARIANTS if variants is None else variants),
            off_variant=off_variant,
            default_variant=default_variant,
            enabled=enabled,
            rules=list(rules or []),
            rollout=rollout,
            revision=7,
        )
    )


def rule(name: str, variant: str, *conditions: Condition) -> TargetingRule:
    return TargetingRule(name=name, when=list(conditions), variant=variant)


def equals(attribute: str, value: str | int | float | bool) -> Condition:
    return Condition(attribute=attribute, op=Op.EQUALS, value=value)


def string_flag(**kwargs: Any) -> CompiledFlag:
    """A string flag whose off (`none`), default (`v1`) and rollout (`v2`) values are all different."""
    return make_flag(variants=STRING_VARIANTS, flag_type="string", default_variant="control", **kwargs)


# --- disabled ---------------------------------------------------------------------------------------------------


def test_disabled_flag_serves_off_variant_with_reason_disabled() -> None:
    flag = make_flag(
        enabled=False,
        default_variant="on",
        rules=[rule("everyone-beta", "on", equals("plan", "beta"))],
        rollout=PercentageRollout(variant="on", percentage=100),
    )

    resolution = evaluate_flag(flag, {"targetingKey": "user-1", "plan": "beta"})

    assert resolution.key == FLAG_KEY
    assert resolution.variant == "off"
    assert resolution.value is False
    assert resolution.reason == Reason.DISABLED
    assert resolution.error_code is None


# --- rules ------------------------------------------------------------------------------------------------------


def test_first_matching_rule_wins_with_its_name_in_metadata() -> None:
    flag = string_flag(
        rules=[
            rule("internal", "treatment", equals("email_domain", "example.com")),
            rule("beta", "off", equals("plan", "beta")),
        ]
    )

    both = evaluate_flag(flag, {"email_domain": "example.com", "plan": "beta"})
    second_only = evaluate_flag(flag, {"email_domain": "other.org", "plan": "beta"})

    assert (both.variant, both.value, both.reason) == ("treatment", "v2", Reason.TARGETING_MATCH)
    assert both.metadata == {"rule": "internal"}
    assert (second_only.variant, second_only.value, second_only.reason) == ("off", "none", Reason.TARGETING_MATCH)
    assert second_only.metadata == {"rule": "beta"}


def test_rule_matches_only_when_every_condition_matches() -> None:
    flag = make_flag(rules=[rule("beta-gpu", "on", equals("plan", "beta"), equals("queue", "gpu"))])

    assert evaluate_flag(flag, {"plan": "beta", "queue": "gpu"}).reason == Reason.TARGETING_MATCH
    partial = evaluate_flag(flag, {"plan": "beta", "queue": "cpu"})
    assert (partial.variant, partial.reason) == ("off", Reason.DEFAULT)


def test_matching_rule_takes_precedence_over_the_rollout() -> None:
    flag = string_flag(
        rules=[rule("opt-out", "control", equals("opt_out", True))],
        rollout=PercentageRollout(variant="treatment", percentage=100),
    )

    resolution = evaluate_flag(flag, {"targetingKey": "user-1", "opt_out": True})

    assert (resolution.variant, resolution.reason) == ("control", Reason.TARGETING_MATCH)
    assert resolution.metadata == {"rule": "opt-out"}


def test_rules_without_a_match_serve_default_variant_with_reason_default() -> None:
    flag = string_flag(rules=[rule("beta", "treatment", equals("plan", "beta"))])

    resolution = evaluate_flag(flag, {"targetingKey": "user-1", "plan": "free"})

    assert (resolution.variant, resolution.value, resolution.reason) == ("control", "v1", Reason.DEFAULT)
    assert resolution.metadata == {}


# --- operators --------------------------------------------------------------------------------------------------

OPERATOR_CASES: list[tuple[Condition, Any, bool]] = [
    (equals("plan", "beta"), "beta", True),
    (equals("plan", "beta"), "Beta", False),
    (equals("plan", "beta"), "beta-2", False),
    (equals("tier", 3), 3, True),
    (equals("tier", 3), 4, False),
    (equals("tier", 3), "3", False),
    (equals("ratio", 0.5), 0.5, True),
    (equals("internal", True), True, True),
    (equals("internal", True), False, False),
    (Condition(attribute="region", op=Op.IN, values=["eu-west", "eu-north"]), "eu-north", True),
    (Condition(attribute="region", op=Op.IN, values=["eu-west", "eu-north"]), "us-east", False),
    (Condition(attribute="region", op=Op.IN, values=["eu-west", "eu-north"]), ["eu-west"], False),
    (Condition(attribute="tier", op=Op.IN, values=[1, 2]), 2, True),
    (Condition(attribute="tier", op=Op.IN, values=[1, 2]), "2", False),
    (Condition(attribute="region", op=Op.NOT_IN, values=["cn-north"]), "eu-west", True),
    (Condition(attribute="region", op=Op.NOT_IN, values=["cn-north"]), "cn-north", False),
    (Condition(attribute="tier", op=Op.NOT_IN, values=[1, 2]), 3, True),
    (Condition(attribute="tier", op=Op.NOT_IN, values=[1, 2]), 1, False),
    (Condition(attribute="email", op=Op.STARTS_WITH, value="admin@"), "admin@example.com", True),
    (Condition(attribute="email", op=Op.STARTS_WITH, value="admin@"), "user@example.com", False),
    (Condition(attribute="email", op=Op.STARTS_WITH, value="admin@"), "xadmin@example.com", False),
    (Condition(attribute="build", op=Op.STARTS_WITH, value="12"), 123, False),
    (Condition(attribute="agent_id", op=Op.EXISTS), "agent-7", True),
    (Condition(attribute="agent_id", op=Op.EXISTS), 0, True),
    (Condition(attribute="agent_id", op=Op.EXISTS), False, True),
    (Condition(attribute="agent_id", op=Op.EXISTS), "", True),
    (Condition(attribute="agent_id", op=Op.EXISTS), {"nested": 1}, True),
]


@pytest.mark.parametrize(
    ("condition", "actual", "matches"),
    OPERATOR_CASES,
    ids=[f"{c.op.value}-{c.value if c.values is None else c.values}-{a!r}" for c, a, _ in OPERATOR_CASES],
)
def test_operator_decides_whether_the_rule_matches(condition: Condition, actual: Any, matches: bool) -> None:
    flag = make_flag(rules=[rule("r", "on", condition)])

    resolution = evaluate_flag(flag, {"targetingKey": "user-1", condition.attribute: actual})

    if matches:
        assert (resolution.variant, resolution.value, resolution.reason) == ("on", True, Reason.TARGETING_MATCH)
        assert resolution.metadata == {"rule": "r"}
    else:
        assert (resolution.variant, resolution.value, resolution.reason) == ("off", False, Reason.DEFAULT)


EVERY_OPERATOR = [
    equals("plan", "beta"),
    Condition(attribute="plan", op=Op.IN, values=["beta"]),
    Condition(attribute="plan", op=Op.NOT_IN, values=["beta"]),
    Condition(attribute="plan", op=Op.STARTS_WITH, value="b"),
    Condition(attribute="plan", op=Op.EXISTS),
]


@pytest.mark.parametrize("condition", EVERY_OPERATOR, ids=[c.op.value for c in EVERY_OPERATOR])
@pytest.mark.parametrize(
    "context",
    [{}, {"targetingKey": "user-1"}, {"targetingKey": "user-1", "plan": None}],
    ids=["empty", "attribute-missing", "attribute-none"],
)
def test_condition_on_missing_or_none_attribute_never_matches(condition: Condition, context: dict[str, Any]) -> None:
    flag = make_flag(rules=[rule("r", "on", condition)])

    resolution = evaluate_flag(flag, context)

    assert (resolution.variant, resolution.reason) == ("off", Reason.DEFAULT)


# --- rollout ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("context", [{}, {"plan": "free"}, {"targetingKey": None}])
def test_full_rollout_serves_rollout_variant_with_split_even_without_targeting_key(context: dict[str, Any]) -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=100))

    resolution = evaluate_flag(flag, context)

    assert (resolution.variant, resolution.value, resolution.reason) == ("treatment", "v2", Reason.SPLIT)
    assert resolution.error_code is None


@pytest.mark.parametrize("context", [{}, {"targetingKey": None}, {"targetingKey": ""}, {"plan": "beta"}])
@pytest.mark.parametrize("percentage", [0.001, 50, 99.999])
def test_partial_rollout_without_bucketing_attribute_serves_off_with_detail(
    context: dict[str, Any], percentage: float
) -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=percentage))

    resolution = evaluate_flag(flag, context)

    assert (resolution.variant, resolution.value, resolution.reason) == ("off", "none", Reason.DEFAULT)
    assert resolution.error_code is None
    detail = resolution.metadata["detail"]
    assert isinstance(detail, str)
    assert "`targetingKey`" in detail
    assert "missing" in detail


def test_partial_rollout_by_custom_attribute_names_that_attribute_when_missing() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=50, bucket_by="agent_id"))

    resolution = evaluate_flag(flag, {"targetingKey": "user-1"})

    assert (resolution.variant, resolution.reason) == ("off", Reason.DEFAULT)
    detail = resolution.metadata["detail"]
    assert isinstance(detail, str)
    assert "`agent_id`" in detail


def test_zero_rollout_serves_default_variant_to_everyone_even_without_targeting_key() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=0))

    for context in ({}, {"targetingKey": "user-1"}, {"targetingKey": "user-2"}):
        resolution = evaluate_flag(flag, context)
        assert (resolution.variant, resolution.reason) == ("control", Reason.DEFAULT)
        assert resolution.metadata == {}


def test_partial_rollout_splits_by_targeting_key_exactly_as_in_rollout() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=30))
    served = {"treatment": 0, "control": 0}

    for i in range(2_000):
        key = f"user-{i}"
        resolution = evaluate_flag(flag, {"targetingKey": key})
        expected = "treatment" if in_rollout(FLAG_KEY, key, 30) else "control"
        assert (resolution.variant, resolution.reason) == (expected, Reason.SPLIT), key
        served[expected] += 1

    assert served["treatment"] > 0
    assert served["control"] > 0


def test_rollout_when_restricts_the_rollout_to_one_queue() -> None:
    flag = string_flag(
        rollout=PercentageRollout(variant="treatment", percentage=100, when=[equals("queue", "gpu-a100")])
    )

    inside = evaluate_flag(flag, {"targetingKey": "user-1", "queue": "gpu-a100"})
    assert (inside.variant, inside.reason) == ("treatment", Reason.SPLIT)

    for outside_context in (
        {"targetingKey": "user-1", "queue": "cpu"},
        {"targetingKey": "user-1", "queue": None},
        {"targetingKey": "user-1"},
        {},
    ):
        outside = evaluate_flag(flag, outside_context)
        assert (outside.variant, outside.value, outside.reason) == ("control", "v1", Reason.DEFAULT), outside_context


def test_partial_rollout_outside_its_when_serves_default_even_without_bucketing_attribute() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=50, when=[equals("queue", "gpu")]))

    resolution = evaluate_flag(flag, {"queue": "cpu"})

    assert (resolution.variant, resolution.reason) == ("control", Reason.DEFAULT)
    assert "detail" not in resolution.metadata


def test_partial_rollout_inside_its_when_splits_by_targeting_key() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=50, when=[equals("queue", "gpu")]))

    for i in range(500):
        key = f"user-{i}"
        resolution = evaluate_flag(flag, {"targetingKey": key, "queue": "gpu"})
        expected = "treatment" if in_rollout(FLAG_KEY, key, 50) else "control"
        assert (resolution.variant, resolution.reason) == (expected, Reason.SPLIT), key


def test_rollout_bucketed_by_agent_id_matches_in_rollout_on_agent_id_not_targeting_key() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=25, bucket_by="agent_id"))
    disagreements_with_targeting_key = 0

    for i in range(2_000):
        agent_id = f"agent-{i}"
        resolution = evaluate_flag(flag, {"targetingKey": "shared-user", "agent_id": agent_id})
        expected = "treatment" if in_rollout(FLAG_KEY, agent_id, 25) else "control"
        assert (resolution.variant, resolution.reason) == (expected, Reason.SPLIT), agent_id
        disagreements_with_targeting_key += expected != (
            "treatment" if in_rollout(FLAG_KEY, "shared-user", 25) else "control"
        )

    # Every context has the same targetingKey, yet the answers differ: agent_id decides, not targetingKey.
    assert disagreements_with_targeting_key > 0


def test_rollout_bucketed_by_a_numeric_attribute_uses_its_decimal_string() -> None:
    flag = string_flag(rollout=PercentageRollout(variant="treatment", percentage=40, bucket_by="agent_id"))

    for agent_id in range(500):
        by_number = evaluate_flag(flag, {"agent_id": agent_id})
        by_string = evaluate_flag(flag, {"agent_id": str(agent_id)})
        expected = "treatment" if in_rollout(FLAG_KEY, str(agent_id), 40) else "control"
        assert by_number.variant == by_string.variant == expected, agent_id


def test_the_default_variant_outside_the_rollout_has_no_detail_even_when_it_is_the_off_variant() -> None:
    # The detail says the bucketing attribute is missing: it belongs to that outcome only, not to the default
    # variant served at 0% or outside `when`, whichever variant that is.
    zero = make_flag(default_variant="off", rollout=PercentageRollout(variant="on", percentage=0))
    gpu_only = make_flag(
        default_variant="off", rollout=PercentageRollout(variant="on", percentage=50, when=[equals("queue", "gpu")])
    )

    for flag in (zero, gpu_only):
        resolution = evaluate_flag(flag, {"targetingKey": "user-1", "queue": "cpu"})
        assert (resolution.variant, resolution.reason) == ("off", Reason.DEFAULT)
        assert resolution.metadata == {}
    unplaced = evaluate_flag(gpu_only, {"queue": "gpu"})
    assert (unplaced.variant, unplaced.reason) == ("off", Reason.DEFAULT)
    assert "detail" in unplaced.metadata


def test_contexts_with_the_same_outcome_get_the_same_resolution_object() -> None:
    flag = string_flag(rules=[rule("beta", "treatment", equals("plan", "beta"))])

    first = evaluate_flag(flag, {"targetingKey": "user-1", "plan": "beta"})

    assert evaluate_flag(flag, {"targetingKey": "user-2", "plan": "beta"}) is first
    assert first in flag.outcomes


# --- sticky cohorts: the answers users had stay theirs -------------------------------------------------------------

#: The users among user-00000 .. user-00299 that bench/evaluation.py's flag (new-checkout, 10% by targetingKey)
#: served `on`, as computed before rollouts were compiled; any change here moves users between cohorts.
NEW_CHECKOUT_IN_AT_10_PERCENT = [
    *(15, 20, 41, 75, 90, 100, 120, 123, 133, 154, 159, 163, 178, 181, 182, 188),
    *(205, 206, 223, 237, 262, 263, 266, 272, 274, 285),
]


def test_the_users_a_rollout_served_before_it_was_compiled_are_served_still() -> None:
    flag = make_flag(key="new-checkout", rollout=PercentageRollout(variant="on", percentage=10))

    served = [i for i in range(300) if evaluate_flag(flag, {"targetingKey": f"user-{i:05d}"}).variant == "on"]

    assert served == NEW_CHECKOUT_IN_AT_10_PERCENT


@pytest.mark.parametrize(
    ("flag_key", "unit", "bucket"),
    [
        ("new-checkout", "user-00015", 7165),
        ("flag-é", "ü", 72171),
        ("flag-é", "用户-1", 1903),
        ("flag-é", "emoji-🚀", 14835),
        ("flag-é", "user-\ud800", 64964),
        ("new-checkout", 42, 77435),
        ("new-checkout", True, 67739),
        ("new-checkout", 1.5, 25086),
    ],
)
def test_a_unit_is_in_the_rollout_from_one_bucket_past_its_own(flag_key: str, unit: Any, bucket: int) -> None:
    # The buckets were computed before rollouts were compiled; the boundary pins each one exactly.
    def served_at(percentage: float) -> str | None:
        rollout = PercentageRollout(variant="on", percentage=percentage, bucket_by="unit")
        return evaluate_flag(make_flag(key=flag_key, rollout=rollout), {"unit": unit}).variant

    assert served_at(bucket / 1000) == "off"
    assert served_at((bucket + 1) / 1000) == "on"


# --- static and declared values ---------------------------------------------------------------------------------


def test_flag_without_rules_or_rollout_serves_default_variant_with_reason_static() -> None:
    flag = string_flag()

    for context in ({}, {"targetingKey": "user-1", "plan": "beta"}):
        resolution = evaluate_flag(flag, context)
        assert (resolution.variant, resolution.value, resolution.reason) == ("control", "v1", Reason.STATIC)
        assert resolution.error_code is None
        assert resolution.metadata == {}


@pytest.mark.parametrize(
    ("flag_type", "variants"),
    [
        ("string", {"off": "", "a": "reference-images-v2", "b": "ünïcødé"}),
        ("number", {"off": 0, "a": 0.25, "b": 3}),
        ("number", {"off": 0.0, "a": 1.0, "b": -2.5}),
        ("object", {"off": {}, "a": {"model": "m-1", "limits": {"rpm": 60, "burst": 1.5}}, "b": {"list": [1, "x"]}}),
        ("boolean", {"off": False, "a": True, "b": False}),
    ],
)
def test_variant_values_come_back_exactly_as_declared(flag_type: str, variants: dict[str, Any]) -> None:
    flag = make_flag(
        flag_type=flag_type,
        variants=variants,
        default_variant="a",
        rules=[rule("pick-b", "b", equals("pick", "b"))],
    )

    for context, variant in (({}, "a"), ({"pick": "b"}, "b")):
        resolution = evaluate_flag(flag, context)
        assert resolution.variant == variant
        assert resolution.value == variants[variant]
        assert type(resolution.value) is type(variants[variant])

    disabled = evaluate_flag(make_flag(flag_type=flag_type, variants=variants, enabled=False), {})
    assert disabled.value == variants["off"]
    assert type(disabled.value) is type(variants["off"])


def test_number_variant_declared_as_float_stays_float() -> None:
    flag = make_flag(flag_type="number", variants={"off": 0.0, "on": 1.0}, default_variant="on")

    value = evaluate_flag(flag, {}).value

    assert isinstance(value, float)
    assert value == 1.0


def test_flag_not_found_is_an_error_with_code_flag_not_found() -> None:
    resolution = flag_not_found("no-such-flag")

    assert resolution.key == "no-such-flag"
    assert resolution.reason == Reason.ERROR
    assert resolution.error_code == ErrorCode.FLAG_NOT_FOUND
    assert resolution.value is None
    assert resolution.variant is None
    assert resolution.error_message is not None
    assert "no-such-flag" in resolution.error_message


def test_evaluation_with_a_lone_surrogate_targeting_key_returns_a_resolution() -> None:
    code = (
        "from controlplane_client.provider.engine import evaluate_flag\n"
        "from controlplane_client.provider.snapshot import FlagConfig, compile_flag\n"
        "from controlplane_client.provider.wire import PercentageRollout\n"
        "flag = compile_flag(FlagConfig(key='f', type='boolean', variants={'on': True, 'off': False},\n"
        "    off_variant='off', default_variant='off', enabled=True, rules=[],\n"
        "    rollout=PercentageRollout(variant='on', percentage=50), revision=1))\n"
        "print(evaluate_flag(flag, {'targetingKey': 'user-\\ud800'}).variant)\n"
    )

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, (result.returncode, result.stderr[-500:])
    assert result.stdout.strip() in {"on", "off"}


# --- property: evaluation never raises, and decides as the order above read one step at a time -------------------

ATTRIBUTES = ["targetingKey", "agent_id", "queue", "plan", "tier"]
VARIANT_NAMES = sorted(STRING_VARIANTS)
# Surrogate-free text (utf-8 encodable); lone surrogates have their own subprocess test above.
TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
SCALARS = st.one_of(
    TEXT,
    st.sampled_from(["beta", "gpu", "user-1", "agent-7", ""]),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
)
CONTEXT_VALUES = st.recursive(
    st.none() | SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    attribute = draw(st.sampled_from(ATTRIBUTES))
    op = draw(st.sampled_from(list(ConditionOperator)))
    if op in (Op.IN, Op.NOT_IN):
        return Condition(attribute=attribute, op=op, values=draw(st.lists(SCALARS, min_size=1, max_size=3)))
    if op is Op.EQUALS:
        return Condition(attribute=attribute, op=op, value=draw(SCALARS))
    if op is Op.STARTS_WITH:
        return Condition(attribute=attribute, op=op, value=draw(TEXT))
    return Condition(attribute=attribute, op=op)


@st.composite
def flags(draw: st.DrawFn) -> CompiledFlag:
    variant = st.sampled_from(VARIANT_NAMES)
    rules = draw(
        st.lists(
            st.builds(
                TargetingRule,
                name=TEXT.filter(bool),
                when=st.lists(conditions(), min_size=1, max_size=2),
                variant=variant,
            ),
            max_size=3,
        )
    )
    rollout = draw(
        st.none()
        | st.builds(
            PercentageRollout,
            variant=variant,
            percentage=st.floats(0, 100) | st.sampled_from([0, 0.001, 50, 100]),
            bucket_by=st.sampled_from(ATTRIBUTES),
            when=st.lists(conditions(), max_size=2),
        )
    )
    return make_flag(
        variants=STRING_VARIANTS,
        flag_type="string",
        enabled=draw(st.booleans()),
        default_variant=draw(variant),
        rules=rules,
        rollout=rollout,
        key=draw(st.sampled_from([FLAG_KEY, "new-checkout", "x"])),
    )


def _holds(condition: CompiledCondition, context: Mapping[str, Any]) -> bool:
    actual = context.get(condition.attribute)
    if actual is None:
        return False
    hashable = isinstance(actual, str | int | float | bool)
    if condition.op == "in":
        return hashable and actual in condition.values
    if condition.op == "not_in":
        return not (hashable and actual in condition.values)
    if condition.op == "equals":
        return bool(actual == condition.value)
    if condition.op == "starts_with":
        return isinstance(actual, str) and actual.startswith(condition.value)
    return condition.op == "exists"


def reference(flag: CompiledFlag, context: Mapping[str, Any]) -> tuple[str, Reason, str | None, bool]:
    """(variant, reason, rule name, detail given) by the module's order, interpreted over the flat context."""
    if not flag.enabled:
        return flag.off_variant, Reason.DISABLED, None, False
    for each in flag.rules:
        if all(_holds(condition, context) for condition in each.conditions):
            return each.variant, Reason.TARGETING_MATCH, each.name, False
    rollout = flag.rollout
    if rollout is not None and rollout.percentage > 0 and all(_holds(c, context) for c in rollout.when):
        if rollout.percentage >= 100:
            return rollout.variant, Reason.SPLIT, None, False
        unit = context.get(rollout.bucket_by)
        if unit is None or unit == "":
            return flag.off_variant, Reason.DEFAULT, None, True
        inside = in_rollout(flag.key, str(unit), rollout.percentage)
        return (rollout.variant if inside else flag.default_variant), Reason.SPLIT, None, False
    return flag.default_variant, flag.fallthrough_reason, None, False


@settings(max_examples=200, deadline=None)
@given(
    flag=flags(),
    attributes=st.dictionaries(st.sampled_from(ATTRIBUTES) | TEXT, CONTEXT_VALUES, max_size=6),
    targeting_key=st.none() | TEXT | st.sampled_from(["user-1", "agent-7"]),
)
def test_evaluation_never_raises_and_decides_as_the_reference_for_flat_and_split_contexts(
    flag: CompiledFlag, attributes: dict[str, Any], targeting_key: str | None
) -> None:
    # The provider passes the targeting key apart from the attributes (which may hold a `targetingKey` of their
    # own); the server passes one flat mapping. Both mean the flat context where the targeting key wins.
    flat = attributes if targeting_key is None else {**attributes, "targetingKey": targeting_key}
    expected = reference(flag, flat)

    for resolution in (evaluate_flag(flag, flat), flag.outcomes[flag.decide(targeting_key, attributes)]):
        metadata = dict(resolution.metadata)
        got = (resolution.variant, resolution.reason, metadata.pop("rule", None), "detail" in metadata)
        assert got == expected
        assert resolution.error_code is None
        assert resolution.value == flag.variants[expected[0]]
        assert set(metadata) <= {"detail"}
