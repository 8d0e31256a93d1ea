"""The incident action's pure core: which environments it reaches, that the state it leaves answers the variant to
every context through the evaluation engine the clients share, and when an undo may restore."""

from __future__ import annotations

from typing import Any

import msgspec

from controlplane.flags.incidents import EnvironmentRecord, incident_scope, overridden_state, undo_verdicts
from controlplane_client.provider.engine import evaluate_flag
from controlplane_client.provider.snapshot import FlagConfig, compile_flag
from controlplane_client.provider.wire import PercentageRollout, TargetingRule

VARIANTS = {"HUMANO": "HUMANO", "COPILOTO": "COPILOTO", "AUTONOMO": "AUTONOMO"}
RULE = {
    "name": "pilot",
    "when": [{"attribute": "tenant", "op": "in", "values": ["acme"]}],
    "variant": "COPILOTO",
}
ROLLOUT = {"variant": "COPILOTO", "percentage": 50.0, "bucket_by": "agent_id", "when": []}


def state(
    enabled: bool = True, default: str = "HUMANO", rules: list[Any] | None = None, rollout: Any = None
) -> dict[str, Any]:
    return {"enabled": enabled, "default_variant": default, "rules": rules or [], "rollout": rollout}


def served(snapshot: dict[str, Any], context: dict[str, Any]) -> str | None:
    rollout = snapshot["rollout"]
    config = FlagConfig(
        key="ai.mode",
        type="string",
        variants=VARIANTS,
        off_variant="HUMANO",
        default_variant=snapshot["default_variant"],
        enabled=snapshot["enabled"],
        rules=msgspec.convert(snapshot["rules"], list[TargetingRule]),
        rollout=msgspec.convert(rollout, PercentageRollout) if rollout else None,
        revision=1,
    )
    return evaluate_flag(compile_flag(config), context).variant


def test_the_overridden_state_serves_the_variant_to_every_context_rules_and_rollout_included() -> None:
    before = state(default="COPILOTO", rules=[RULE], rollout=ROLLOUT)
    after = overridden_state(before, "AUTONOMO")
    contexts = [{"targetingKey": f"a{n}", "agent_id": f"a{n}", "tenant": "acme"} for n in range(200)]
    contexts += [{"tenant": "acme"}, {}]  # no bucketing attribute, no key at all

    assert {served(before, context) for context in contexts} >= {"COPILOTO"}
    assert {served(after, context) for context in contexts} == {"AUTONOMO"}
    # The rollout is kept at 0% (its variant and bucketing visible), not dropped.
    assert after["rollout"] == {**ROLLOUT, "percentage": 0.0}
    assert overridden_state(state(enabled=False), "AUTONOMO") == state(default="AUTONOMO")


SEGMENTED = {
    **ROLLOUT,
    "percentage": 0.0,
    "segments": {"attribute": "queue", "percentages": {"support": 50.0, "sales": 10.0}},
}


def test_the_overridden_state_of_a_rollout_run_per_segment_serves_no_segment() -> None:
    before = state(default="HUMANO", rollout=SEGMENTED)
    after = overridden_state(before, "HUMANO")
    contexts = [
        {"targetingKey": f"a{n}", "agent_id": f"a{n}", **({"queue": queue} if queue else {})}
        for n in range(200)
        for queue in ("support", "sales", "billing", None)
    ]

    # Its overall percentage is 0 already, yet each segment serves its own: the off variant is not everyone's.
    assert {served(before, context) for context in contexts} == {"HUMANO", "COPILOTO"}
    assert {served(after, context) for context in contexts} == {"HUMANO"}
    assert {served(overridden_state(before, "AUTONOMO"), context) for context in contexts} == {"AUTONOMO"}
    assert after["rollout"] == {**ROLLOUT, "percentage": 0.0}
    scope = incident_scope({"production": before}, "HUMANO", off_variant="HUMANO", named=[], all_environments=True)
    assert scope.targets == ("production",), "it does not already serve the off variant to everyone"


def test_all_environments_reaches_those_switched_on_and_names_why_the_others_are_left_alone() -> None:
    states = {
        "dev": state(rules=[RULE]),
        "qa": overridden_state(state(), "HUMANO"),
        "staging": state(enabled=False),
        "production": state(rollout=ROLLOUT),
    }

    scope = incident_scope(states, "HUMANO", off_variant="HUMANO", named=[], all_environments=True)

    assert scope.targets == ("dev", "production")
    assert set(scope.skipped) == {"qa", "staging"}
    assert "already serves `HUMANO`" in scope.skipped["qa"]
    # A switched-off environment is reached only when named, and only if it would serve something else.
    named = incident_scope(states, "AUTONOMO", off_variant="HUMANO", named=["staging"], all_environments=False)
    assert named.targets == ("staging",) and named.skipped == {}
    off = incident_scope(states, "HUMANO", off_variant="HUMANO", named=["staging"], all_environments=False)
    assert off.targets == () and "staging" in off.skipped


def test_undo_restores_what_nobody_changed_since_and_everything_with_force() -> None:
    records = [
        EnvironmentRecord("dev", state(), overridden_state(state(), "AUTONOMO"), revision=4, rollout_paused=False),
        EnvironmentRecord("production", state(), state(), revision=9, rollout_paused=True),
    ]

    plain = undo_verdicts(records, {"dev": 4, "production": 10}, force=False)
    forced = undo_verdicts(records, {"dev": 4, "production": 10}, force=True)

    assert [(v.environment, v.restore, v.changed_since) for v in plain] == [
        ("dev", True, False),
        ("production", False, True),
    ]
    assert [(v.restore, v.changed_since) for v in forced] == [(True, False), (True, True)]
    assert EnvironmentRecord.from_json(records[1].to_json()) == records[1]
