"""The control plane's PostgreSQL stopped, then frozen, under light mixed traffic (a private cluster; see
``tests.faults.cluster``, shared with ``bench.db_faults``, which runs the same at full length and prints figures).

While the database is stopped: evaluation (OFREP, snapshot) answers 200 from memory, management and ingest 503 with
Retry-After, quickly, never 500. Once it is back, management answers again within a second. While it is frozen, no
request waits much longer than the request deadline. No acknowledged ingest event is lost.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import missing_service
from tests.faults.cluster import Traffic, cluster, cluster_available, control_plane, pause, resume, start, stop

DEADLINE = 5.0  # CONTROLPLANE_DATABASE_TIMEOUT_SECONDS, the default


@pytest.fixture
def scratch() -> Iterator[Path]:
    why = cluster_available()
    if why is not None:
        missing_service(why)
    with tempfile.TemporaryDirectory(prefix="faults-") as folder:
        yield Path(folder)


def test_a_stopped_then_frozen_database_costs_no_evaluation_no_500_and_no_acknowledged_event(scratch: Path) -> None:
    with cluster(scratch) as (data, port):
        with control_plane(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", scratch) as (base, admin):
            made = {}
            for role, environment in (("evaluate", "production"), ("ingest", None)):
                body = {"name": f"fault-{role}", "role": role, **({"environment": environment} if environment else {})}
                created = httpx.post(f"{base}/api/v1/tokens", headers={"Authorization": f"Bearer {admin}"}, json=body)
                assert created.status_code == 201, created.text
                made[role] = created.json()["token"]
            traffic = Traffic(base, admin, made["evaluate"], made["ingest"])
            clients = [threading.Thread(target=traffic.client, args=(kind,)) for kind in Traffic.KINDS]
            for client in clients:
                client.start()
            try:
                time.sleep(2)  # the scenario's own timeline, as an operator would live it: traffic first
                traffic.phase = "stopped"
                stop(data)
                time.sleep(6)
                traffic.phase = "restarting"
                start(data, port)
                back = time.monotonic()
                traffic.phase = "after stop"
                time.sleep(3)
                traffic.phase = "frozen"
                paused = pause(data)
                time.sleep(8)
                resume(paused)
                traffic.phase = "after freeze"
                time.sleep(3)
            finally:
                traffic.stopped.set()
                for client in clients:
                    client.join(90)
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as connection:
            stored = connection.execute(
                "SELECT coalesce(sum(count), 0) FROM telemetry_windows WHERE event = 'http_request'"
            ).fetchone()

    seen = traffic.seen
    assert not [row for row in seen if row[2] == "500"], "a 500 was answered"
    stopped = [row for row in seen if row[0] == "stopped"]
    assert {row[2] for row in stopped if row[1] in ("ofrep", "snapshot")} == {"200"}, "evaluation failed while stopped"
    assert {row[2] for row in stopped if row[1] in ("admin", "ingest")} == {"503"}
    assert max(row[3] for row in stopped) < 1.0, "a refusal while stopped took a second or more"
    recovered = [at - back for _, kind, outcome, _, at in seen if kind == "admin" and outcome == "200" and at >= back]
    assert recovered and min(recovered) < 1.0, "management did not answer within a second of the database's return"
    frozen = [row for row in seen if row[0] in ("frozen", "after freeze")]
    assert max(row[3] for row in frozen) < DEADLINE + 1.5, sorted(row[3] for row in frozen)[-5:]
    assert stored is not None and stored[0] >= traffic.acknowledged > 0, "an acknowledged ingest event was lost"
