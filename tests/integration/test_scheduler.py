"""The scheduler on a real database: leader election by lease, leader-only jobs, the rollout tick, the lifespan.

Everything runs on the injected FakeClock, on SQLite and on PostgreSQL (through the ``engine`` fixtures).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from controlplane.app import create_app
from controlplane.scheduler import LEASE_NAME, JobSpec, Leadership, Scheduler, build_jobs
from controlplane.scheduling.models import LeaderLease
from controlplane.settings import Settings
from tests.conftest import tick_rollouts

if TYPE_CHECKING:
    from tests.conftest import FakeClock

FLAG = "enable-reference-images"
TTL = timedelta(seconds=30)
# From definitions/reference-images.yaml: production's stages bake 1h (10%, auto), 2h (50%, auto), 24h (100%).
FIRST_PRODUCTION_BAKE = timedelta(hours=1)
SECOND_PRODUCTION_BAKE = timedelta(hours=2)
LAST_PRODUCTION_BAKE = timedelta(hours=24)
QA_BAKE = timedelta(minutes=30)


def _rollout_path(environment: str) -> str:
    return f"/api/v1/flags/{FLAG}/environments/{environment}/rollout"


def _status(client: httpx.Client, headers: dict[str, str], environment: str) -> dict[str, Any]:
    response = client.get(_rollout_path(environment), headers=headers)
    assert response.status_code == 200, response.text
    status: dict[str, Any] = response.json()
    return status


def _operate(client: httpx.Client, headers: dict[str, str], environment: str, operation: str) -> dict[str, Any]:
    body = {"reason": f"test {operation}", "expected_revision": _status(client, headers, environment)["revision"]}
    response = client.post(f"{_rollout_path(environment)}/{operation}", headers=headers, json=body)
    assert response.status_code == 200, f"{operation} in {environment}: {response.status_code} {response.text}"
    status: dict[str, Any] = response.json()
    return status


def _start_production(client: httpx.Client, headers: dict[str, str]) -> dict[str, Any]:
    """Complete qa and staging by hand, then start production at its first stage."""
    for environment in ("qa", "staging"):
        _operate(client, headers, environment, "start")
        assert _operate(client, headers, environment, "advance")["state"] == "completed"
    started = _operate(client, headers, "production", "start")
    assert (started["state"], started["stage_index"], started["percentage"]) == ("running", 0, 10)
    return started


def _tick(session_factory: sessionmaker[Session], settings: Settings, clock: FakeClock) -> dict[str, int]:
    return tick_rollouts(session_factory, settings.environments, clock)


def _leadership(session_factory: sessionmaker[Session], holder: str, clock: FakeClock) -> Leadership:
    return Leadership(session_factory, holder=holder, ttl=TTL, clock=clock)


def _lease(session_factory: sessionmaker[Session]) -> LeaderLease | None:
    with session_factory() as session:
        return session.scalar(select(LeaderLease).where(LeaderLease.name == LEASE_NAME))


# --- leader election ---------------------------------------------------------------------------------------------


def test_first_replica_to_renew_leads_and_the_other_follows_while_the_lease_is_renewed(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    a = _leadership(session_factory, "a", clock)
    b = _leadership(session_factory, "b", clock)

    assert a.renew() is True
    assert b.renew() is False
    assert (a.is_leader(), b.is_leader()) == (True, False)

    clock.advance(timedelta(seconds=10))
    assert a.renew() is True
    assert b.renew() is False
    assert (a.is_leader(), b.is_leader()) == (True, False)
    lease = _lease(session_factory)
    assert lease is not None
    assert (lease.holder, lease.expires_at) == ("a", clock() + TTL)


def test_follower_takes_over_once_the_leader_stops_renewing_and_the_old_leader_knows_it_lost(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    a = _leadership(session_factory, "a", clock)
    b = _leadership(session_factory, "b", clock)
    assert a.renew() is True
    assert b.renew() is False
    clock.advance(timedelta(seconds=10))
    assert a.renew() is True
    assert b.renew() is False

    # a stops renewing (it hangs or dies); its lease, renewed 10 s in, runs out 30 s later.
    clock.advance(timedelta(seconds=29))
    assert a.is_leader() is True, "the lease still has a second to go"
    assert b.renew() is False, "b must not take a lease that has not run out"
    clock.advance(timedelta(seconds=2))
    assert a.is_leader() is False, "a's lease ran out by the clock, without a renewal telling it"
    assert b.renew() is True
    assert b.is_leader() is True
    assert a.renew() is False, "a comes back and finds b leading"
    assert a.is_leader() is False
    lease = _lease(session_factory)
    assert lease is not None
    assert lease.holder == "b"


def test_release_by_the_leader_lets_the_other_replica_take_over_immediately(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    a = _leadership(session_factory, "a", clock)
    b = _leadership(session_factory, "b", clock)
    assert a.renew() is True
    assert b.renew() is False

    a.release()

    assert a.is_leader() is False
    assert b.renew() is True, "no waiting for the TTL after a clean hand-over"
    assert b.is_leader() is True
    assert a.renew() is False


def test_release_by_a_follower_does_not_take_the_lease_from_the_leader(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    a = _leadership(session_factory, "a", clock)
    b = _leadership(session_factory, "b", clock)
    assert a.renew() is True
    assert b.renew() is False

    b.release()

    assert a.is_leader() is True
    assert b.renew() is False
    assert a.renew() is True


# --- leader-only jobs --------------------------------------------------------------------------------------------


def _job(jobs: list[JobSpec], job_id: str) -> JobSpec:
    return next(job for job in jobs if job.id == job_id)


def test_only_the_leader_replica_runs_the_rollout_tick(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    applied: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    _start_production(client, admin_headers)
    clock.advance(FIRST_PRODUCTION_BAKE)
    replicas: dict[str, Scheduler] = {}
    ticks: dict[str, JobSpec] = {}
    for holder in ("a", "b"):
        leadership = _leadership(session_factory, holder, clock)
        jobs = build_jobs(settings, session_factory, leadership, clock)
        assert _job(jobs, "advance_baked_rollouts").leader_only is True
        ticks[holder] = _job(jobs, "advance_baked_rollouts")
        replicas[holder] = Scheduler(jobs, leadership)
        # The renew job runs in every replica, leader or not.
        renew = _job(jobs, "renew_leader_lease")
        assert renew.leader_only is False
        assert replicas[holder]._guarded(renew)() is (holder == "a")

    follower_result = replicas["b"]._guarded(ticks["b"])()
    assert follower_result is None
    assert _status(client, admin_headers, "production")["stage_index"] == 0, "the follower must not advance"

    leader_result = replicas["a"]._guarded(ticks["a"])()
    assert leader_result == {"checked": 1, "advanced": 1, "held": 0, "deadlines": 0, "conflicts": 0, "errors": 0}
    status = _status(client, admin_headers, "production")
    assert (status["stage_index"], status["percentage"]) == (1, 50)

    assert replicas["b"]._guarded(ticks["b"])() is None
    assert _status(client, admin_headers, "production")["stage_index"] == 1


def test_a_leader_whose_lease_ran_out_skips_leader_only_jobs(
    session_factory: sessionmaker[Session], settings: Settings, clock: FakeClock
) -> None:
    leadership = _leadership(session_factory, "a", clock)
    jobs = build_jobs(settings, session_factory, leadership, clock)
    scheduler = Scheduler(jobs, leadership)
    tick = _job(jobs, "advance_baked_rollouts")
    assert leadership.renew() is True
    assert scheduler._guarded(tick)() == {
        "checked": 0,
        "advanced": 0,
        "held": 0,
        "deadlines": 0,
        "conflicts": 0,
        "errors": 0,
    }

    clock.advance(TTL + timedelta(seconds=1))

    assert scheduler._guarded(tick)() is None


@pytest.mark.parametrize("died_after", [0.0, 0.4, 0.999], ids=["just-renewed", "mid-period", "about-to-renew"])
@pytest.mark.parametrize("lease_seconds", [30.0, 6.0])
def test_fail_over_ends_within_the_promised_lease_and_two_replicas_never_lead_at_once(
    session_factory: sessionmaker[Session], clock: FakeClock, lease_seconds: float, died_after: float
) -> None:
    # Both replicas renew every L/6, b's tries falling half a period after a's; a dies ``died_after`` of a period
    # after a renewal. Stepping the clock a tenth of a second at a time, the lease changes hands by 2L/3 after the
    # death at the latest, and never while a still believes it leads.
    settings = Settings(leader_lease_seconds=lease_seconds)
    a = Leadership.for_settings(session_factory, replace(settings, replica_id="a"), clock)
    b = Leadership.for_settings(session_factory, replace(settings, replica_id="b"), clock)
    period = timedelta(seconds=lease_seconds / 6)
    step = timedelta(seconds=0.1)
    assert a.renew() is True
    start = clock()
    died = start + period * 2 + period * died_after  # a renews at 0, L/6 and 2L/6, then dies
    a_next, b_next = start + period, start + period / 2
    taken = None
    while taken is None and clock() < died + timedelta(seconds=lease_seconds):
        clock.advance(step)
        now = clock()
        if now >= a_next and now < died:
            assert a.renew() is True
            a_next += period
        if now >= b_next:
            if b.renew():
                taken = now
            b_next += period
        assert not (a.is_leader() and b.is_leader()), f"two leaders at {now - start}"
    assert taken is not None, "b never took over"
    assert taken - died <= timedelta(seconds=lease_seconds) * 2 / 3 + step


def test_a_new_leader_runs_its_leader_only_jobs_at_once_not_at_their_next_interval(
    session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    settings = Settings(leader_lease_seconds=30.0)
    a = Leadership.for_settings(session_factory, replace(settings, replica_id="a"), clock)
    b = Leadership.for_settings(session_factory, replace(settings, replica_id="b"), clock)
    assert a.renew() is True
    ran = threading.Event()
    hour = timedelta(hours=1)
    jobs = [JobSpec("renew", b.renew, hour, leader_only=False), JobSpec("work", ran.set, hour)]
    scheduler = Scheduler(jobs, b)
    scheduler.start()  # b follows: its jobs' next runs are an hour away
    try:
        assert not ran.is_set()
        clock.advance(timedelta(seconds=16))  # a's lease (15 s) ran out
        assert b.renew() is True  # as its renew job would, every 5 s
        assert ran.wait(10), "the new leader's leader-only job did not run at once"
    finally:
        scheduler.shutdown()


# --- the rollout tick --------------------------------------------------------------------------------------------


def test_tick_advances_a_baked_auto_advance_stage_exactly_once_as_the_scheduler(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    applied: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    started = _start_production(client, admin_headers)
    assert started["stages"][0]["auto_advance"] is True
    assert started["stages"][0]["bake_seconds"] == FIRST_PRODUCTION_BAKE.total_seconds()

    assert _tick(session_factory, settings, clock) == {
        "checked": 1,
        "advanced": 0,
        "held": 0,
        "deadlines": 0,
        "conflicts": 0,
        "errors": 0,
    }
    clock.advance(FIRST_PRODUCTION_BAKE - timedelta(seconds=1))
    assert _tick(session_factory, settings, clock)["advanced"] == 0, "one second of bake is still missing"
    assert _status(client, admin_headers, "production")["percentage"] == 10

    clock.advance(timedelta(seconds=1))
    assert _tick(session_factory, settings, clock) == {
        "checked": 1,
        "advanced": 1,
        "held": 0,
        "deadlines": 0,
        "conflicts": 0,
        "errors": 0,
    }
    assert _tick(session_factory, settings, clock)["advanced"] == 0, "the next stage bakes from now"

    status = _status(client, admin_headers, "production")
    assert (status["state"], status["stage_index"], status["percentage"]) == ("running", 1, 50)
    assert status["revision"] == started["revision"] + 1
    assert status["next_auto_advance_at"] is not None

    audit = client.get(
        "/api/v1/audit",
        headers=admin_headers,
        params={"flag": FLAG, "environment": "production", "action": "rollout.auto_advance"},
    )
    assert audit.status_code == 200, audit.text
    records = audit.json()
    assert len(records) == 1, records
    record = records[0]
    assert record["actor"] == "scheduler"
    assert "after bake time; guards clear" in record["reason"]
    assert (record["before"]["percentage"], record["after"]["percentage"]) == (10, 50)
    verification = client.get("/api/v1/audit/verify", headers=admin_headers).json()
    assert verification["ok"] is True, verification


def test_tick_walks_auto_advance_stages_and_stops_at_a_stage_without_auto_advance(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    applied: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    started = _start_production(client, admin_headers)
    assert [stage["auto_advance"] for stage in started["stages"]] == [True, True, False]

    clock.advance(FIRST_PRODUCTION_BAKE)
    assert _tick(session_factory, settings, clock)["advanced"] == 1
    clock.advance(SECOND_PRODUCTION_BAKE)
    assert _tick(session_factory, settings, clock)["advanced"] == 1
    status = _status(client, admin_headers, "production")
    assert (status["state"], status["stage_index"], status["percentage"]) == ("running", 2, 100)
    assert status["next_auto_advance_at"] is None

    clock.advance(LAST_PRODUCTION_BAKE * 10)
    assert _tick(session_factory, settings, clock) == {
        "checked": 1,
        "advanced": 0,
        "held": 0,
        "deadlines": 0,
        "conflicts": 0,
        "errors": 0,
    }
    status = _status(client, admin_headers, "production")
    assert (status["state"], status["stage_index"]) == ("running", 2), "completing is an operator's decision"


def test_tick_never_advances_a_running_stage_without_auto_advance(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    applied: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    started = _operate(client, admin_headers, "qa", "start")
    assert started["stages"][0]["auto_advance"] is False

    clock.advance(QA_BAKE * 100)

    assert _tick(session_factory, settings, clock) == {
        "checked": 1,
        "advanced": 0,
        "held": 0,
        "deadlines": 0,
        "conflicts": 0,
        "errors": 0,
    }
    status = _status(client, admin_headers, "qa")
    assert (status["state"], status["stage_index"], status["revision"]) == ("running", 0, started["revision"])


def test_tick_never_advances_a_paused_rollout(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    applied: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    _start_production(client, admin_headers)
    paused = _operate(client, admin_headers, "production", "pause")
    assert paused["state"] == "paused"

    clock.advance(FIRST_PRODUCTION_BAKE * 48)

    assert _tick(session_factory, settings, clock)["advanced"] == 0
    status = _status(client, admin_headers, "production")
    assert (status["state"], status["stage_index"], status["percentage"]) == ("paused", 0, 10)
    assert status["revision"] == paused["revision"]


def test_a_resumed_rollout_bakes_again_from_the_resume_before_it_auto_advances(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    applied: None,
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    _start_production(client, admin_headers)
    _operate(client, admin_headers, "production", "pause")
    clock.advance(FIRST_PRODUCTION_BAKE * 2)
    _operate(client, admin_headers, "production", "resume")

    assert _tick(session_factory, settings, clock)["advanced"] == 0
    clock.advance(FIRST_PRODUCTION_BAKE)
    assert _tick(session_factory, settings, clock)["advanced"] == 1
    assert _status(client, admin_headers, "production")["percentage"] == 50


# --- the app's lifespan ------------------------------------------------------------------------------------------


def test_app_lifespan_starts_the_scheduler_holding_the_lease_and_releases_it_on_shutdown(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session], clock: FakeClock
) -> None:
    settings = Settings(database_url=database_url, scheduler_enabled=True, replica_id="lifespan-replica")
    app = create_app(settings, engine=engine, clock=clock)

    with TestClient(app) as test_client:
        assert test_client.get("/healthz").status_code == 200
        lease = _lease(session_factory)
        assert lease is not None, "the scheduler took no lease at start-up"
        assert lease.holder == "lifespan-replica"
        # Written to last half the promised fail-over, renewed every sixth of it (controlplane/scheduler.py).
        assert lease.expires_at == clock() + timedelta(seconds=settings.leader_lease_seconds) / 2

    released = _lease(session_factory)
    assert released is not None
    assert released.holder == "lifespan-replica"
    assert released.expires_at < clock(), "shutdown hands the lease back instead of letting it run out"
