"""Per-subject caps end to end, on SQLite and PostgreSQL: events with subjects go through the HTTP ingest API on the
fake clock and the leader's alert tick runs every 10 s. One client's burst of failures fires the uncapped rule but
none of the capped ones (plain ratio, sequential ratio, rate); the same failures spread over many users fire them
all. Replaying a capped rule over the stored windows finds what the live evaluator did, and at any time measures
what capping the evaluator's own reads gives."""

from __future__ import annotations

import hashlib
import random
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.queries import fetch_series, fetch_subjects, subject_reads
from controlplane.alerting.rules import measure
from controlplane.alerting.subjects import cap_summed
from controlplane.catalog.rules import Comparison, Rule, RuleKind, Selector
from controlplane.db import session_scope
from controlplane.guarding.replay import evaluation_times, replay_rule
from controlplane.telemetry.aggregation import labels_key
from controlplane.telemetry.models import TelemetrySubject, TelemetryWindow
from tests.guard_traffic import GuardedTraffic

CAPPED = ("error-rate-capped", "error-rate-sequential-capped", "failures-capped")

DEFINITION = textwrap.dedent(
    """\
    pipeline: checkout
    flags:
      - key: checkout-v2
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
    events:
      - name: http_request
        outcomes: [ok, failed]
        labels:
          status_class: {values: [2xx, 5xx]}
        value: {name: duration, unit: seconds}
    rules:
      - name: error-rate
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.2
        window: 1m
        min_samples: 10
        severity: page
      - name: error-rate-capped
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.2
        window: 1m
        min_samples: 10
        per_subject_cap: 5
        severity: page
      - name: error-rate-sequential-capped
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.05
        confidence: 0.99
        window: 1m
        min_samples: 10
        per_subject_cap: 5
        severity: page
      - name: failures-capped
        kind: rate
        event: http_request
        where: {status_class: [5xx]}
        per: 1m
        op: ">"
        threshold: 10
        window: 1m
        per_subject_cap: 5
        severity: ticket
    """
)

#: Per 10 s tick, (healthy users, users failing, the client's failures): a minute healthy, 90 s of one client's
#: burst (8 failures a tick), a minute healthy, a minute with a third of the users failing, two minutes healthy.
PATTERN = [(18, 0, 0)] * 6 + [(18, 0, 8)] * 9 + [(18, 0, 0)] * 6 + [(12, 6, 0)] * 6 + [(18, 0, 0)] * 12
BURST, SPREAD = range(6, 15), range(21, 27)


