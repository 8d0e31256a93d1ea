"""Schema migrations through Alembic, usable from the CLI, the server start-up and the tests."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

import migrations

__all__ = ["MIGRATION_LOCK_KEY", "alembic_config", "is_at_head", "upgrade_to_head"]


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
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_at_head(engine: Engine) -> bool:
    """True when the database's revision is the newest one shipped."""
    script = ScriptDirectory.from_config(alembic_config(engine.url.render_as_string(hide_password=False)))
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    return set(current) == set(script.get_heads())
