"""A sequential cohort guard through the served app, on both databases: the flag-on cohort compared with the flag-off
cohort on events both produce. A canary worse than its baseline fires and rolls the flag back; equal cohorts clear
and let the stage be left; cohorts that are not the sizes the rollout's split makes are a sample ratio mismatch,
shown, notified and holding the stage, never a pass and never a rollback."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.settings import Settings
from tests.conftest import FakeClock
from tests.guard_traffic import FLAG, GuardedTraffic, notifying_settings

DEFINITION = textwrap.dedent(
    """\
    pipeline: checkout
    flags:
      - key: checkout-v2
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        plan:
          rollback_policy: "off"
          auto_rollback: true
          environments:
            - environment: production
              stages:
                - {percentage: 10, guards: [errors-on-vs-off]}
                - {percentage: 100, guards: [errors-on-vs-off]}
    events:
      - name: checkout
        outcomes: [ok, failed]
    rules:
      - name: errors-on-vs-off
        description: Failed checkouts, flag-on cohort against flag-off cohort.
        kind: cohort
        event: checkout
        numerator: {outcome: [failed]}
        flag: checkout-v2
        op: ">"
        threshold: 0.02
        confidence: 0.99
        window: 10m
        min_samples: 20
        severity: page
    """
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return notifying_settings(database_url, tmp_path)


@pytest.fixture
def traffic(
    client: TestClient[Litestar], clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]
) -> GuardedTraffic:
    driver = GuardedTraffic(client, clock, engine, settings, make_token)
    driver.apply(DEFINITION)
    started = driver.operate("start")
    assert started.status_code == 200, started.text
    clock.advance(timedelta(seconds=10))  # past the window holding the start: the split's first whole window
    return driver


def checkouts(at: datetime, variant: str, failed: int, ok: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "checkout",
            "time": at.isoformat(),
            "environment": "production",
            "variant": variant,
            "outcome": outcome,
        }
        for outcome, count in (("failed", failed), ("ok", ok))
        for _ in range(count)
    ]


def run(traffic: GuardedTraffic, windows: int, on: tuple[int, int], off: tuple[int, int]) -> None:
    """Per 10-second window, send each cohort's (failed, ok) checkouts, then evaluate once the window closed."""
    for _ in range(windows):
        now = traffic.clock()
        traffic.send(checkouts(now, "on", *on) + checkouts(now, "off", *off))
        traffic.clock.advance(timedelta(seconds=10))
        traffic.evaluate()


def guard(traffic: GuardedTraffic) -> dict[str, Any]:
    return traffic.alerts()[("errors-on-vs-off", "production")]


def test_a_canary_worse_than_its_baseline_fires_and_rolls_the_flag_back(traffic: GuardedTraffic) -> None:
    run(traffic, 8, on=(4, 16), off=(4, 176))  # 20% against about 2%, at the rollout's 10%

    assert traffic.rollout()["state"] == "rolled_back"
    assert guard(traffic)["state"] == "firing"  # it holds: the flag's new state starts a new comparison
    fired = traffic.history("errors-on-vs-off")[-1]
    assert fired["to_state"] == "firing"
    assert "sequential: breach" in fired["detail"] and "consistent with the rollout's 10%" in fired["detail"]
    audit = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    assert len(audit) == 1 and "guard errors-on-vs-off in production" in audit[0]["reason"]


def test_equal_cohorts_clear_and_the_stage_can_be_left(traffic: GuardedTraffic) -> None:
    run(traffic, 30, on=(1, 99), off=(9, 891))  # 1% in both, the canary 10% of the events

    alert = guard(traffic)
    assert alert["state"] == "inactive", alert["detail"]
    assert "sequential: clear" in alert["detail"]
    status = traffic.rollout()
    assert status["gates"] == "clear", status["gates_detail"]
    assert traffic.operate("advance", reason="cohorts alike").status_code == 200


def test_cohorts_of_the_wrong_sizes_are_a_mismatch_that_holds_the_stage_and_is_told(traffic: GuardedTraffic) -> None:
    # Half the events from the canary where the rollout serves it 10% (say the off cohort loses its events), and the
    # canary far worse: still no rollback, since such a comparison is not to be trusted.
    run(traffic, 12, on=(20, 80), off=(2, 98))

    alert = guard(traffic)
    assert alert["state"] == "sample_ratio_mismatch"
    assert "sample ratio mismatch: on holds 50% of the events, the rollout serves it 10%" in alert["detail"]
    status = traffic.rollout()
    assert status["state"] == "running"
    assert status["gates"] != "clear" and "shows a sample ratio mismatch" in status["gates_detail"]
    refused = traffic.operate("advance", reason="looks fine")
    assert refused.status_code == 409, refused.text
    notes = traffic.client.get("/api/v1/notifications", headers=traffic.viewer).json()
    told = [note for note in notes if note["rule"] == "errors-on-vs-off"]
    assert [(note["kind"], note["severity"]) for note in told] == [("trigger", "page")]
    assert "sample ratio mismatch, its cohort comparison is not to be trusted" in str(told[0]["payload"]["body"])
    assert [item["to_state"] for item in traffic.history("errors-on-vs-off")][-1] == "sample_ratio_mismatch"


PER_QUEUE = DEFINITION.replace(
    "        - environment: production\n          stages:",
    "        - environment: production\n          per: {attribute: queue, values: [support, sales]}\n          stages:",
).replace(
    "  - name: checkout\n    outcomes: [ok, failed]",
    "  - name: checkout\n    flag: checkout-v2\n    outcomes: [ok, failed]\n"
    "    labels:\n      queue: {values: [support, sales]}",
)
assert PER_QUEUE.count("per: {attribute: queue") == 1 and PER_QUEUE.count("labels:") == 1


def test_a_guard_scoped_to_one_segment_checks_the_cohort_sizes_against_that_segments_percentage(
    client: TestClient[Litestar], clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]
) -> None:
    traffic = GuardedTraffic(client, clock, engine, settings, make_token)
    traffic.apply(PER_QUEUE)
    for name in ("support", "sales"):
        started = traffic.operate("start", segment=f"queue={name}")
        assert started.status_code == 200, started.text
    clock.advance(timedelta(seconds=10))

    def queue(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return [{**event, "labels": {"queue": name}} for event in events]

    # Support holds the rollout's 10% on its canary; sales half its events, as if its off cohort lost them.
    for _ in range(12):
        now = clock()
        traffic.send(queue(checkouts(now, "on", 1, 19) + checkouts(now, "off", 9, 171), "support"))
        traffic.send(queue(checkouts(now, "on", 20, 80) + checkouts(now, "off", 2, 98), "sales"))
        clock.advance(timedelta(seconds=10))
        traffic.evaluate()

    alerts = traffic.alerts()
    sales = alerts[("errors-on-vs-off-queue-sales", "production")]
    assert sales["state"] == "sample_ratio_mismatch", sales["detail"]
    assert "on holds 50% of the events, the rollout serves it 10%" in sales["detail"]
    support = alerts[("errors-on-vs-off-queue-support", "production")]
    assert "consistent with the rollout's 10%" in support["detail"], support["detail"]
    segments = {s["value"]: s for s in traffic.rollout()["segments"]}
    assert segments["sales"]["state"] == "running", "a mismatch holds the stage, never a rollback"
    assert "shows a sample ratio mismatch" in segments["sales"]["gates_detail"]
