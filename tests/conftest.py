"""Shared fixtures: a migrated database on each backend (SQLite and PostgreSQL), the app, a fake clock, tokens.

Every test that takes ``engine`` (directly or through ``client``/``session_factory``) runs once per backend.
``CONTROLPLANE_TEST_BACKENDS`` narrows the list (default ``sqlite,postgresql``). PostgreSQL is the server at
``CONTROLPLANE_TEST_POSTGRES_URL`` (default 127.0.0.1:5432, user postgres); when it is missing the PostgreSQL
runs are skipped locally and fail under ``CI=true``, so CI cannot go green without them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope
from controlplane.embedded import serve_in_thread
from controlplane.guarding.readings import AlertGateReader
from controlplane.incidents.hold import IncidentHold
from controlplane.migrate import upgrade_to_head
from controlplane.models import Base
from controlplane.rollouts.jobs import advance_baked_rollouts
from controlplane.rollouts.steps import StepAnnouncer
from controlplane.settings import Settings

if TYPE_CHECKING:
    from tests.guard_traffic import GuardedTraffic

POSTGRES_ADMIN_URL = os.environ.get("CONTROLPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = [b.strip() for b in os.environ.get("CONTROLPLANE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
IN_CI = os.environ.get("CI", "").lower() == "true"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move time forward."""
        self.now += delta


def tick_rollouts(
    factory: sessionmaker[Session],
    environments: Sequence[str],
    clock: FakeClock,
    announcer: StepAnnouncer | None = None,
) -> dict[str, int]:
    """One rollout tick as the scheduler runs it (the alert states as gates, the incident hold), on ``clock``."""
    return advance_baked_rollouts(
        factory,
        environments=environments,
        clock=clock,
        gates=AlertGateReader(),
        announcer=announcer,
        hold=IncidentHold(),
    )


def missing_service(what: str) -> None:
    """Skip locally, fail in CI: a test that needs a real component must not pass silently without it."""
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true")
    pytest.skip(f"{what} is not available")


@contextmanager
def new_postgres_database(prefix: str, *, migrated: bool = True) -> Iterator[tuple[str, str]]:
    """A new PostgreSQL database (migrated to head unless ``migrated`` is False): its SQLAlchemy URL and name.
    Dropped at the end, whatever the test did to it (connections refused included)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        missing_service(f"PostgreSQL at {POSTGRES_ADMIN_URL} ({error})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    url = f"{base}/{name}"
    try:
        if migrated:
            engine = create_db_engine(url)
            upgrade_to_head(engine)
            engine.dispose()
        yield url, name
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head; dropped at the end."""
    with new_postgres_database("cp_test") as (url, _):
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test copies it."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on one backend."""
    if request.param == "sqlite":
        target = tmp_path / "controlplane.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("postgres_database")
    empty_database(url)
    return url


def empty_database(url: str) -> None:
    """Delete every row of every table (the schema stays at head)."""
    engine = create_db_engine(url)
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The engine of this test's database."""
    created = create_db_engine(database_url)
    yield created
    created.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on this test's database."""
    return sessionmaker(engine, expire_on_commit=False)


@pytest.fixture
def clock() -> FakeClock:
    """The injected clock; tests move it with ``advance``."""
    return FakeClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for this test's database; the scheduler is off unless a test starts it."""
    return Settings(database_url=database_url, scheduler_enabled=False, replica_id="test-replica")


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock) -> Litestar:
    """The application on this test's database, with the fake clock."""
    return create_app(settings, engine=engine, clock=clock)


