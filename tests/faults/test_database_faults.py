"""The control plane's PostgreSQL stopped, then frozen, under light mixed traffic (a private cluster; see
``tests.faults.cluster``, shared with ``bench.db_faults``, which runs the same at full length and prints figures).

While the database is stopped: evaluation (OFREP, snapshot) answers 200 from memory, management and ingest 503 with
Retry-After, quickly, never 500; a scrape answers 200. Once it is back, management answers again within a second.
While it is frozen, no request (a Prometheus scrape included) waits much longer than the request deadline. No
acknowledged ingest event is lost.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_service
from tests.faults.cluster import cluster_available, run_faults

DEADLINE = 5.0  # CONTROLPLANE_DATABASE_TIMEOUT_SECONDS, the default


@pytest.fixture
def scratch() -> Iterator[Path]:
    why = cluster_available()
    if why is not None:
        missing_service(why)
    with tempfile.TemporaryDirectory(prefix="faults-") as folder:
        yield Path(folder)


def test_a_stopped_then_frozen_database_costs_no_evaluation_no_500_and_no_acknowledged_event(scratch: Path) -> None:
    run = run_faults(scratch, settle=3, stopped=6, frozen=8)

    seen, back = run.seen, run.back
    assert not [row for row in seen if row[2] == "500"], "a 500 was answered"
    stopped = [row for row in seen if row[0] == "stopped"]
    assert {row[2] for row in stopped if row[1] in ("ofrep", "snapshot")} == {"200"}, "evaluation failed while stopped"
    assert {row[2] for row in stopped if row[1] in ("admin", "ingest")} == {"503"}
    # A scrape still answers: the process's own series, and controlplane_state_readable 0.
    assert {row[2] for row in seen if row[1] == "metrics"} == {"200"}, "a scrape failed"
    assert max(row[3] for row in stopped) < 1.0, "a refusal while stopped took a second or more"
    recovered = [at - back for _, kind, outcome, _, at in seen if kind == "admin" and outcome == "200" and at >= back]
    assert recovered and min(recovered) < 1.0, "management did not answer within a second of the database's return"
    frozen = [row for row in seen if row[0] in ("frozen", "after freeze")]
    assert max(row[3] for row in frozen) < DEADLINE + 1.5, sorted(row[3] for row in frozen)[-5:]
    # Evaluation does not wait for the frozen database at all: its known token's lookup runs behind its answer.
    assert max(row[3] for row in frozen if row[1] in ("ofrep", "snapshot")) < 1.0
    assert run.stored >= run.acknowledged > 0, "an acknowledged ingest event was lost"
