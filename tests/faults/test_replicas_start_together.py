"""Two replicas started together on an empty PostgreSQL database: both start, the schema is migrated once, and
exactly one admin token is made. Each replica is its own process running `serve`'s bootstrap (migrate, apply the
definitions, make the first admin token), as two containers would."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sqlalchemy import text

from controlplane.db import create_db_engine
from controlplane.migrate import is_at_head
from tests.conftest import new_postgres_database

TRIES = 10

BOOTSTRAP = """
import sys
from controlplane.cli.server import bootstrap, open_engine
from controlplane.settings import Settings
settings = Settings(database_url=sys.argv[1], scheduler_enabled=False)
print("token" if bootstrap(settings, open_engine(settings)) else "no token")
"""


@pytest.fixture
def empty_databases() -> Iterator[list[str]]:
    """``TRIES`` empty PostgreSQL databases, dropped at the end."""
    with ExitStack() as stack:
        yield [stack.enter_context(new_postgres_database("cp_together", migrated=False))[0] for _ in range(TRIES)]


def test_two_replicas_started_together_on_an_empty_database_both_start_with_one_admin_token(
    empty_databases: list[str],
) -> None:
    outcomes = []
    for url in empty_databases:
        replicas = [
            subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(2)
        ]
        finished = [replica.communicate(timeout=120) for replica in replicas]
        codes = [replica.returncode for replica in replicas]
        assert codes == [0, 0], [error[-2000:] for _, error in finished]
        said = sorted(output.strip().splitlines()[-1] for output, _ in finished)
        engine = create_db_engine(url)
        with engine.connect() as connection:
            admins = connection.execute(text("SELECT count(*) FROM api_tokens WHERE role = 'admin'")).scalar_one()
        at_head = is_at_head(engine)
        engine.dispose()
        outcomes.append((said, admins, at_head))
    assert outcomes == [(["no token", "token"], 1, True)] * TRIES