@pytest.fixture
def client(app: Litestar) -> Iterator[TestClient[Litestar]]:
    """An HTTP client against the app."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_token(session_factory: sessionmaker[Session], clock: FakeClock) -> Callable[..., str]:
    """Create a token with a role (straight in the database, as `controlplane tokens create` does)."""

    def create(role: Role = Role.ADMIN, name: str | None = None, environment: str | None = None) -> str:
        with session_scope(session_factory) as session:
            created = auth_service.create_token(
                session,
                request=TokenCreate(
                    name=name or f"{role.value}-{uuid.uuid4().hex[:6]}", role=role, environment=environment
                ),
                actor="test-bootstrap",
                environments=Settings().environments,
                now=clock(),
            )
        return created.token

    return create


@pytest.fixture
def traffic(
    client: TestClient[Litestar], clock: FakeClock, engine: Engine, settings: Settings, make_token: Callable[..., str]
) -> GuardedTraffic:
    """A guarded rollout's driver on this test's app (the module's ``settings`` say which notifications it has)."""
    from tests.guard_traffic import GuardedTraffic  # imports this module: imported once both are loaded

    return GuardedTraffic(client, clock, engine, settings, make_token)


@pytest.fixture
def admin_headers(make_token: Callable[..., str]) -> dict[str, str]:
    """Authorization headers of an admin token."""
    return {"Authorization": f"Bearer {make_token(Role.ADMIN, name='admin')}"}


@pytest.fixture
def reference_images_yaml() -> str:
    """The shipped reference-images definition without gates: rollout mechanics apart from guards.

    Gates have their own tests (tests/integration/test_guarded_rollback.py), on the file as shipped.
    """
    return without_gates((REPO_ROOT / "definitions" / "reference-images.yaml").read_text())


def without_gates(definition: str) -> str:
    """A definition's text with every stage's guards and sample minimum removed: rollout mechanics alone."""
    text = re.sub(r",?\s*guards: \[[^\]]*\]", "", definition)
    text = re.sub(r",?\s*min_samples: \d+", "", text)
    return re.sub(r"\n\s*auto_rollback: true[^\n]*", "", text)


@pytest.fixture
def applied(client: TestClient[Litestar], admin_headers: dict[str, str], reference_images_yaml: str) -> None:
    """The reference-images definition without gates, applied."""
    response = client.post(
        "/api/v1/definitions/apply",
        headers=admin_headers,
        json={"content": reference_images_yaml, "source": "reference-images.yaml"},
    )
    assert response.status_code == 200, response.text


@pytest.fixture
def live_server(app: Litestar) -> Iterator[str]:
    """The app served over real HTTP by uvicorn; the base URL."""
    with serve_in_thread(app) as base_url:
        yield base_url


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """Assert a problem-details refusal with this status and `type`, and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    body: dict[str, Any] = response.json()
    assert body["type"].endswith(f"/{slug}"), body
    assert body["status"] == status
    assert body["detail"]
    return body


def bearer(token: str) -> dict[str, str]:
    """Authorization headers for a token."""
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test (for tests that need PostgreSQL itself)."""
    empty_database(postgres_database)
    return postgres_database


@contextmanager
def serve_with_admin(database_url: str, **changes: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """The app served by uvicorn on a migrated database, with a fresh admin token: base URL and headers.

    ``changes`` replace settings (the scheduler is off unless ``scheduler_enabled=True`` is among them).
    """
    engine = create_db_engine(database_url)
    try:
        with session_scope(sessionmaker(engine, expire_on_commit=False)) as session:
            created = auth_service.create_token(
                session,
                request=TokenCreate(name=f"served-admin-{uuid.uuid4().hex[:6]}", role=Role.ADMIN),
                actor="test-bootstrap",
                environments=Settings().environments,
                now=datetime.now(UTC),
            )
        settings = Settings(
            **{"database_url": database_url, "scheduler_enabled": False, "replica_id": "served", **changes}
        )
        with serve_in_thread(create_app(settings, engine=engine)) as base_url:
            yield base_url, bearer(created.token)
    finally:
        engine.dispose()


@pytest.fixture
def postgres_server(postgres_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The app served by uvicorn on a fresh PostgreSQL database; its base URL and admin headers."""
    with serve_with_admin(postgres_url) as served:
        yield served


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Logging as it was before the test: ``configure_logging`` (run by `serve`) replaces the root handlers with
    one on the stderr of the moment, which under capsys is closed once the test ends, and resets uvicorn's loggers."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    uvicorn = {name: logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")}
    saved = {name: (list(lg.handlers), lg.propagate, lg.level) for name, lg in uvicorn.items()}
    yield
    logging.captureWarnings(False)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, (old_handlers, propagate, old_level) in saved.items():
        uvicorn[name].handlers[:] = old_handlers
        uvicorn[name].propagate = propagate
        uvicorn[name].setLevel(old_level)
