"""Exactly one replica runs a scheduled cleanup: two replicas (own engines, own schedulers) on one database.

The first test runs two real schedulers (APScheduler threads, leader lease, the real clock) on PostgreSQL, as two
processes of a deployment would. The second takes the lease away: both replicas believe they lead and start the
cleanup tick at the same instant, on each backend; the unique slot and the claim still give one run per slot,
executed once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from controlplane.cleanup import service
from controlplane.cleanup.jobs import run_cleanups
from controlplane.cleanup.models import CleanupPolicyRow, CleanupRun
from controlplane.cleanup.policies import CleanupPolicyDefinition
from controlplane.cleanup.selection import OlderThan
from controlplane.cleanup.storage import DeleteResult, ObjectPage, ObjectRef, Storage
from controlplane.clock import system_clock
from controlplane.db import create_db_engine, session_scope
from controlplane.scheduler import Leadership, Scheduler, build_jobs
from controlplane.settings import Settings
from tests.fake_bucket import FakeBucket

# Yearly: the tests bring slots due themselves, so a real slot never fires in between.
YEARLY = "0 0 1 1 *"


def policy(name: str) -> CleanupPolicyDefinition:
    return CleanupPolicyDefinition(
        name=name,
        pipeline="reference-images",
        description="",
        bucket="reference-images",
        prefix=f"{name}/",
        selection=OlderThan(30),
        schedule=YEARLY,
        alert_after=None,
    )


class SharedBucket:
    """One bucket both replicas see, recording which replica made each call (the fake is not thread-safe)."""

    def __init__(self) -> None:
        self.bucket = FakeBucket()
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self.bucket.add(name, created=datetime.now(UTC) - timedelta(days=40))

    def remaining(self) -> int:
        with self._lock:
            return len(self.bucket.objects)

    def storage_for(self, replica: str) -> Callable[[str], Storage]:
        shared = self

        class Seen:
            def list_page(self, prefix: str, page_token: str | None) -> ObjectPage:
                with shared._lock:
                    shared.calls.append((replica, "list"))
                    return shared.bucket.list_page(prefix, page_token)

            def delete_batch(self, refs: Sequence[ObjectRef]) -> list[DeleteResult]:
                with shared._lock:
                    shared.calls.append((replica, "delete"))
                    return shared.bucket.delete_batch(refs)

        return lambda bucket: Seen()


def make_due(factory: sessionmaker[Session], *names: str) -> None:
    """Bring the policies' next slot to a second ago, as if the minute had come."""
    with session_scope(factory) as session:
        session.execute(
            update(CleanupPolicyRow)
            .where(CleanupPolicyRow.name.in_(names))
            .values(next_run_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def finished_runs(factory: sessionmaker[Session]) -> list[CleanupRun]:
    with session_scope(factory) as session:
        return list(
            session.scalars(
                select(CleanupRun).where(CleanupRun.status.in_(("succeeded", "failed"))).order_by(CleanupRun.id)
            )
        )


def runs_reach(factory: sessionmaker[Session], count: int) -> bool:
    return len(finished_runs(factory)) == count


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {seconds} s")
        time.sleep(0.05)


@pytest.fixture
def two_factories(database_url: str) -> Iterator[tuple[sessionmaker[Session], sessionmaker[Session]]]:
    """Two engines on one database: two processes' connection pools."""
    engines = [create_db_engine(database_url) for _ in range(2)]
    yield sessionmaker(engines[0], expire_on_commit=False), sessionmaker(engines[1], expire_on_commit=False)
    for engine in engines:
        engine.dispose()


def test_two_schedulers_sharing_postgresql_run_each_scheduled_cleanup_once_in_the_leader(
    postgres_url: str,
) -> None:
    engines = [create_db_engine(postgres_url) for _ in range(2)]
    factories = [sessionmaker(engine, expire_on_commit=False) for engine in engines]
    with session_scope(factories[0]) as session:
        service.store_policies(
            session,
            pipeline="reference-images",
            policies=[policy("refs")],
            actor="test",
            source="t",
            now=datetime.now(UTC),
        )
    shared = SharedBucket()
    clients = [httpx.Client() for _ in range(2)]
    schedulers = []
    leaderships = []
    for index, replica in enumerate(("r1", "r2")):
        settings = Settings(
            database_url=postgres_url,
            replica_id=replica,
            leader_lease_seconds=3.0,
            cleanup_tick_seconds=0.2,
        )
        leadership = Leadership(factories[index], holder=replica, ttl=timedelta(seconds=3), clock=system_clock)
        jobs = build_jobs(
            settings,
            factories[index],
            leadership,
            system_clock,
            http=clients[index],
            storage_for=shared.storage_for(replica),
        )
        leaderships.append(leadership)
        schedulers.append(Scheduler(jobs, leadership))
    try:
        for scheduler in schedulers:
            scheduler.start()
        for slot in range(1, 4):
            for number in range(15):
                shared.add(f"refs/{slot}-{number:02}.png")
            make_due(factories[1], "refs")
            wait_for(partial(runs_reach, factories[0], slot), seconds=20)
        for scheduler in schedulers:
            scheduler.shutdown()
        schedulers.clear()
        done = finished_runs(factories[0])
    finally:
        for scheduler in schedulers:
            scheduler.shutdown()
        for client in clients:
            client.close()
        for engine in engines:
            engine.dispose()
    leaders = [leadership.holder for leadership in leaderships]
    assert [run.status for run in done] == ["succeeded"] * 3
    assert len({run.scheduled_for for run in done}) == 3
    assert [run.attempts for run in done] == [1, 1, 1]
    assert [(run.deleted, run.already_gone) for run in done] == [(15, 0)] * 3
    runners = {run.runner.split("/")[0] for run in done if run.runner is not None}
    callers = {replica for replica, _ in shared.calls}
    assert len(runners) == 1 and runners == callers and runners <= set(leaders)
    assert shared.remaining() == 0


def test_two_replicas_both_believing_they_lead_still_run_each_slot_once(
    two_factories: tuple[sessionmaker[Session], sessionmaker[Session]],
) -> None:
    names = [f"policy-{number}" for number in range(6)]
    with session_scope(two_factories[0]) as session:
        service.store_policies(
            session,
            pipeline="reference-images",
            policies=[policy(name) for name in names],
            actor="test",
            source="t",
            now=datetime.now(UTC),
        )
    shared = SharedBucket()
    for name in names:
        for number in range(12):
            shared.add(f"{name}/{number:02}.png")
    make_due(two_factories[0], *names)
    start = threading.Barrier(2)
    results: dict[str, dict[str, int]] = {}
    errors: list[BaseException] = []

    def replica(name: str, factory: sessionmaker[Session]) -> None:
        try:
            start.wait(timeout=10)
            results[name] = run_cleanups(
                factory,
                replica=name,
                clock=system_clock,
                storage_for=shared.storage_for(name),
                stale_after=timedelta(minutes=10),
            )
        except BaseException as error:  # reported below: a thread's exception would otherwise vanish
            errors.append(error)

    threads = [
        threading.Thread(target=replica, args=(name, factory))
        for name, factory in zip(("r1", "r2"), two_factories, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    done = finished_runs(two_factories[0])
    assert sorted(run.policy or "" for run in done) == names
    assert all(run.status == "succeeded" and run.attempts == 1 for run in done)
    assert sum(run.deleted for run in done) == 72 and all(run.already_gone == 0 for run in done)
    assert sum(result["queued"] for result in results.values()) == 6
    assert sum(result["executed"] for result in results.values()) == 6
    assert shared.remaining() == 0
