"""Event-driven guard evaluation through the served app, with the periodic tick out of the way (once an hour): the
breaking batch's commit alone rolls the flag back, once, told once; on PostgreSQL a replica that does not lead
tells the leader, which evaluates."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from controlplane.app import create_app
from controlplane.db import create_db_engine
from controlplane.guarding import jobs
from controlplane.guarding.trigger import EvaluationTrigger, LeaderListener
from controlplane.settings import Settings
from tests.conftest import FakeClock
from tests.guard_traffic import FLAG, GuardedTraffic, notifying_settings, requests

WAIT_SECONDS = 10.0  # an upper bound only: each wait ends as soon as the trigger has run


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return replace(
        notifying_settings(database_url, tmp_path),
        scheduler_enabled=True,
        replica_id="leader",
        alert_evaluation_seconds=3600.0,  # the tick never runs within the test
    )


def trigger_of(app: Litestar) -> EvaluationTrigger:
    trigger: EvaluationTrigger = app.state.alert_trigger
    return trigger


def rollbacks_and_pages(traffic: GuardedTraffic) -> tuple[int, int]:
    audit = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    notes = traffic.client.get("/api/v1/notifications", headers=traffic.viewer).json()
    told = [alert for note in notes for alert in note["payload"]["body"]["alerts"] if alert["rule"] == "error-rate"]
    return len(audit), sum(1 for alert in told if alert["kind"] == "trigger")


def test_the_breaking_batch_rolls_back_through_the_trigger_once(app: Litestar, traffic: GuardedTraffic) -> None:
    traffic.apply()
    assert traffic.operate("start").status_code == 200
    trigger = trigger_of(app)

    traffic.send(requests(5, "5xx", traffic.clock()) + requests(95, "2xx", traffic.clock()))  # 5%: under 20%
    assert trigger.wait_acted(1, WAIT_SECONDS)
    assert traffic.rollout()["state"] == "running"

    traffic.send(requests(40, "5xx", traffic.clock()))  # now 45/140: the guard breaks
    assert trigger.wait_acted(2, WAIT_SECONDS)
    assert traffic.rollout()["state"] == "rolled_back"

    # Another batch in the same window, then the tick over the same data: no second rollback, no second page.
    traffic.send(requests(10, "5xx", traffic.clock()))
    assert trigger.wait_acted(3, WAIT_SECONDS)
    traffic.evaluate()
    assert rollbacks_and_pages(traffic) == (1, 1)


@pytest.mark.postgres
def test_a_follower_tells_the_leader_which_evaluates(
    app: Litestar, traffic: GuardedTraffic, settings: Settings, clock: FakeClock
) -> None:
    if not settings.database_url.startswith("postgresql"):
        pytest.skip("replicas share PostgreSQL; SQLite has one replica")
    traffic.apply()
    assert traffic.operate("start").status_code == 200
    listener: LeaderListener = app.state.alert_trigger_listener
    assert listener.listening.wait(WAIT_SECONDS)
    leader = trigger_of(app)

    with follower(settings, clock) as (follower_app, client):
        client.post(
            "/api/v1/events",
            headers=traffic.ingest,
            json={"batch_id": "from-the-follower", "pipeline": "checkout", "events": requests(40, "5xx", clock())},
        ).raise_for_status()
        assert trigger_of(follower_app).wait_acted(1, WAIT_SECONDS)  # told through NOTIFY

    assert leader.wait_acted(1, WAIT_SECONDS)
    assert traffic.rollout()["state"] == "rolled_back"
    assert rollbacks_and_pages(traffic) == (1, 1)


class follower:  # noqa: N801 - used as a context manager, like a function
    """A second replica on the same database that never leads (its scheduler is off): its app and a client."""

    def __init__(self, settings: Settings, clock: FakeClock) -> None:
        self._engine = create_db_engine(settings.database_url)
        self._app = create_app(
            replace(settings, scheduler_enabled=False, replica_id="follower"), engine=self._engine, clock=clock
        )
        self._client = TestClient(self._app)

    def __enter__(self) -> tuple[Litestar, TestClient[Litestar]]:
        self._client.__enter__()
        return self._app, self._client

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)
        self._engine.dispose()


def test_an_evaluation_that_changes_nothing_takes_no_write_transaction(
    app: Litestar, traffic: GuardedTraffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    traffic.apply()
    traffic.send(requests(50, "2xx", traffic.clock()))
    assert trigger_of(app).wait_acted(1, WAIT_SECONDS)  # the triggered run writes the rule's states

    def no_write(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a quiet evaluation opened a write transaction")

    monkeypatch.setattr(jobs, "apply_guarded_evaluation", no_write)
    traffic.evaluate()  # the tick over the same data at the same time: no alert moves

    assert traffic.alerts()[("error-rate", "production")]["samples"] == 50