def subject(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def request(at: datetime, status_class: str, who: str) -> dict[str, Any]:
    return {
        "type": "http_request",
        "time": at.isoformat(),
        "environment": "production",
        "variant": "on",
        "outcome": "failed" if status_class == "5xx" else "ok",
        "labels": {"status_class": status_class},
        "value": 0.2,
        "subject": subject(who),
    }


@pytest.fixture
def ticks(traffic: GuardedTraffic) -> list[tuple[datetime, dict[str, str]]]:
    """The pattern sent and evaluated tick by tick: each tick's time and every alert's state after it."""
    traffic.apply(DEFINITION)
    seen = []
    for tick, (healthy, failing, burst) in enumerate(PATTERN):
        now = traffic.clock()
        users = [f"user-{tick}-{number}" for number in range(healthy + failing)]  # each user sends once
        events = [request(now, "5xx", user) for user in users[:failing]]
        events += [request(now, "2xx", user) for user in users[failing:]]
        events += [request(now, "5xx", "the-client") for _ in range(burst)]
        traffic.send(events)
        traffic.evaluate()
        alerts = traffic.alerts().items()
        states = {rule: alert["state"] for (rule, environment), alert in alerts if environment == "production"}
        seen.append((now, states))
        traffic.clock.advance(timedelta(seconds=10))
    return seen


def fired(ticks: list[tuple[datetime, dict[str, str]]], rule: str, during: range) -> bool:
    return any(ticks[tick][1][rule] == "firing" for tick in during)


def test_one_clients_burst_fires_only_the_uncapped_rule_and_failures_across_users_fire_them_all(
    ticks: list[tuple[datetime, dict[str, str]]],
) -> None:
    assert fired(ticks, "error-rate", BURST)
    for rule in CAPPED:
        assert not fired(ticks, rule, BURST), (rule, [states[rule] for _, states in ticks])
        assert fired(ticks, rule, SPREAD), (rule, [states[rule] for _, states in ticks])


@pytest.mark.parametrize("rule", CAPPED)
def test_a_replay_of_a_capped_rule_finds_what_the_live_evaluator_did(
    traffic: GuardedTraffic, ticks: list[tuple[datetime, dict[str, str]]], rule: str
) -> None:
    live = [(item["at"], item["to_state"]) for item in traffic.history(rule)]

    response = traffic.client.post(
        "/api/v1/guards/replay",
        headers=traffic.viewer,
        json={
            "rule": rule,
            "environment": "production",
            "from": ticks[0][0].isoformat(),
            "to": ticks[-1][0].isoformat(),
        },
    )

    assert response.status_code == 200, response.text
    replayed = [(item["at"], item["to_state"]) for item in response.json()["transitions"]]
    assert [(datetime.fromisoformat(at), state) for at, state in replayed] == [
        (datetime.fromisoformat(at), state) for at, state in live
    ]
    assert "each subject counted at most 5 times" in response.json()["condition"]


RATIO = Rule(
    name="ratio",
    pipeline="p",
    kind=RuleKind.RATIO,
    event="e",
    op=Comparison.GT,
    threshold="0.1",
    window=timedelta(minutes=1),
    where=Selector({"route": frozenset({"upload"})}),
    numerator=Selector({"status_class": frozenset({"5xx"})}),
    per_subject_cap=6,
)
RULES = [
    RATIO,
    replace(
        RATIO,
        name="rate",
        kind=RuleKind.RATE,
        threshold="20",
        where=Selector({"status_class": frozenset({"5xx"})}),
        numerator=Selector(),
        per_subject_cap=3,
    ),
    replace(
        RATIO,
        name="cohort",
        kind=RuleKind.COHORT,
        threshold="0.02",
        window=timedelta(minutes=2),
        where=Selector(),
        canary_variant="on",
        baseline_variant="off",
        per_subject_cap=10,
    ),
]


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_a_capped_replay_measures_what_capping_the_evaluators_reads_gives_at_every_time(
    session_factory: sessionmaker[Session], rule: Rule
) -> None:
    """Random windows and subjects in two environments, evaluated every 3.7 s off the window grid: each replayed
    measurement is what measuring the evaluator's summed read (``fetch_series``) capped with ``fetch_subjects``
    gives at that time."""
    size = timedelta(seconds=10)
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    draw = random.Random(11)
    windows, subjects = [], []
    for index in range(60):
        for environment in ("production", "staging"):
            for variant in ("on", "off"):
                for route in ("upload", "other"):
                    for status in ("2xx", "5xx"):
                        count = draw.choice([0, 0, 1, 3, 8, 20])
                        if not count:
                            continue
                        series = {
                            "window_start": start + index * size,
                            "pipeline": "p",
                            "event": "e",
                            "environment": environment,
                            "variant": variant,
                            "outcome": "",
                            "labels_key": labels_key({"route": route, "status_class": status}),
                        }
                        windows.append(series | {"count": count, "value_count": 0, "value_sum": 0.0})
                        left = count
                        for who in ("a", "b", "c"):  # some of each series from three heavy subjects, the rest from none
                            taken = draw.randint(0, left)
                            if taken:
                                subjects.append(series | {"subject": subject(who), "count": taken})
                            left -= taken
    with session_scope(session_factory) as session:
        session.execute(insert(TelemetryWindow), windows)
        session.execute(insert(TelemetrySubject), subjects)
    times = evaluation_times(start + timedelta(seconds=1.3), start + timedelta(minutes=11), timedelta(seconds=3.7))

    with session_scope(session_factory) as session:
        steps = replay_rule(session, rule, "production", times, size)
        key = (rule.window, "p", "e", "production")
        expected = []
        capped_any = False
        for now in times:
            summed = fetch_series(session, [rule], now, size).get(key, [])
            counted = fetch_subjects(session, subject_reads([rule], now, size), now).get(("p", "e", "production"), [])
            read = cap_summed(rule, summed, counted, now, window_size=size)
            capped_any = capped_any or read is not summed
            expected.append(measure(rule, read, (), now))

    assert [step.measurement for step in steps] == expected
    assert capped_any  # the subjects do go past the cap
