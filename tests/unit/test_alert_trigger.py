"""Unit tests for event-driven guard evaluation's decision core (`guarding.debounce`) and the trigger's one step
(`guarding.trigger.EvaluationTrigger.run_due`), on an injected clock: no thread, no sleep."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise

import pytest

from controlplane.catalog.rules import Comparison, Rule, RuleKind, RuleSource
from controlplane.guarding.debounce import EVERY_RULE, Debouncer, batch_reads, concerning
from controlplane.guarding.trigger import EvaluationTrigger, _payload, _reads, guard_action
from controlplane.telemetry.aggregation import Aggregates, TailItem, WindowAggregate
from controlplane.telemetry.service import PendingBatch

CHECKOUT = frozenset({("checkout", "http_request")})
UPLOADS = frozenset({("uploads", "upload")})
RULE = Rule(
    name="error-rate", pipeline="checkout", kind=RuleKind.RATIO, event="http_request", op=Comparison.GT, threshold="1"
)
WINDOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


# --- which rules a batch concerns -----------------------------------------------------------------------------


def test_a_batch_reads_the_event_types_of_its_series_and_tails_in_its_pipeline() -> None:
    series = {(WINDOW, "http_request", "production", "on", "ok", ""): WindowAggregate()}
    tails: dict[tuple[str, str, str], list[TailItem]] = {("checkout_step", "production", "queue=sales"): []}
    batch = PendingBatch("b1", "checkout", "digest", Aggregates(series=series, tails=tails, events=1))

    assert batch_reads([batch]) == {("checkout", "http_request"), ("checkout", "checkout_step")}


def test_a_trigger_concerns_the_event_rules_reading_its_pairs_and_no_prometheus_rule() -> None:
    concerns = concerning(CHECKOUT)
    assert concerns is not None
    assert concerns(RULE)
    assert not concerns(replace(RULE, event="other"))
    assert not concerns(replace(RULE, pipeline="uploads"))
    assert not concerns(replace(RULE, source=RuleSource.PROMETHEUS, query="up"))
    assert concerning(EVERY_RULE) is None  # every rule, as the tick


# --- the debouncer --------------------------------------------------------------------------------------------


def test_a_trigger_on_a_quiet_replica_is_due_at_once() -> None:
    debouncer = Debouncer(min_gap=0.1)
    assert debouncer.due_at() is None and debouncer.idle

    debouncer.offer(CHECKOUT)

    assert debouncer.due_at() == float("-inf")
    assert debouncer.start(now=5.0) == CHECKOUT
    assert debouncer.running and debouncer.due_at() is None


def test_triggers_during_a_run_coalesce_into_one_follow_up_run_of_their_union() -> None:
    debouncer = Debouncer(min_gap=0.1)
    debouncer.offer(CHECKOUT)
    debouncer.start(now=5.0)

    for _ in range(1000):
        debouncer.offer(CHECKOUT)
    debouncer.offer(UPLOADS)
    assert debouncer.due_at() is None  # never a second evaluation while one runs
    with pytest.raises(RuntimeError):
        debouncer.start(now=5.01)

    debouncer.finish()
    assert debouncer.due_at() == pytest.approx(5.1)  # one queued run, not 1,001
    assert debouncer.start(now=5.1) == CHECKOUT | UPLOADS
    debouncer.finish()
    assert debouncer.idle  # nothing left over: every trigger was covered by a run that started after it


def test_a_burst_starts_at_most_one_run_per_gap() -> None:
    """1,000 batches a second for 2 s, each evaluation taking 10 ms: at most one start per 0.1 s."""
    debouncer = Debouncer(min_gap=0.1)
    starts: list[float] = []
    running_until: float | None = None
    for tick in range(2000):
        now = tick / 1000
        if running_until is not None and now >= running_until:
            debouncer.finish()
            running_until = None
        debouncer.offer(CHECKOUT)
        due = debouncer.due_at()
        if due is not None and due <= now:
            debouncer.start(now)
            starts.append(now)
            running_until = now + 0.01
    assert len(starts) == 20
    assert all(later - earlier >= 0.1 - 1e-9 for earlier, later in pairwise(starts))


def test_a_trigger_for_every_rule_absorbs_the_others_and_an_empty_one_is_nothing() -> None:
    debouncer = Debouncer(min_gap=0.1)
    debouncer.offer(frozenset())
    assert debouncer.idle

    debouncer.offer(CHECKOUT)
    debouncer.offer(EVERY_RULE)
    debouncer.offer(UPLOADS)

    assert debouncer.start(now=1.0) is EVERY_RULE


def test_a_slow_run_delays_the_follow_up_only_to_its_end() -> None:
    debouncer = Debouncer(min_gap=0.1)
    debouncer.offer(CHECKOUT)
    debouncer.start(now=1.0)
    debouncer.offer(UPLOADS)
    debouncer.finish()  # at 1.5, past the gap: the follow-up is due at once

    assert debouncer.due_at() == pytest.approx(1.1)
    assert debouncer.start(now=1.5) == UPLOADS


# --- the trigger's step, and what it does ----------------------------------------------------------------------


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_trigger_acts_once_per_due_run_and_survives_a_failing_one() -> None:
    clock = Monotonic()
    acted: list[object] = []

    def act(reads: object) -> None:
        acted.append(reads)
        if len(acted) == 1:
            raise RuntimeError("database away")

    trigger = EvaluationTrigger(min_gap=0.1, monotonic=clock)
    trigger._act = act  # the thread's action, without the thread
    trigger.offer(CHECKOUT)
    assert trigger.run_due()  # failed, logged, counted
    trigger.offer(UPLOADS)
    assert not trigger.run_due()  # within the gap
    clock.now += 0.1
    assert trigger.run_due()
    assert acted == [CHECKOUT, UPLOADS] and trigger.acted == 2 and trigger.wait_idle(timeout=0)


def test_the_leader_evaluates_and_any_other_replica_tells_it() -> None:
    evaluated: list[object] = []
    told: list[object] = []
    leading = True
    act = guard_action(evaluated.append, lambda: leading, told.append)

    act(CHECKOUT)
    leading = False
    act(UPLOADS)

    assert (evaluated, told) == ([CHECKOUT], [UPLOADS])


def test_what_a_follower_tells_the_leader_reads_back_the_same_or_as_every_rule() -> None:
    assert _reads(_payload(CHECKOUT | UPLOADS)) == CHECKOUT | UPLOADS
    assert _reads(_payload(EVERY_RULE)) is EVERY_RULE
    many = frozenset(("checkout", f"event_{index:04d}") for index in range(1000))
    assert _payload(many) == "" and _reads("") is EVERY_RULE  # over NOTIFY's limit: evaluate every rule
    assert _reads("not json") is EVERY_RULE
