"""Flag changes are announced to every replica by a PostgreSQL NOTIFY that the unit of work sends, delivered only
when the change commits; a unit of work that changes no flag, or rolls back, announces nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy.orm import Session, sessionmaker

from controlplane.db import create_db_engine, session_scope
from controlplane.flags import service as flag_service
from controlplane.flags.models import CONFIGURATION_CHANNEL
from controlplane.flags.schemas import EnvironmentStateUpdate, FlagCreate, FlagType
from controlplane.migrate import upgrade_to_head

pytestmark = pytest.mark.postgres

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ENVIRONMENTS = ("dev", "production")


@pytest.fixture
def factory(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = create_db_engine(postgres_url)
    upgrade_to_head(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def listener(postgres_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as connection:
        connection.execute(f"LISTEN {CONFIGURATION_CHANNEL}")
        yield connection


def _announcements(listener: psycopg.Connection[tuple[object, ...]]) -> int:
    return sum(1 for _ in listener.notifies(timeout=0.5))


def _create(session: Session) -> None:
    flag_service.create_flag(
        session,
        request=FlagCreate(
            key="checkout", type=FlagType.BOOLEAN, variants={"on": True, "off": False}, off_variant="off"
        ),
        actor="test",
        environments=ENVIRONMENTS,
        now=NOW,
    )


def test_a_committed_flag_change_is_announced_once_it_commits(
    factory: sessionmaker[Session], listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with session_scope(factory) as session:
        _create(session)
        session.flush()
        assert _announcements(listener) == 0, "announced before the commit"
    assert _announcements(listener) == 1
    with session_scope(factory) as session:
        flag_service.update_environment_state(
            session,
            key="checkout",
            environment="dev",
            environments=ENVIRONMENTS,
            expected_revision=1,
            changes=EnvironmentStateUpdate(enabled=True),
            actor="test",
            now=NOW,
        )
    assert _announcements(listener) == 1


def test_a_rolled_back_change_and_a_unit_of_work_without_flag_changes_announce_nothing(
    factory: sessionmaker[Session], listener: psycopg.Connection[tuple[object, ...]]
) -> None:
    with pytest.raises(RuntimeError), session_scope(factory) as session:
        _create(session)
        raise RuntimeError("the caller fails after the change")
    with session_scope(factory) as session:
        assert flag_service.list_flags(session) == []
    assert _announcements(listener) == 0
