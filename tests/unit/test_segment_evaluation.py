"""A rollout run per segment in the engine, and the loader's checks of a plan's `per`."""

from __future__ import annotations

import msgspec
import pytest
from openfeature.flag_evaluation import Reason

from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import parse_definition
from controlplane_client.provider.bucketing import in_rollout
from controlplane_client.provider.engine import CompiledFlag, CompiledRollout, CompiledSegments, evaluate_flag
from controlplane_client.provider.wire import PercentageRollout, SegmentSplit
from tests.conftest import REPO_ROOT

KEY = "ai.reply.streaming.enabled"


def flag(percentages: dict[str, float]) -> CompiledFlag:
    return CompiledFlag(
        key=KEY,
        type="boolean",
        variants={"on": True, "off": False},
        off_variant="off",
        default_variant="off",
        enabled=True,
        rollout=CompiledRollout(
            variant="on",
            percentage=0.0,
            bucket_by="agent_id",
            segments=CompiledSegments("queue", tuple(percentages.items())),
        ),
    )


@pytest.mark.parametrize("agent", [f"agent-{n}" for n in range(200)])
def test_each_segment_serves_its_own_percentage_with_one_sticky_bucket(agent: str) -> None:
    compiled = flag({"support": 50.0, "sales": 10.0, "billing": 0.0})
    support = evaluate_flag(compiled, {"agent_id": agent, "queue": "support"})
    sales = evaluate_flag(compiled, {"agent_id": agent, "queue": "sales"})
    billing = evaluate_flag(compiled, {"agent_id": agent, "queue": "billing"})
    # The bucket is the flag key and the agent's, never the segment's: the same comparison at each percentage.
    assert support.value is in_rollout(KEY, agent, 50.0)
    assert sales.value is in_rollout(KEY, agent, 10.0)
    assert billing.value is False and billing.reason is Reason.DEFAULT
    assert evaluate_flag(compiled, {"agent_id": agent, "queue": "support"}) == support


def test_a_context_without_the_segment_or_with_an_undeclared_one_gets_off_saying_why() -> None:
    compiled = flag({"support": 100.0})
    missing = evaluate_flag(compiled, {"agent_id": "a"})
    assert (missing.variant, missing.reason) == ("off", Reason.DEFAULT)
    assert "segment attribute `queue` missing" in str(missing.metadata["detail"])
    undeclared = evaluate_flag(compiled, {"agent_id": "a", "queue": "other"})
    assert (undeclared.variant, undeclared.reason) == ("off", Reason.DEFAULT)
    assert "not a segment of this rollout (support)" in str(undeclared.metadata["detail"])
    assert evaluate_flag(compiled, {"agent_id": "a", "queue": "support"}).value is True


SHIPPED = (REPO_ROOT / "definitions" / "ai-assistant.yaml").read_text()
ENVIRONMENTS = ("dev", "qa", "staging", "production")


def test_the_shipped_assistant_definition_scopes_its_production_guards_to_each_queue() -> None:
    definition = parse_definition(SHIPPED, source="ai-assistant.yaml", environments=ENVIRONMENTS)
    scoped = {rule.name: rule for rule in definition.rules if rule.name.startswith("ai-fallback-rate-queue-")}
    assert set(scoped) == {f"ai-fallback-rate-queue-{queue}" for queue in ("support", "billing", "sales")}
    assert scoped["ai-fallback-rate-queue-sales"].where.matches["queue"] == frozenset({"sales"})
    assert scoped["ai-fallback-rate-queue-sales"].environments == ("production",)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("per: {attribute: queue, values: [support, billing, sales]}", None),
        ("per: {attribute: route, values: [support]}", "do not carry the label `route`"),
        ("per: {attribute: queue, values: [support, vip]}", "does not declare the segment values `vip`"),
        ("per: {attribute: queue, values: []}", "declare the values of `queue`"),
        ("per: {attribute: queue, values: [support, support]}", "already declared at values[0]"),
        ("per: {attribute: agent_id, values: [a]}", "is the flag's `bucket_by`"),
    ],
)
def test_the_loader_refuses_a_per_its_guards_cannot_measure(change: str, message: str | None) -> None:
    text = SHIPPED.replace("per: {attribute: queue, values: [support, billing, sales]}", change)
    if message is None:
        parse_definition(text, source="ai-assistant.yaml", environments=ENVIRONMENTS)
        return
    with pytest.raises(DefinitionError) as refused:
        parse_definition(text, source="ai-assistant.yaml", environments=ENVIRONMENTS)
    assert message in str(refused.value)


STREAK_PER_QUEUE = """\
pipeline: desk
flags:
  - key: desk-v2
    type: boolean
    variants: {"on": true, "off": false}
    off_variant: "off"
    rollout_variant: "on"
    bucket_by: agent_id
    plan:
      auto_rollback: true
      environments:
        - environment: production
          per: {attribute: queue, values: [support, sales]}
          stages: [{percentage: 10, guards: [reply-error-streak]}, {percentage: 100}]
events:
  - name: reply
    flag: desk-v2
    outcomes: [ok, error]
    labels:
      queue: {values: [support, sales]}
rules:
  - name: reply-error-streak
    kind: streak
    event: reply
    outcome: error
    op: ">="
    threshold: 3
"""


def test_a_streak_guard_scoped_to_a_segment_counts_only_that_segments_events() -> None:
    from datetime import UTC, datetime, timedelta

    from controlplane.alerting.rules import TailEvent, measure

    definition = parse_definition(STREAK_PER_QUEUE, source="desk.yaml", environments=("staging", "production"))
    rules = {rule.name: rule for rule in definition.rules}
    sales, support = rules["reply-error-streak-queue-sales"], rules["reply-error-streak-queue-support"]
    start = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    # Sales errs three times in a row while support's replies, interleaved, succeed.
    outcomes = [("sales", "error"), ("support", "ok"), ("sales", "error"), ("support", "ok"), ("sales", "error")]
    tail = [
        TailEvent(at=start + timedelta(seconds=n), outcome=outcome, variant="on", labels={"queue": queue})
        for n, (queue, outcome) in enumerate(outcomes)
    ]
    now = start + timedelta(minutes=1)
    assert measure(sales, [], tail, now).breached
    assert not measure(support, [], tail, now).breached
    # The environment's unscoped rule sees the queues mixed: no streak at all.
    assert not measure(rules["reply-error-streak"], [], tail, now).breached


def test_a_rollout_not_run_per_segment_is_sent_without_a_segments_field() -> None:
    """Providers of earlier releases refuse unknown fields: a flag that does not use ``per:`` must reach them as
    before (no ``segments`` key, not even null), through the API, the snapshot and the stored state alike."""

    class EarlierRollout(msgspec.Struct, forbid_unknown_fields=True):
        variant: str
        percentage: float = 0.0
        bucket_by: str = "targetingKey"
        when: list[dict[str, object]] = msgspec.field(default_factory=list)

    plain = PercentageRollout(variant="on", percentage=10.0)
    assert "segments" not in msgspec.to_builtins(plain)
    assert msgspec.json.decode(msgspec.json.encode(plain), type=EarlierRollout).percentage == 10.0
    split = PercentageRollout(
        variant="on", segments=SegmentSplit(attribute="queue", percentages={"support": 50.0, "sales": 10.0})
    )
    assert msgspec.to_builtins(split)["segments"] == {
        "attribute": "queue",
        "percentages": {"support": 50.0, "sales": 10.0},
    }
