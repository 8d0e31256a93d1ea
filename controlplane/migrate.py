"""Schema migrations through Alembic, usable from the CLI, the server start-up and the tests."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

import migrations

__all__ = [
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "current_revisions",
    "is_at_head",
    "shipped_heads",
    "upgrade_to_head",
]

logger = logging.getLogger(__name__)
#: Alembic's default version table, which migrations/env.py keeps.
VERSION_TABLE = "alembic_version"


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


#: Names the lock that serialises migrations across replicas on PostgreSQL (any constant unlike the write lock's).
MIGRATION_LOCK_KEY = 7_311_002


def upgrade_to_head(engine: Engine) -> None:
    """Migrate the database behind ``engine`` to the newest revision.

    Replicas starting together on an empty PostgreSQL database used to race creating `alembic_version` (one died
    on a unique violation of the type's name). The migration now runs in one transaction holding an advisory lock:
    the second replica waits, then finds the schema at head and does nothing. (SQLite's BEGIN IMMEDIATE, taken by
    the engine for every writing transaction, serialises them there.)"""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        before = current_revisions(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        after = current_revisions(connection)
    if before != after:
        # One line for the change; Alembic's own line per step is DEBUG (controlplane.logs).
        logger.info("database migrated from %s to %s", ", ".join(sorted(before)) or "empty", ", ".join(sorted(after)))


@functools.cache
def shipped_heads() -> frozenset[str]:
    """The newest revisions of the packaged migrations (read once: loading them imports every version file)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    """The revisions the database says it is at; empty before the first migration."""
    # Read directly rather than through Alembic's MigrationContext, which logs two INFO lines each time: /readyz
    # asks on every probe.
    if not inspect(connection).has_table(VERSION_TABLE):
        return frozenset()
    return frozenset(str(row[0]) for row in connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")))  # noqa: S608 - a constant


def is_at_head(engine: Engine) -> bool:
    """True when the database's revision is the newest one shipped."""
    with engine.connect() as connection:
        return current_revisions(connection) == shipped_heads()
