"""`POST /api/v1/guards/replay` and `controlplane guards replay`: a known traffic pattern is ingested through the
API on the fake clock while the live evaluator runs every 10 s; replaying the stored windows afterwards finds the
same transitions at the same times, a changed rule from a file fires earlier, and bad requests are refused."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, insert
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.queries import fetch_series
from controlplane.alerting.rules import measure
from controlplane.catalog.rules import Comparison, Rule, RuleKind, Selector
from controlplane.db import session_scope
from controlplane.guarding.replay import MAX_EVALUATIONS, evaluation_times, replay_rule
from controlplane.settings import Settings
from controlplane.telemetry.aggregation import labels_key
from controlplane.telemetry.models import TelemetryWindow
from tests.conftest import FakeClock, problem
from tests.guard_traffic import DEFINITION, GuardedTraffic
from tests.integration.test_cli import run

#: Per 10 s tick, (good, bad) requests: a minute clean, a minute at 10% errors, a minute at 40% (slow, too), then
#: three minutes clean again.
PATTERN = [(20, 0)] * 6 + [(18, 2)] * 6 + [(12, 8)] * 6 + [(20, 0)] * 18
SLOW = range(12, 18)


@pytest.fixture
def traffic(
    client: TestClient[Litestar],
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    make_token: Callable[..., str],
) -> GuardedTraffic:
    return GuardedTraffic(client, clock, engine, settings, make_token)


@pytest.fixture
def ticks(traffic: GuardedTraffic) -> list[datetime]:
    """The pattern ingested and evaluated live, tick by tick; the times the live evaluator ran."""
    traffic.apply()
    return traffic.run(PATTERN, slow=SLOW)


def replay(traffic: GuardedTraffic, **body: Any) -> httpx.Response:
    response: httpx.Response = traffic.client.post("/api/v1/guards/replay", headers=traffic.viewer, json=body)
    return response


def changes(transitions: list[dict[str, Any]]) -> list[tuple[datetime, str]]:
    """(time, new state) of each transition, times parsed (the live history and the replay format them alike)."""
    return [(datetime.fromisoformat(item["at"]), item["to_state"]) for item in transitions]


@pytest.mark.parametrize("rule", ["error-rate", "error-rate-strict", "slow-requests", "error-rate-sequential"])
def test_a_replay_finds_what_the_live_evaluator_did(traffic: GuardedTraffic, ticks: list[datetime], rule: str) -> None:
    live = changes(traffic.history(rule))
    states_before = traffic.alerts()
    assert "firing" in {state for _, state in live}, live  # the pattern does make every rule fire, then clear

    response = replay(
        traffic, rule=rule, environment="production", **{"from": ticks[0].isoformat(), "to": ticks[-1].isoformat()}
    )

    assert response.status_code == 200, response.text
    report = response.json()
    assert changes(report["transitions"]) == live
    assert (report["rule"], report["source"], report["interval_seconds"]) == (rule, "applied", 10)
    assert [datetime.fromisoformat(item["at"]) for item in report["evaluations"]] == ticks
    # Pure replay: no alert state or transition was written.
    assert traffic.history(rule) == traffic.history(rule) and changes(traffic.history(rule)) == live
    assert traffic.alerts() == states_before


def test_the_plain_rule_fires_and_clears_when_its_window_crosses_the_line(
    traffic: GuardedTraffic, ticks: list[datetime]
) -> None:
    report = replay(
        traffic,
        rule="error-rate",
        environment="production",
        **{"from": ticks[0].isoformat(), "to": ticks[-1].isoformat()},
    ).json()

    transitions = report["transitions"]
    # The 1m window holds 7 ticks: 32 errors in 140 requests at tick 14 (> 20%), 24 in 140 at tick 21.
    summary = [(item["change"], item["from_state"], item["to_state"], item["samples"]) for item in transitions]
    assert summary == [
        ("cleared", "new", "inactive", 20),
        ("fired", "inactive", "firing", 140),
        ("cleared", "firing", "inactive", 140),
    ]
    fired, cleared = transitions[1:]
    assert datetime.fromisoformat(fired["at"]) == ticks[14] and fired["value"] == pytest.approx(32 / 140)
    assert datetime.fromisoformat(cleared["at"]) == ticks[21] and "24/140" in cleared["detail"]
    assert len(report["evaluations"]) == len(PATTERN)
    assert {item["state"] for item in report["evaluations"][14:21]} == {"firing"}


def test_a_lower_threshold_from_a_file_fires_earlier(traffic: GuardedTraffic, ticks: list[datetime]) -> None:
    lowered = DEFINITION.replace("    threshold: 0.2\n", "    threshold: 0.05\n")
    period = {"from": ticks[0].isoformat(), "to": ticks[-1].isoformat()}

    applied = replay(traffic, rule="error-rate", environment="production", **period).json()
    changed = replay(
        traffic, rule="error-rate", environment="production", definition=lowered, source="lowered.yaml", **period
    )

    assert changed.status_code == 200, changed.text
    report = changed.json()
    assert report["source"] == "lowered.yaml" and "> 0.05 over 1m" in report["condition"]

    def fired(result: dict[str, Any]) -> datetime:
        return next(datetime.fromisoformat(item["at"]) for item in result["transitions"] if item["change"] == "fired")

    # 8 errors in 140 requests (5.7%) at tick 9, against tick 14 at the applied 20%.
    assert fired(report) == ticks[9] < fired(applied) == ticks[14]
    assert traffic.alerts()[("error-rate", "production")]["condition"].startswith("ratio of http_request")
    assert "> 0.2 over 1m" in traffic.alerts()[("error-rate", "production")]["condition"]


def test_bad_replays_are_refused_with_problem_details(traffic: GuardedTraffic) -> None:
    traffic.apply()
    start = traffic.clock()
    period = {"from": start.isoformat(), "to": (start + timedelta(minutes=5)).isoformat()}

    def refused(status: int, slug: str, **body: Any) -> dict[str, Any]:
        return problem(
            replay(traffic, **{"rule": "error-rate", "environment": "production", **period, **body}), status, slug
        )

    assert "no applied rule `nope`" in refused(404, "rule-not-found", rule="nope")["detail"]
    assert "`mars`" in refused(404, "environment-not-found", environment="mars")["detail"]
    backwards = refused(422, "invalid-replay", **{"from": period["to"], "to": period["from"]})
    assert "must be before `to`" in backwards["detail"] and backwards["field"] == "to"
    assert refused(422, "invalid-replay", **{"from": period["from"], "to": period["from"]})["field"] == "to"
    naive = refused(422, "invalid-replay", **{"from": start.replace(tzinfo=None).isoformat()})
    assert "time zone" in naive["detail"]
    days = {"to": (start + timedelta(days=3)).isoformat(), "interval_seconds": 1}
    too_long = refused(422, "replay-too-long", **days)
    assert too_long["limit"] == MAX_EVALUATIONS and too_long["evaluations"] == 3 * 86400 + 1
    assert f"at most {MAX_EVALUATIONS}" in too_long["detail"]
    assert "cannot be replayed" in refused(422, "cannot-replay", rule="failure-streak")["detail"]

    broken = DEFINITION.replace("    threshold: 0.2\n", "    threshold: high\n")
    bad_file = refused(422, "invalid-definition", definition=broken, source="broken.yaml")
    assert bad_file["field"] == "rules[0].threshold" and bad_file["source"] == "broken.yaml"
    assert bad_file["line"] == DEFINITION.splitlines().index("    threshold: 0.2") + 1
    elsewhere = refused(404, "rule-not-found", rule="nope", definition=DEFINITION, source="checkout.yaml")
    assert "checkout.yaml declares no rule `nope`; it declares error-rate, " in elsewhere["detail"]
    assert "interval_seconds" in str(refused(422, "invalid-body", interval_seconds=0.5)["errors"])
    # 2^53 seconds overflowed the step's timedelta: a 500 until the interval was bounded.
    assert "interval_seconds" in str(refused(422, "invalid-body", interval_seconds=2.0**53)["errors"])
    assert "extra" in str(refused(422, "invalid-body", extra=1)["errors"])
    ingest = traffic.client.post(
        "/api/v1/guards/replay",
        headers=traffic.ingest,
        json={"rule": "error-rate", "environment": "production", **period},
    )
    assert ingest.status_code == 403


@pytest.fixture
def live_traffic(
    live_server: str,
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    make_token: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[GuardedTraffic]:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        traffic = GuardedTraffic(http, clock, engine, settings, make_token)
        monkeypatch.setenv("CONTROLPLANE_URL", live_server)
        monkeypatch.setenv("CONTROLPLANE_TOKEN", traffic.viewer["Authorization"].removeprefix("Bearer "))
        yield traffic


def test_the_command_prints_the_transitions(
    live_traffic: GuardedTraffic, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    live_traffic.apply()
    ticks = live_traffic.run(PATTERN[:26])
    period = ["--env", "production", "--from", ticks[0].isoformat(), "--to", ticks[-1].isoformat()]

    code, out, err = run(capsys, "guards", "replay", "error-rate", *period)
    assert code == 0, err
    assert "error-rate (applied) in production" in out and "26 evaluations every 10 s" in out
    assert "fired" in out and "inactive -> firing" in out and "32/140" in out

    lowered = tmp_path / "lowered.yaml"
    lowered.write_text(DEFINITION.replace("    threshold: 0.2\n", "    threshold: 0.05\n"))
    code, out, err = run(capsys, "guards", "replay", "error-rate", *period, "--file", str(lowered), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["source"] == "lowered.yaml"
    assert [item["change"] for item in report["transitions"]] == ["cleared", "fired", "cleared"]

    code, _, err = run(capsys, "guards", "replay", "nope", *period)
    assert code == 1 and "404 rule-not-found" in err


RULES = [
    Rule(
        name="ratio",
        pipeline="p",
        kind=RuleKind.RATIO,
        event="e",
        op=Comparison.GT,
        threshold="0.1",
        window=timedelta(seconds=45),
        min_samples=5,
        where=Selector({"route": frozenset({"upload"})}),
        numerator=Selector({"status_class": frozenset({"5xx"})}),
    ),
    Rule(
        name="rate",
        pipeline="p",
        kind=RuleKind.RATE,
        event="e",
        op=Comparison.GT,
        threshold="20",
        window=timedelta(minutes=1),
        where=Selector({"status_class": frozenset({"5xx"})}),
    ),
    Rule(
        name="cohort",
        pipeline="p",
        kind=RuleKind.COHORT,
        event="e",
        op=Comparison.GT,
        threshold="0.02",
        window=timedelta(minutes=2),
        numerator=Selector({"status_class": frozenset({"5xx"})}),
        canary_variant="on",
        baseline_variant="off",
    ),
    Rule(name="mean", pipeline="p", kind=RuleKind.MEAN, event="e", op=Comparison.GT, threshold="1.5"),
]


@pytest.mark.parametrize("rule", RULES, ids=[rule.name for rule in RULES])
def test_replay_measures_what_the_evaluator_reads_at_every_time(
    session_factory: sessionmaker[Session], rule: Rule
) -> None:
    """Random windows in two environments, evaluated every 3.7 s off the window grid: each replayed measurement is
    what measuring the evaluator's own read (``fetch_series``, summed in SQL) gives at that time."""
    size = timedelta(seconds=10)
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    draw = random.Random(7)
    rows = [
        {
            "window_start": start + index * size,
            "pipeline": "p",
            "event": "e",
            "environment": environment,
            "variant": variant,
            "outcome": "",
            "labels_key": labels_key({"route": route, "status_class": status}),
            "count": count,
            "value_count": count,
            "value_sum": count * draw.uniform(0.5, 2.5),
        }
        for index in range(60)
        for environment in ("production", "staging")
        for variant in ("on", "off")
        for route in ("upload", "other")
        for status in ("2xx", "5xx")
        if (count := draw.choice([0, 0, 1, 3, 8, 20])) and draw.random() > 0.2
    ]
    with session_scope(session_factory) as session:
        session.execute(insert(TelemetryWindow), rows)
    times = evaluation_times(start + timedelta(seconds=1.3), start + timedelta(minutes=11), timedelta(seconds=3.7))

    with session_scope(session_factory) as session:
        steps = replay_rule(session, rule, "production", times, size)
        key = (rule.window, "p", "e", "production")
        expected = [measure(rule, fetch_series(session, [rule], now, size).get(key, []), (), now) for now in times]

    assert [step.measurement for step in steps] == expected
    assert len({step.status.state for step in steps}) > 1  # the pattern moves the alert
