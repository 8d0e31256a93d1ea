"""The control plane's own database goes away under it (PostgreSQL: its database stops allowing connections and
the open ones are terminated) and comes back: OFREP and the snapshot keep answering from memory for tokens the replica
has seen, a revoked one stays refused, management answers 503 with Retry-After, and everything answers again once
the database does, without a restart."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth import service as auth_service
from controlplane.auth.schemas import TokenCreate
from controlplane.db import create_db_engine, session_scope, utcnow
from controlplane.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL, REPO_ROOT, new_postgres_database, without_gates

FLAG = "enable-reference-images"


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    """A migrated PostgreSQL database of this test's own (its URL and name), dropped at the end."""
    with new_postgres_database("cp_outage") as created:
        yield created


def outage(name: str, down: bool) -> None:
    """Refuse new connections to the database and end the open ones (down), or let them in again."""
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        if down:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        else:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def tokens(url: str) -> dict[str, str]:
    engine = create_db_engine(url)
    factory = sessionmaker(engine, expire_on_commit=False)
    made = {}
    for role, environment in ((Role.ADMIN, None), (Role.EVALUATE, "production"), (Role.EVALUATE, "staging")):
        with session_scope(factory) as session:
            created = auth_service.create_token(
                session,
                request=TokenCreate(name=f"{role.value}-{environment}", role=role, environment=environment),
                actor="test-bootstrap",
                environments=Settings().environments,
                now=utcnow(),
            )
        made[f"{role.value}-{environment}"] = created.token
    engine.dispose()
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refreshed_at(client: TestClient[Any]) -> float:
    """The replica's `controlplane_configuration_refreshed_timestamp_seconds`."""
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("controlplane_configuration_refreshed_timestamp_seconds "):
            return float(line.split()[1])
    raise AssertionError(f"no configuration refresh gauge in /metrics: {client.get('/metrics').text[:600]}")


class Collected(logging.Handler):
    """The feed's log records, whatever the app's logging configuration does with them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def said(self, words: str) -> list[logging.LogRecord]:
        return [record for record in self.records if words in record.getMessage()]


@pytest.fixture
def feed_log() -> Iterator[Collected]:
    handler = Collected()
    logger = logging.getLogger("controlplane.evaluation.feed")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_evaluation_answers_from_memory_through_an_outage_and_management_says_503(
    database: tuple[str, str], feed_log: Collected
) -> None:
    url, name = database
    made = tokens(url)
    admin, production, staging = (made["admin-None"], made["evaluate-production"], made["evaluate-staging"])
    # Every request misses the fresh token cache: what is checked is the outage fallback, not the cache's TTL.
    settings = Settings(database_url=url, scheduler_enabled=False, replica_id="outage", token_cache_seconds=0.001)
    engine = create_db_engine(url, connect_timeout=2)
    context: dict[str, Any] = {"context": {"targetingKey": "user-1"}}
    with TestClient(create_app(settings, engine=engine)) as client:
        text = without_gates((REPO_ROOT / "definitions" / "reference-images.yaml").read_text())
        applied = client.post(
            "/api/v1/definitions/apply", headers=bearer(admin), json={"content": text, "source": "ri.yaml"}
        )
        assert applied.status_code == 200, applied.text
        before = client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", headers=bearer(production), json=context)
        assert before.status_code == 200, before.text
        snapshot = client.get("/evaluation/v1/snapshot", headers=bearer(production))
        assert snapshot.status_code == 200, snapshot.text
        # The staging token is revoked through this replica before the outage: it must stay refused.
        revoked = client.delete(f"/api/v1/tokens/{'evaluate-staging'}", headers=bearer(admin))
        assert revoked.status_code == 200, revoked.text

        outage(name, down=True)
        went_down = time.time()
        try:
            during = [
                client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", headers=bearer(production), json=context)
                for _ in range(20)
            ]
            bulk = client.post("/ofrep/v1/evaluate/flags", headers=bearer(production), json=context)
            snapshot_during = client.get("/evaluation/v1/snapshot", headers=bearer(production))
            refused = client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", headers=bearer(staging), json=context)
            management = client.get("/api/v1/flags", headers=bearer(admin))
            # The feed keeps polling (every 0.25 s) and failing: the gauge stops, and the log says so once.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not feed_log.said("configuration refresh failed"):
                time.sleep(0.05)  # the feed's own loop, against the deadline above
            stale = refreshed_at(client)
        finally:
            outage(name, down=False)
        came_back = time.time()

        assert [response.status_code for response in during] == [200] * 20
        assert {response.json()["value"] for response in during} == {before.json()["value"]}
        assert bulk.status_code == 200, bulk.text
        assert snapshot_during.status_code == 200 and snapshot_during.json() == snapshot.json()
        assert refused.status_code in (401, 503), refused.text  # never served: revoked before the outage
        assert management.status_code == 503, management.text
        assert management.json()["type"].endswith("/database-unavailable")
        assert int(management.headers["retry-after"]) > 0

        # Back without a restart: the pool's dead connections are noticed (pre-ping) and replaced.
        assert client.get("/api/v1/flags", headers=bearer(admin)).status_code == 200
        after = client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", headers=bearer(production), json=context)
        assert after.status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and refreshed_at(client) < came_back:
            time.sleep(0.05)  # the feed's next successful poll, against the deadline above
        # Read every 0.25 s until the outage, then not at all, then again once the database answers.
        assert stale <= went_down + 0.3 and came_back <= refreshed_at(client)
    failures = feed_log.said("configuration refresh failed")
    assert len(failures) == 1 and not failures[0].exc_info, [record.getMessage() for record in failures]
    assert feed_log.said("configuration refresh works again after")
    assert len(feed_log.said("configuration LISTEN connection lost")) == 1
    engine.dispose()
