"""A rollback that finishes the job, through the HTTP API on each database backend: `purge_uploads_since` purges
what the flag's pipeline uploaded since then once the rollback commits (the real google-cloud-storage client on
gcp-storage-emulator, through the app's cleanup executor), both audited as one incident; a purge that cannot be
asked for refuses the rollback and changes nothing (through the API and through `controlplane rollout rollback
--purge-uploads-since` against the served app); and a rollback by hand pages on-call as a guard's does."""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.cleanup.storage import GcsStorage, Storage
from controlplane.notifications.config import load_notification_config
from controlplane.notifications.jobs import deliver_due_notifications
from controlplane.rollback_purge import CleanupPurger
from controlplane.settings import Settings
from tests.cleanup_fixtures import BUCKET, PREFIX, emulator, names, upload
from tests.conftest import FakeClock, bearer, problem
from tests.gcs_emulator import emulated_bucket
from tests.integration.test_cli import run
from tests.receivers import ScriptedReceiver, scripted_receiver

FLAG = "enable-reference-images"
ROLLOUT = f"/api/v1/flags/{FLAG}/environments/production/rollout"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"
RUN_TIMEOUT_SECONDS = 30.0
Client = TestClient[Litestar]


@pytest.fixture(scope="module")
def emulator_host() -> Iterator[str]:
    yield from emulator()


