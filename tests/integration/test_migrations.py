"""The Alembic migrations and the models agree, and readiness reports whether the schema is at head."""

from __future__ import annotations

import json
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine, inspect, text

from controlplane.app import create_app
from controlplane.db import create_db_engine
from controlplane.migrate import alembic_config, is_at_head
from controlplane.models import Base
from controlplane.settings import Settings


def test_migrated_schema_matches_the_models_exactly(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"models and migrations disagree on {engine.dialect.name}: {diff}"


def test_migrated_database_has_every_model_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables, set(Base.metadata.tables) - tables
    assert "alembic_version" in tables


def test_migrated_database_is_at_head(engine: Engine) -> None:
    assert is_at_head(engine) is True


def test_readyz_answers_200_on_a_migrated_database(client: TestClient[Litestar]) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_answers_200_without_a_token(client: TestClient[Litestar]) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_api_refuses_a_request_without_a_token_while_health_stays_open(client: TestClient[Litestar]) -> None:
    assert client.get("/api/v1/audit").status_code == 401
    assert client.get("/healthz").status_code == 200


def test_fresh_empty_sqlite_is_not_at_head_and_readyz_answers_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = create_db_engine(url)
    try:
        assert is_at_head(engine) is False
        app = create_app(Settings(database_url=url, scheduler_enabled=False), engine=engine)
        with TestClient(app) as client:
            ready = client.get("/readyz")
            health = client.get("/healthz")
    finally:
        engine.dispose()
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "unavailable"
    assert "schema is not at the newest migration" in ready.json()["database"]
    assert health.status_code == 200, health.text
    assert health.json() == {"status": "ok"}


def test_event_tails_keep_their_events_across_the_segment_key_and_back(engine: Engine) -> None:
    """b7e1c4d9a2f6 puts a segment in the tails' key: stored tails become the tails of every event (segment ""), a
    streak rule already scoped to a segment gets its segment's tail from them, and going back keeps the tails of every
    event and drops the segments' own."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    events = [
        ["2026-12-05T06:00:00+00:00", "failed", "on", {"queue": "sales"}],
        ["2026-12-05T06:00:01+00:00", "ok", "on", {"queue": "support"}],
        ["2026-12-05T06:00:02+00:00", "failed", "on", {"queue": "sales"}],
    ]
    scoped = {
        "name": "failed-streak-queue-sales",
        "kind": "streak",
        "event": "http_request",
        "segment": {"flag": "checkout-v2", "environment": "production", "attribute": "queue", "value": "sales"},
    }
    try:
        command.downgrade(config, "5d2e7c91b4a3")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO event_tails (pipeline, event, environment, events, updated_at) "
                    "VALUES ('checkout', 'http_request', 'production', :events, '2026-12-05 06:00:00+00:00')"
                ),
                {"events": json.dumps(events)},
            )
            connection.execute(
                text(
                    "INSERT INTO pipeline_catalogs (pipeline, events, rules, source, updated_at) "
                    "VALUES ('checkout', '[]', :rules, 'checkout.yaml', '2026-12-05 06:00:00+00:00')"
                ),
                {"rules": json.dumps([scoped])},
            )
        command.upgrade(config, "head")
        with engine.begin() as connection:
            kept = {
                segment: json.loads(stored) if isinstance(stored, str) else stored
                for segment, stored in connection.execute(text("SELECT segment, events FROM event_tails"))
            }
        # Each label value the scoped rule's attribute takes gets its tail: sales's is the one its rule reads.
        assert kept == {"": events, "queue=sales": [events[0], events[2]], "queue=support": [events[1]]}
        assert inspect(engine).get_pk_constraint("event_tails")["constrained_columns"] == [
            "pipeline",
            "event",
            "environment",
            "segment",
        ]
        command.downgrade(config, "5d2e7c91b4a3")
        with engine.begin() as connection:
            assert connection.execute(text("SELECT pipeline, event FROM event_tails")).all() == [
                ("checkout", "http_request")
            ]
    finally:
        command.upgrade(config, "head")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM event_tails"))
            connection.execute(text("DELETE FROM pipeline_catalogs"))
