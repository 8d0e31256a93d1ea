"""Many operators advancing the same rollout at once, against a real server: exactly one of them wins.

The app runs under uvicorn in a background thread, so requests really overlap (own connections, own
transactions), unlike the in-process TestClient. Every caller sends the same ``expected_revision``; the
revision check and the ORM's version column must let exactly one advance through and refuse the rest with
409 ``stale-revision``, so a crowd of clicks never skips a stage.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT, serve_with_admin, without_gates

FLAG = "enable-reference-images"
ROLLOUT = f"/api/v1/flags/{FLAG}/environments/{{environment}}/rollout"
SERVER_START_TIMEOUT_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class RunningServer:
    """A control plane served by uvicorn on 127.0.0.1, with an admin token."""

    base_url: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    """One racer's response."""

    status: int
    body: dict[str, Any]


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite file of this test's own."""
    target = tmp_path / "race.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite:///{target}"


@contextmanager
def serve(database_url: str) -> Iterator[RunningServer]:
    """Run the app under uvicorn with an admin token."""
    with serve_with_admin(database_url) as (base_url, headers):
        yield RunningServer(base_url, headers)


def _revision(client: httpx.Client, environment: str) -> int:
    response = client.get(ROLLOUT.format(environment=environment))
    assert response.status_code == 200, response.text
    revision: int = response.json()["revision"]
    return revision


def _operate(
    client: httpx.Client, environment: str, operation: str, reason: str = "integration test"
) -> dict[str, Any]:
    body = {"reason": reason, "expected_revision": _revision(client, environment)}
    response = client.post(f"{ROLLOUT.format(environment=environment)}/{operation}", json=body)
    assert response.status_code == 200, f"{operation} in {environment}: {response.status_code} {response.text}"
    status: dict[str, Any] = response.json()
    return status


def _prepare_production_at_first_stage(client: httpx.Client) -> int:
    """Apply the definition, complete qa and staging, start production; return production's revision."""
    # Gates apart: this races the revision check, not the guards (tests/integration/test_guarded_rollback.py).
    definition = without_gates((REPO_ROOT / "definitions" / "reference-images.yaml").read_text())
    applied = client.post("/api/v1/definitions/apply", json={"content": definition, "source": "reference-images.yaml"})
    assert applied.status_code == 200, applied.text
    for environment in ("qa", "staging"):
        assert _operate(client, environment, "start")["state"] == "running"
        assert _operate(client, environment, "advance")["state"] == "completed"
    started = _operate(client, "production", "start")
    assert (started["state"], started["stage_index"], started["percentage"]) == ("running", 0, 10)
    return _revision(client, "production")


def _race_advances(server: RunningServer, revision: int, racers: int) -> list[Answer]:
    """Fire ``racers`` advances with the same expected revision, released together by a barrier."""
    barrier = threading.Barrier(racers)
    url = f"{server.base_url}{ROLLOUT.format(environment='production')}/advance"

    def racer(number: int) -> Answer:
        with httpx.Client(headers=server.headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            body = {"reason": f"racer {number} advances", "expected_revision": revision}
            barrier.wait(timeout=REQUEST_TIMEOUT_SECONDS)
            response = client.post(url, json=body)
        return Answer(response.status_code, response.json())

    with ThreadPoolExecutor(max_workers=racers) as pool:
        return list(pool.map(racer, range(racers)))


def _assert_exactly_one_advance(server: RunningServer, revision: int, answers: list[Answer]) -> None:
    statuses = sorted(answer.status for answer in answers)
    successes = [answer for answer in answers if answer.status == 200]
    refusals = [answer for answer in answers if answer.status == 409]
    counts = f"measured: {len(successes)} x 200, {len(refusals)} x 409, all statuses {statuses}"
    assert len(successes) == 1, counts
    assert len(refusals) == len(answers) - 1, counts
    stale = [answer for answer in refusals if str(answer.body.get("type", "")).endswith("stale-revision")]
    assert len(stale) == len(refusals), f"{counts}; refusal types {sorted({str(a.body.get('type')) for a in refusals})}"
    winner = successes[0].body
    assert (winner["stage_index"], winner["percentage"], winner["revision"]) == (1, 50, revision + 1), winner

    with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        status = client.get(ROLLOUT.format(environment="production")).json()
        assert (status["state"], status["stage_index"], status["percentage"]) == ("running", 1, 50), status
        assert status["revision"] == revision + 1, f"revision moved {status['revision'] - revision} times, {counts}"

        audit = client.get(
            "/api/v1/audit", params={"flag": FLAG, "environment": "production", "action": "rollout.advance"}
        )
        assert audit.status_code == 200, audit.text
        records = audit.json()
        assert len(records) == 1, f"{len(records)} rollout.advance audit records, {counts}"
        assert records[0]["before"]["stage_index"] == 0
        assert (records[0]["after"]["stage_index"], records[0]["after"]["percentage"]) == (1, 50)

        verification = client.get("/api/v1/audit/verify")
        assert verification.status_code == 200, verification.text
        assert verification.json()["ok"] is True, verification.json()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_fifty_concurrent_advances_let_exactly_one_through(backend: str, request: pytest.FixtureRequest) -> None:
    # 50 racers outnumber the worker threads (40), which is what once made SQLite deadlock until its busy timeout.
    url: str = request.getfixturevalue("postgres_url" if backend == "postgresql" else "sqlite_url")
    with serve(url) as server:
        with httpx.Client(base_url=server.base_url, headers=server.headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            revision = _prepare_production_at_first_stage(client)
        answers = _race_advances(server, revision, racers=50)
        _assert_exactly_one_advance(server, revision, answers)
