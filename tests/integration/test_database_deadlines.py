"""Fail fast, never hang: a database that stops answering (frozen, locked, unreachable) costs a request at most its
deadline, then 503 `database-unavailable`; `/readyz` answers within 2 s; PostgreSQL cancels what a timed-out
request was running; a server that accepts the connection but never answers is given up after the connect timeout.

A frozen database is stood in for by work that blocks until the test releases it: a paused server still
acknowledges TCP, so from the client's side it is exactly a call that does not return.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api import health
from controlplane.api.roles import Role
from controlplane.api.unit_of_work import UnitOfWork
from controlplane.app import create_app
from controlplane.auth import guards
from controlplane.auth import service as auth_service
from controlplane.db import DatabaseTimeout, create_db_engine, session_scope
from controlplane.exporter.metrics import StateMetrics, StreakMetrics
from controlplane.flags import service
from controlplane.settings import Settings
from controlplane.telemetry.service import PendingBatch
from controlplane.telemetry.writer import BatchWriter
from tests.conftest import FakeClock

DEADLINE = 0.3  # seconds: short, so the tests are; what is checked is that nothing waits much past it


@pytest.fixture
def frozen() -> Iterator[threading.Event]:
    """Released at the end of the test, so no worker thread stays blocked."""
    released = threading.Event()
    yield released
    released.set()


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock) -> Litestar:
    return create_app(replace(settings, database_timeout_seconds=DEADLINE), engine=engine, clock=clock)


def test_a_request_whose_database_does_not_answer_gets_503_within_its_deadline(
    client: TestClient[Litestar],
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    frozen: threading.Event,
) -> None:
    client.get("/api/v1/flags", headers=admin_headers)  # the token is looked up and cached first

    def hangs(*_: Any) -> Any:
        frozen.wait(30)
        return []

    monkeypatch.setattr(service, "list_flags", hangs)
    started = time.monotonic()
    response = client.get("/api/v1/flags", headers=admin_headers)
    waited = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert response.json()["type"].endswith("/database-unavailable")
    assert response.headers["retry-after"]
    assert DEADLINE <= waited < DEADLINE + 1.0


def test_readyz_answers_within_two_seconds_whatever_the_database_does(
    client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch, frozen: threading.Event
) -> None:
    def hangs(_: Engine) -> bool:
        frozen.wait(30)
        return True

    monkeypatch.setattr(health, "_database_ready", hangs)
    monkeypatch.setattr(health, "READY_DEADLINE_SECONDS", DEADLINE)
    started = time.monotonic()
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": f"no answer within {DEADLINE:g} s"}
    assert time.monotonic() - started < DEADLINE + 1.0
    assert health.READY_DEADLINE_SECONDS <= 2.0


def test_a_scrape_whose_database_does_not_answer_comes_back_within_its_deadline(
    client: TestClient[Litestar], monkeypatch: pytest.MonkeyPatch, frozen: threading.Event
) -> None:
    def hangs(_: Any) -> Any:
        frozen.wait(30)
        return ()

    # Both collectors that read the database: they share the scrape's one budget.
    monkeypatch.setattr(StateMetrics, "_read", hangs)
    monkeypatch.setattr(StreakMetrics, "_read", hangs)
    started = time.monotonic()
    response = client.get("/metrics")
    waited = time.monotonic() - started

    assert response.status_code == 200
    assert "controlplane_state_readable 0.0" in response.text
    assert "controlplane_http_requests_total" in response.text  # the process's own series are still there
    assert DEADLINE <= waited < DEADLINE + 1.0


def test_an_ingest_batch_not_committed_within_the_deadline_is_not_acknowledged(frozen: threading.Event) -> None:
    recorded: list[int] = []

    def record(session: Session, batches: list[PendingBatch], *, now: Any) -> list[Any]:
        frozen.wait(30)
        recorded.append(len(batches))
        return []

    writer = BatchWriter(
        sessionmaker(create_db_engine("sqlite://")), clock=FakeClock(), record=record, deadline=DEADLINE
    )

    async def submit() -> None:
        with pytest.raises(DatabaseTimeout, match=f"within {DEADLINE:g} s"):
            await writer.submit(object())  # type: ignore[arg-type]

    anyio.run(submit)
    assert recorded == []  # still waiting on the database: nothing was answered as committed


def test_postgresql_cancels_the_statement_of_a_timed_out_request(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    factory = sessionmaker(engine)
    work = UnitOfWork(factory, factory, deadline=DEADLINE)
    marker = f"deadline-{uuid.uuid4().hex[:8]}"

    async def slow() -> None:
        with pytest.raises(DatabaseTimeout):
            await work.read(lambda session: session.execute(text(f"SELECT pg_sleep(5) /* {marker} */")))

    anyio.run(slow)
    # The server cancels it after the same time: within a moment it no longer runs (not after 5 s).
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            running = connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE :marker"),
                {"marker": f"%{marker}%"},
            ).scalar_one()
        if running <= 1:  # this very query mentions the marker too
            break
        time.sleep(0.05)  # polling the server's own view against the deadline above
    assert running <= 1
    while engine.pool.checkedout() and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.05)  # the abandoned worker rolls back and returns its connection once cancelled
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


def test_a_server_that_accepts_but_never_answers_is_given_up_after_the_connect_timeout() -> None:
    # A listening socket nobody accepts from: TCP connects (the kernel's backlog), the PostgreSQL handshake never
    # comes. Without a connect timeout libpq would wait for ever.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    engine = create_db_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none", connect_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(OperationalError), engine.connect():
        pass
    waited = time.monotonic() - started
    silent.close()
    engine.dispose()
    assert 1.5 <= waited < 6.0, waited


def test_the_token_lookup_and_the_work_share_one_deadline(
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    frozen: threading.Event,
) -> None:
    # Both the token lookup (cache expired) and the route's own work hang: the request still answers within one
    # deadline in all, not one per step.
    deadline = 1.0
    changed = replace(settings, database_timeout_seconds=deadline, token_cache_seconds=0.001)
    with TestClient(create_app(changed, engine=engine, clock=clock)) as client:
        assert client.get("/api/v1/flags", headers=admin_headers).status_code == 200  # the token is seen once

        def hangs(*_: Any) -> Any:
            frozen.wait(30)
            return None

        monkeypatch.setattr(guards, "_lookup", hangs)
        monkeypatch.setattr(service, "list_flags", hangs)
        started = time.monotonic()
        response = client.get("/api/v1/flags", headers=admin_headers)
        waited = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert deadline <= waited < 1.6 * deadline, waited


def test_evaluation_answers_a_known_token_at_once_while_its_lookup_waits_behind_it(
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    make_token: Callable[..., str],
    admin_headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    frozen: threading.Event,
) -> None:
    # The token cache expires at once, so every request is past its TTL: a frozen database would cost each
    # evaluation the lookup's deadline if evaluation waited for it.
    changed = replace(settings, database_timeout_seconds=DEADLINE, token_cache_seconds=0.001)
    evaluate = {"Authorization": f"Bearer {make_token(Role.EVALUATE, environment='production')}"}
    lookups: list[str] = []
    with TestClient(create_app(changed, engine=engine, clock=clock)) as client:
        assert client.get("/evaluation/v1/snapshot", headers=evaluate).status_code == 200  # seen once
        assert client.get("/api/v1/flags", headers=admin_headers).status_code == 200

        def hangs(_: Any, token: str) -> Any:
            lookups.append(token)
            frozen.wait(30)
            return None

        monkeypatch.setattr(guards, "_lookup", hangs)
        started = time.monotonic()
        answers = [client.get("/evaluation/v1/snapshot", headers=evaluate).status_code for _ in range(5)]
        waited = time.monotonic() - started
        # Management still checks the token before acting: it waits for the lookup, which spends the request's
        # whole database budget, so it answers 503.
        started = time.monotonic()
        management = client.get("/api/v1/flags", headers=admin_headers).status_code
        management_waited = time.monotonic() - started

    assert answers == [200] * 5
    assert waited < DEADLINE, waited  # five evaluations in less than one lookup's deadline
    assert len([token for token in lookups if token == evaluate["Authorization"][7:]]) == 1  # one lookup at a time
    assert management == 503 and management_waited >= DEADLINE


def test_a_token_revoked_elsewhere_is_refused_to_evaluation_once_its_lookup_behind_an_answer_has_run(
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    session_factory: sessionmaker[Session],
    make_token: Callable[..., str],
) -> None:
    changed = replace(settings, token_cache_seconds=0.001)
    token = make_token(Role.EVALUATE, name="app", environment="production")
    evaluate = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(changed, engine=engine, clock=clock)) as client:
        assert client.get("/evaluation/v1/snapshot", headers=evaluate).status_code == 200
        with session_scope(session_factory) as session:  # another replica revokes it
            auth_service.revoke_token(session, name="app", actor="other-replica", reason="leaked", now=clock())
        # The request past the TTL answers from the last known role and looks the token up behind it; the lookup
        # is a moment's work, after which the token is refused.
        answers = []
        for _ in range(200):
            answers.append(client.get("/evaluation/v1/snapshot", headers=evaluate).status_code)
            if answers[-1] == 401:
                break
            time.sleep(0.01)  # the lookup runs on the server's own loop; give it its moment
    assert answers[0] == 200 and answers[-1] == 401 and len(answers) <= 20, answers
