"""The emitter against a real control plane under uvicorn, stopped and restarted mid-run, on SQLite and PostgreSQL.

Whatever the outage, every emitted event is counted exactly once by the control plane: the batches that failed
were spooled and replayed in order under their first ids.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope
from controlplane.settings import Settings
from controlplane.telemetry.models import IngestedBatch, TelemetryWindow
from controlplane_client.emitter import Emitter, EmitterSettings, Event
from tests.conftest import REPO_ROOT, bearer
from tests.restartable_server import RestartableServer

PIPELINE = "reference-images"
ROUNDS = 30
EVENTS_PER_ROUND = 20


@pytest.fixture
def served_engine(database_url: str) -> Iterator[Engine]:
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


def create_token(engine: Engine, role: Role) -> str:
    """A token made as `controlplane tokens create` makes it, at the real time (the served app's clock)."""
    with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
        created = auth_service.create_token(
            session,
            request=TokenCreate(name=f"{role.value}-{uuid.uuid4().hex[:6]}", role=role),
            actor="test-bootstrap",
            environments=Settings().environments,
            now=datetime.now(UTC),
        )
    return created.token


def vision_check(number: int) -> Event:
    """A Vision check of the reference-images definition, now."""
    return Event(
        type="vision_analysis",
        time=datetime.now(UTC),
        environment="production",
        variant="on" if number % 2 else "off",
        outcome="error" if number % 10 == 0 else "ok",
        value=0.2 + (number % 7) / 10,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_events_emitted_through_a_control_plane_restart_are_all_counted_once(
    database_url: str, served_engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, scheduler_enabled=False, replica_id="restartable")
    admin = bearer(create_token(served_engine, Role.ADMIN))
    ingest = create_token(served_engine, Role.INGEST)
    with RestartableServer(lambda: create_app(settings, engine=served_engine)) as server:
        definition = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            applied = http.post(
                "/api/v1/definitions/apply",
                headers=admin,
                json={"content": definition, "source": "reference-images.yaml"},
            )
            assert applied.status_code == 200, applied.text

        emitter = Emitter(
            server.base_url,
            ingest,
            pipeline=PIPELINE,
            spool_dir=tmp_path / "spool",
            settings=EmitterSettings(
                max_batch_events=50, flush_interval=0.05, max_attempts=2, backoff_base=0.02, backoff_cap=0.1
            ),
        )
        rounds_done = 0

        def produce() -> None:
            nonlocal rounds_done
            for round_number in range(ROUNDS):
                for index in range(EVENTS_PER_ROUND):
                    emitter.emit(vision_check(round_number * EVENTS_PER_ROUND + index))
                rounds_done = round_number + 1
                time.sleep(0.02)  # a steady trickle, so the restart falls mid-run

        producer = threading.Thread(target=produce, name="producer")
        try:
            producer.start()
            wait_until(lambda: rounds_done >= 5 and emitter.stats().sent > 0)
            server.stop()  # killed mid-run: connections refused from here on
            wait_until(lambda: emitter.stats().spooled > 0)
            server.start()  # the same port, the same database, a new app
            producer.join(timeout=30)
        finally:
            assert emitter.close(timeout=30)

    stats = emitter.stats()
    emitted = ROUNDS * EVENTS_PER_ROUND
    assert (stats.queued, stats.dropped, stats.rejected, stats.pending, stats.spool_bytes) == (emitted, 0, 0, 0, 0)
    assert stats.replayed > 0
    with session_scope(sessionmaker(served_engine)) as session:
        counted = session.scalar(
            select(func.sum(TelemetryWindow.count)).where(
                TelemetryWindow.pipeline == PIPELINE, TelemetryWindow.event == "vision_analysis"
            )
        )
        batches = session.scalar(select(func.count()).select_from(IngestedBatch))
    assert counted == emitted
    # A duplicate answer is a batch counted before its answer was lost: counted once all the same.
    assert stats.sent + stats.duplicate == emitted
    assert batches == stats.batches_sent + stats.batches_duplicate


def test_a_spool_left_by_an_emitter_closed_during_an_outage_is_counted_once_by_the_next(
    database_url: str, served_engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(database_url=database_url, scheduler_enabled=False, replica_id="restartable")
    admin = bearer(create_token(served_engine, Role.ADMIN))
    ingest = create_token(served_engine, Role.INGEST)
    emitter_settings = EmitterSettings(max_batch_events=25, max_attempts=1, backoff_base=0.01, backoff_cap=0.02)
    with RestartableServer(lambda: create_app(settings, engine=served_engine)) as server:
        definition = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            applied = http.post(
                "/api/v1/definitions/apply",
                headers=admin,
                json={"content": definition, "source": "reference-images.yaml"},
            )
            assert applied.status_code == 200, applied.text
        server.stop()
        first = Emitter(
            server.base_url, ingest, pipeline=PIPELINE, spool_dir=tmp_path / "spool", settings=emitter_settings
        )
        for number in range(100):
            first.emit(vision_check(number))
        assert first.close(timeout=30)  # the pipeline process stops while the control plane is down
        assert first.stats().spooled == 100

        server.start()
        second = Emitter(
            server.base_url, ingest, pipeline=PIPELINE, spool_dir=tmp_path / "spool", settings=emitter_settings
        )
        for number in range(100, 110):
            second.emit(vision_check(number))
        assert second.close(timeout=30)

    stats = second.stats()
    assert (stats.replayed, stats.sent, stats.dropped, stats.rejected, stats.spool_bytes) == (100, 110, 0, 0, 0)
    with session_scope(sessionmaker(served_engine)) as session:
        counted = session.scalar(select(func.sum(TelemetryWindow.count)).where(TelemetryWindow.pipeline == PIPELINE))
    assert counted == 110