@pytest.fixture
def gcs(emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    yield from emulated_bucket(emulator_host, monkeypatch, BUCKET)


@pytest.fixture
def clock() -> FakeClock:
    """The app's clock at the wall clock: the emulator stamps uploads with real time."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    with scripted_receiver() as running:
        yield running


@pytest.fixture
def settings(database_url: str, tmp_path: Path, receiver: ScriptedReceiver) -> Settings:
    """On-call pages through PagerDuty; rollout steps go to it as change events."""
    path = tmp_path / "notifications.yaml"
    path.write_text(
        f"""
receivers:
  oncall: {{type: pagerduty, routing_key: "{ROUTING_KEY}", url: "{receiver.url}/v2/enqueue"}}
routes:
  - {{kind: rollout, receivers: [oncall], continue: true}}
  - {{kind: alert, severity: [page], receivers: [oncall]}}
"""
    )
    return Settings(database_url=database_url, scheduler_enabled=False, replica_id="test", notifications_file=path)


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock, gcs: Any) -> Litestar:
    def storage_for(bucket: str) -> Storage:
        return GcsStorage(gcs, bucket)

    return create_app(settings, engine=engine, clock=clock, storage_for=storage_for)


@pytest.fixture
def operator(
    client: Client, make_token: Callable[..., str], admin_headers: dict[str, str], reference_images_yaml: str
) -> dict[str, str]:
    """An operator's headers, with the definition applied and production running at its first stage."""
    applied = client.post(
        "/api/v1/definitions/apply",
        headers=admin_headers,
        json={"content": reference_images_yaml, "source": "reference-images.yaml"},
    )
    assert applied.status_code == 200, applied.text
    headers = bearer(make_token(Role.OPERATOR, name="olivia"))
    revision = client.get(ROLLOUT, headers=headers).json()["revision"]
    body = {"expected_revision": revision, "force": True, "reason": "canary straight to production"}
    started = client.post(f"{ROLLOUT}/start", headers=headers, json=body)
    assert started.status_code == 200, started.text
    return headers


def audit(client: Client, headers: dict[str, str], action: str) -> list[dict[str, Any]]:
    response = client.get("/api/v1/audit", headers=headers, params={"action": action, "limit": 100})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def finished(client: Client, headers: dict[str, str], run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        run: dict[str, Any] = client.get(f"/api/v1/cleanup/runs/{run_id}", headers=headers).json()
        if run["status"] in ("succeeded", "failed"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        time.sleep(0.1)  # waiting for the executor's thread, not for time to pass


def test_a_rollback_with_a_purge_turns_the_flag_off_then_deletes_the_window_as_one_incident(
    client: Client, operator: dict[str, str], gcs: Any, clock: FakeClock
) -> None:
    before = upload(gcs, f"{PREFIX}before.png")
    since = before + timedelta(milliseconds=1)
    time.sleep(0.01)  # the emulator stamps uploads with the wall clock: the bad window starts after `before`
    bad = [f"{PREFIX}bad-{n}.png" for n in range(3)]
    for name in bad:
        upload(gcs, name)
    other = upload(gcs, "elsewhere/kept.png")  # outside the pipeline's prefix: never the purge's
    clock.advance(max(other, datetime.now(UTC)) - clock.now + timedelta(seconds=1))

    answer = client.post(
        f"{ROLLOUT}/rollback",
        headers=operator,
        json={"reason": "uploads broken since the deploy", "purge_uploads_since": since.isoformat()},
    )

    assert answer.status_code == 200, answer.text
    status = answer.json()
    assert (status["state"], status["enabled"], status["serving_percentage"]) == ("rolled_back", False, 0)
    incident, [run_id] = status["incident"], status["purge_runs"]
    assert incident.startswith("incident-")
    run = finished(client, operator, run_id)
    assert (run["status"], run["kind"], run["deleted"], run["prefix"]) == ("succeeded", "purge", 3, PREFIX)
    assert names(gcs) == {f"{PREFIX}before.png", "elsewhere/kept.png"}
    [rollback] = audit(client, operator, "rollout.rollback")
    [purge] = audit(client, operator, "cleanup.purge")
    assert rollback["after"]["incident"] == purge["after"]["incident"] == incident
    assert datetime.fromisoformat(rollback["after"]["purge_uploads_since"]) == since
    assert (purge["after"]["run"], purge["actor"], rollback["actor"]) == (run_id, "olivia", "olivia")
    assert purge["reason"] == f"{incident}: rollback of {FLAG} in production: uploads broken since the deploy"
    assert rollback["id"] < purge["id"]  # the purge is asked for once the rollback is committed


@pytest.mark.parametrize(
    ("operation", "body", "status", "slug"),
    [
        ("rollback", {"purge_uploads_since": "2999-01-01T00:00:00+00:00"}, 422, "purge-window-empty"),
        ("rollback", {"purge_uploads_since": "2000-01-01T00:00:00+00:00"}, 422, "purge-window-too-wide"),
        ("rollback", {"purge_uploads_since": "2026-01-01T00:00:00"}, 422, "invalid-body"),  # no offset: no instant
        ("pause", {"purge_uploads_since": "2026-01-01T00:00:00+00:00"}, 422, "invalid-field"),
    ],
    ids=["future", "too-wide", "naive", "not-a-rollback"],
)
def test_a_purge_that_cannot_be_asked_for_refuses_the_operation_and_changes_nothing(
    client: Client, operator: dict[str, str], operation: str, body: dict[str, Any], status: int, slug: str
) -> None:
    shown = client.get(ROLLOUT, headers=operator).json()

    answer = client.post(f"{ROLLOUT}/{operation}", headers=operator, json={"reason": "bad window", **body})

    problem(answer, status, slug)
    after = client.get(ROLLOUT, headers=operator).json()
    assert (after["state"], after["revision"]) == ("running", shown["revision"])
    assert audit(client, operator, "rollout.rollback") == audit(client, operator, "cleanup.purge") == []
    assert client.get("/api/v1/cleanup/runs", headers=operator).json() == []


def test_a_rollback_by_hand_pages_on_call_as_a_guards_rollback_does(
    client: Client,
    operator: dict[str, str],
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    receiver: ScriptedReceiver,
) -> None:
    answer = client.post(f"{ROLLOUT}/rollback", headers=operator, json={"reason": "upload errors at 4%"})
    assert answer.status_code == 200, answer.text

    config = load_notification_config(settings.notifications_file)
    with httpx.Client(timeout=5) as http:
        sent = deliver_due_notifications(sessionmaker(engine), config, clock=clock, client=http)
    assert sent["failed"] == 0
    [page] = receiver.bodies("/v2/enqueue")
    assert (page["event_action"], page["payload"]["severity"]) == ("trigger", "critical")
    assert page["payload"]["summary"] == (f"{FLAG} rolled back in production by olivia: upload errors at 4%")
    assert page["payload"]["custom_details"]["kind"] == "rollback"
    assert page["payload"]["custom_details"]["actor"] == "olivia"
    # The step itself is still on the service's timeline as a change event.
    assert [c["payload"]["custom_details"]["kind"] for c in receiver.bodies("/v2/change/enqueue")][-1] == "rolled_back"


@pytest.fixture
def cli_operator(
    live_server: str,
    make_token: Callable[..., str],
    reference_images_yaml: str,
    monkeypatch: pytest.MonkeyPatch,
) -> httpx.Client:
    """The app served over HTTP with the definition applied and production running at its first stage; the CLI
    pointed at it as the operator olivia; an HTTP client with her token to look at the outcome."""
    admin = bearer(make_token(Role.ADMIN, name="definitions-admin"))
    token = make_token(Role.OPERATOR, name="olivia")
    with httpx.Client(base_url=live_server, headers=admin, timeout=10) as http:
        applied = http.post(
            "/api/v1/definitions/apply", json={"content": reference_images_yaml, "source": "reference-images.yaml"}
        )
        assert applied.status_code == 200, applied.text
        revision = http.get(ROLLOUT).json()["revision"]
        body = {"expected_revision": revision, "force": True, "reason": "canary straight to production"}
        assert http.post(f"{ROLLOUT}/start", json=body).status_code == 200
    monkeypatch.setenv("CONTROLPLANE_URL", live_server)
    monkeypatch.setenv("CONTROLPLANE_TOKEN", token)
    return httpx.Client(base_url=live_server, headers=bearer(token), timeout=10)


def served_run(http: httpx.Client, run_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        found: dict[str, Any] = http.get(f"/api/v1/cleanup/runs/{run_id}").raise_for_status().json()
        if found["status"] in ("succeeded", "failed"):
            return found
        assert time.monotonic() < deadline, f"run {run_id} still {found['status']}"
        time.sleep(0.1)  # waiting for the executor's thread, not for time to pass


def bad_window(gcs: Any, clock: FakeClock, count: int) -> datetime:
    """``before.png`` uploaded, then ``count`` bad uploads after it; the app's clock past them: the window's start."""
    before = upload(gcs, f"{PREFIX}before.png")
    since = before + timedelta(milliseconds=1)
    time.sleep(0.01)  # the emulator stamps uploads with the wall clock: the bad window starts after `before`
    for n in range(count):
        upload(gcs, f"{PREFIX}bad-{n}.png")
    clock.advance(datetime.now(UTC) - clock.now + timedelta(seconds=1))
    return since


def test_the_cli_rolls_back_with_a_purge_of_the_window_and_names_the_incident(
    cli_operator: httpx.Client, gcs: Any, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    since = bad_window(gcs, clock, 2)

    code, out, err = run(
        capsys,
        *("rollout", "rollback", FLAG, "--env", "production", "--reason", "uploads broken since the deploy"),
        *("--purge-uploads-since", since.isoformat()),
    )

    assert code == 0, err
    shown = re.search(
        r"│ incident +│ (incident-[0-9a-f]{16}): purge runs (\d+) \(`controlplane cleanup show ID`\)", out
    )
    assert shown is not None, out
    incident, run_id = shown.group(1), int(shown.group(2))
    assert re.search(r"│ state +│ rolled back ", out), out
    with cli_operator as http:
        done = served_run(http, run_id)
        assert (done["status"], done["deleted"]) == ("succeeded", 2)
        assert names(gcs) == {f"{PREFIX}before.png"}
        status = http.get(ROLLOUT).json()
        assert (status["state"], status["serving_percentage"]) == ("rolled_back", 0)
        [rollback] = http.get("/api/v1/audit", params={"action": "rollout.rollback"}).json()
        [purge] = http.get("/api/v1/audit", params={"action": "cleanup.purge"}).json()
    assert rollback["after"]["incident"] == purge["after"]["incident"] == incident
    assert rollback["actor"] == purge["actor"] == "olivia"


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        (
            "2999-01-01T00:00:00+00:00",
            "error 422 purge-window-empty: `purge_uploads_since` 2999-01-01T00:00:00+00:00 is not before the rollback",
        ),
        (
            "2000-01-01T00:00:00+00:00",
            "error 422 purge-window-too-wide: `purge_uploads_since` 2000-01-01T00:00:00+00:00 is ",
        ),
        ("yesterday", "error 422 invalid-body: "),
    ],
    ids=["future", "too-wide", "not-a-time"],
)
def test_the_cli_refuses_a_bad_purge_time_with_exit_1_and_changes_nothing(
    cli_operator: httpx.Client, capsys: pytest.CaptureFixture[str], since: str, expected: str
) -> None:
    with cli_operator as http:
        shown = http.get(ROLLOUT).json()

        code, out, err = run(
            capsys,
            *("rollout", "rollback", FLAG, "--env", "production", "--reason", "bad window"),
            *("--purge-uploads-since", since),
        )

        assert (code, out) == (1, ""), err
        assert err.startswith(expected), err
        assert "--purge-uploads-since" in err and "None" not in err
        after = http.get(ROLLOUT).json()
        assert (after["state"], after["revision"]) == ("running", shown["revision"])
        assert http.get("/api/v1/cleanup/runs").json() == []
        assert http.get("/api/v1/audit", params={"action": "rollout.rollback"}).json() == []


def test_a_purge_that_fails_to_queue_after_the_rollback_says_the_rollback_stands_and_how_to_purge_by_hand(
    cli_operator: httpx.Client,
    gcs: Any,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    since = bad_window(gcs, clock, 2)

    def lost_database(self: CleanupPurger, session: Any, **_: Any) -> list[int]:
        # The database goes away between the rollback's transaction and the purge's.
        raise OperationalError("INSERT INTO cleanup_runs ...", {}, Exception("server closed the connection"))

    monkeypatch.setattr(CleanupPurger, "request", lost_database)
    with cli_operator as http:
        answer = http.post(
            f"{ROLLOUT}/rollback",
            json={"reason": "uploads broken since the deploy", "purge_uploads_since": since.isoformat()},
        )
        body = problem(answer, 503, "purge-not-queued")
        incident, [command] = body["incident"], body["purge_commands"]
        assert body["state"] == "rolled_back"
        assert "is rolled back (committed; " in body["detail"] and "do not repeat the rollback" in body["detail"]
        assert command in body["detail"]
        assert command.startswith(f"controlplane cleanup purge --bucket {BUCKET} --prefix {PREFIX} --from ")
        assert command.endswith(f" --incident {incident}")
        # The rollback stands, audited with the incident; no purge was asked for.
        assert http.get(ROLLOUT).json()["state"] == "rolled_back"
        [rollback] = http.get("/api/v1/audit", params={"action": "rollout.rollback"}).json()
        assert rollback["after"]["incident"] == incident
        assert http.get("/api/v1/audit", params={"action": "cleanup.purge"}).json() == []

        # The command the answer gave finishes the job, as the same incident.
        monkeypatch.undo()
        monkeypatch.setenv("CONTROLPLANE_URL", str(http.base_url).rstrip("/"))
        monkeypatch.setenv("CONTROLPLANE_TOKEN", http.headers["Authorization"].removeprefix("Bearer "))
        code, out, err = run(capsys, *shlex.split(command)[1:])
        assert code == 0, err + out
        assert names(gcs) == {f"{PREFIX}before.png"}
        [purge] = http.get("/api/v1/audit", params={"action": "cleanup.purge"}).json()
        assert purge["reason"].startswith(f"{incident}: rollback of {FLAG} in production: ")
        assert purge["after"]["incident"] == rollback["after"]["incident"] == incident
        # An incident id not of the rollbacks' form is refused, and nothing is queued.
        malformed = http.post(
            "/api/v1/cleanup/purges",
            json={
                "bucket": BUCKET,
                "from": since.isoformat(),
                "to": clock().isoformat(),
                "reason": "x",
                "incident": "7",
            },
        )
        problem(malformed, 422, "invalid-body")
        assert len(http.get("/api/v1/cleanup/runs").json()) == 1
