"""The cleanup API end to end: roles, refusals, and real runs and purges through the app's background executor,
with the real google-cloud-storage client on gcp-storage-emulator, on each database backend.

The app's clock is a FakeClock set to the wall clock when the test starts: selection judges expiry against it,
while the emulator stamps uploads with real time, so the two must be close for purge windows to make sense.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.auth.models import ApiToken
from controlplane.cleanup import runs as cleanup_runs
from controlplane.cleanup.schemas import RunRequest
from controlplane.cleanup.storage import DeleteResult, GcsStorage, ObjectPage, ObjectRef, Storage
from controlplane.db import session_scope
from controlplane.settings import Settings
from tests.cleanup_fixtures import BUCKET, GRACE, POLICY, PREFIX, emulator, expires, names, upload
from tests.conftest import FakeClock, bearer, problem
from tests.gcs_emulator import emulated_bucket

API = "/api/v1/cleanup"
FINISHED = ("succeeded", "failed")
#: How long a test waits for the background executor before calling the run stuck.
RUN_TIMEOUT_SECONDS = 30.0


class Buckets:
    """The app's ``storage_for``: GcsStorage on the emulator; while ``gate`` is set, listings wait for it to open."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.gate: threading.Event | None = None
        self.listing = threading.Event()

    def __call__(self, bucket: str) -> Storage:
        inner = GcsStorage(self.client, bucket)
        return inner if self.gate is None else GatedStorage(inner, self.gate, self.listing)


class GatedStorage:
    """A storage whose listing waits on an event: keeps a run `running` for as long as a test needs."""

    def __init__(self, inner: Storage, gate: threading.Event, listing: threading.Event) -> None:
        self._inner = inner
        self._gate = gate
        self._listing = listing

    def list_page(self, prefix: str, page_token: str | None) -> ObjectPage:
        """Say the listing started, wait for the gate, then list."""
        self._listing.set()
        if not self._gate.wait(timeout=RUN_TIMEOUT_SECONDS):
            raise TimeoutError("the test never opened the gate")
        return self._inner.list_page(prefix, page_token)

    def delete_batch(self, refs: Sequence[ObjectRef]) -> list[DeleteResult]:
        """Delete as the wrapped storage does."""
        return self._inner.delete_batch(refs)


@pytest.fixture(scope="module")
def emulator_host() -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port, in memory, for this module."""
    yield from emulator()


@pytest.fixture
def gcs(emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real storage client on the emulator with an empty `reference-images` bucket."""
    yield from emulated_bucket(emulator_host, monkeypatch, BUCKET)


@pytest.fixture
def clock() -> FakeClock:
    """The app's clock, starting at the wall clock (the emulator stamps uploads with real time)."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
def buckets(gcs: Any) -> Buckets:
    """What the app builds its bucket access with."""
    return Buckets(gcs)


@pytest.fixture
def app(settings: Settings, engine: Engine, clock: FakeClock, buckets: Buckets) -> Litestar:
    """The application with the fake clock and storage on the emulator (overrides conftest's ``app``)."""
    return create_app(settings, engine=engine, clock=clock, storage_for=buckets)


@pytest.fixture
def operator(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of an operator token without an environment, named `oncall`."""
    return bearer(make_token(Role.OPERATOR, name="oncall"))


def wait_for(client: TestClient[Litestar], headers: dict[str, str], run_id: int) -> dict[str, Any]:
    """Poll a run until it finishes; fail when it does not within the timeout."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        response = client.get(f"{API}/runs/{run_id}", headers=headers)
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] in FINISHED:
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}"
        # Ten reads a second at most: the token's limit is 600 a minute.
        time.sleep(0.1)


def start_run(
    client: TestClient[Litestar], headers: dict[str, str], *, dry_run: bool = False, reason: str = ""
) -> dict[str, Any]:
    """Ask for a run of the policy; return the accepted (queued) run."""
    body = {"dry_run": dry_run, "reason": reason}
    response = client.post(f"{API}/policies/{POLICY}/runs", headers=headers, json=body)
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def policy(client: TestClient[Litestar], headers: dict[str, str]) -> dict[str, Any]:
    """The policy as `GET /policies` shows it."""
    response = client.get(f"{API}/policies", headers=headers)
    assert response.status_code == 200, response.text
    [shown] = [p for p in response.json() if p["name"] == POLICY]
    return dict(shown)


def audit(client: TestClient[Litestar], headers: dict[str, str], action: str | None = None) -> list[dict[str, Any]]:
    """Audit records, newest first, of one action when given."""
    params: dict[str, Any] = {"limit": 1000}
    if action is not None:
        params["action"] = action
    response = client.get("/api/v1/audit", headers=headers, params=params)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def runs(client: TestClient[Litestar], headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """`GET /runs` with these query parameters."""
    response = client.get(f"{API}/runs", headers=headers, params=params)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def at(moment: datetime) -> str:
    """An instant as a request sends it: ISO 8601 with its offset."""
    return moment.isoformat()


def instant(text: str) -> datetime:
    """An API timestamp as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def sample(metrics: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the Prometheus text, or None when there is no such series."""
    for family in text_string_to_metric_families(metrics):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return None


# --- who may do what -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_a_viewer_lists_policies_and_runs_but_may_start_neither_a_run_nor_a_purge(
    client: TestClient[Litestar], make_token: Callable[..., str], clock: FakeClock
) -> None:
    viewer = bearer(make_token(Role.VIEWER))

    shown = policy(client, viewer)
    assert (shown["bucket"], shown["prefix"], shown["schedule"]) == (BUCKET, PREFIX, "17 * * * *")
    assert shown["last_run"] is None and shown["last_success_at"] is None and shown["overdue"] is False
    assert runs(client, viewer) == []

    problem(client.post(f"{API}/policies/{POLICY}/runs", headers=viewer, json={}), 403, "forbidden")
    purge = {"bucket": BUCKET, "from": at(clock.now - timedelta(hours=2)), "to": at(clock.now), "reason": "bad"}
    problem(client.post(f"{API}/purges", headers=viewer, json=purge), 403, "forbidden")
    assert runs(client, viewer) == []


@pytest.mark.usefixtures("applied")
def test_a_token_scoped_to_an_environment_may_not_act_on_a_bucket(
    client: TestClient[Litestar],
    make_token: Callable[..., str],
    admin_headers: dict[str, str],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    # `create_token` scopes only evaluate tokens, and those the role guard refuses first.
    evaluator = bearer(make_token(Role.EVALUATE, environment="production"))
    problem(client.post(f"{API}/policies/{POLICY}/runs", headers=evaluator, json={}), 403, "forbidden")
    # The controller's own refusal guards against an operator row that has an environment all the same.
    scoped = make_token(Role.OPERATOR, name="scoped-operator")
    with session_scope(session_factory) as session:
        session.execute(update(ApiToken).where(ApiToken.name == "scoped-operator").values(environment="production"))
    records = len(audit(client, admin_headers))

    refused = client.post(f"{API}/policies/{POLICY}/runs", headers=bearer(scoped), json={})
    assert "production" in problem(refused, 403, "token-environment-scoped")["detail"]
    purge = {"bucket": BUCKET, "from": at(clock.now - timedelta(hours=2)), "to": at(clock.now), "reason": "bad"}
    problem(client.post(f"{API}/purges", headers=bearer(scoped), json=purge), 403, "token-environment-scoped")

    assert runs(client, admin_headers) == []
    assert len(audit(client, admin_headers)) == records


@pytest.mark.usefixtures("applied")
def test_an_unknown_policy_is_404_and_an_unknown_run_too(
    client: TestClient[Litestar], operator: dict[str, str]
) -> None:
    body = problem(
        client.post(f"{API}/policies/no-such-policy/runs", headers=operator, json={}), 404, "cleanup-policy-not-found"
    )
    assert f"`{POLICY}`" in body["detail"]
    problem(client.get(f"{API}/runs/4242", headers=operator), 404, "cleanup-run-not-found")
    # Past any id a run can have: the same refusal on every database, before a query is sent.
    assert client.get(f"{API}/runs/99999999999999", headers=operator).status_code == 422


@pytest.mark.usefixtures("applied")
def test_a_run_may_be_asked_for_without_a_body(
    client: TestClient[Litestar], operator: dict[str, str], session_factory: sessionmaker[Session]
) -> None:
    started = client.post(f"{API}/policies/{POLICY}/runs", headers=operator)
    assert started.status_code == 202, started.text
    assert started.json()["dry_run"] is False
    wait_for(client, operator, started.json()["id"])


@pytest.mark.usefixtures("applied")
def test_a_second_run_while_one_is_queued_is_409(
    client: TestClient[Litestar],
    operator: dict[str, str],
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    # Queued straight in the database: nothing submits it to the executor, so it stays queued.
    with session_scope(session_factory) as session:
        queued = cleanup_runs.request_run(session, name=POLICY, body=RunRequest(), actor="someone", now=clock())

    refused = client.post(f"{API}/policies/{POLICY}/runs", headers=operator, json={})
    assert problem(refused, 409, "cleanup-run-in-progress")["run"] == queued.id
    assert [run["id"] for run in runs(client, operator)] == [queued.id]


@pytest.mark.usefixtures("applied")
def test_a_second_run_while_one_is_running_is_409_and_once_it_finished_a_new_one_starts(
    client: TestClient[Litestar], operator: dict[str, str], buckets: Buckets
) -> None:
    buckets.gate = threading.Event()
    try:
        first = start_run(client, operator)
        assert buckets.listing.wait(RUN_TIMEOUT_SECONDS), "the run never started listing"
        assert client.get(f"{API}/runs/{first['id']}", headers=operator).json()["status"] == "running"

        refused = client.post(f"{API}/policies/{POLICY}/runs", headers=operator, json={"dry_run": True})
        assert problem(refused, 409, "cleanup-run-in-progress")["run"] == first["id"]
    finally:
        buckets.gate.set()

    assert wait_for(client, operator, first["id"])["status"] == "succeeded"
    second = start_run(client, operator)
    assert wait_for(client, operator, second["id"])["status"] == "succeeded"


# --- purge validation ------------------------------------------------------------------------------------------


def _purge_body(now: datetime, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "bucket": BUCKET,
        "from": at(now - timedelta(hours=2)),
        "to": at(now - timedelta(hours=1)),
        "reason": "bad upload batch",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


PURGE_REFUSALS: list[tuple[str, Callable[[datetime], dict[str, Any]], int, str]] = [
    ("bucket not managed", lambda now: _purge_body(now, bucket="other-bucket"), 422, "bucket-not-managed"),
    ("invalid bucket", lambda now: _purge_body(now, bucket="Not_A_Bucket!"), 422, "invalid-bucket"),
    ("bucket named google", lambda now: _purge_body(now, bucket="my-google-bucket"), 422, "invalid-bucket"),
    ("prefix with a line break", lambda now: _purge_body(now, prefix="a\nb"), 422, "invalid-prefix"),
    ("empty window", lambda now: _purge_body(now, **{"from": at(now), "to": at(now)}), 422, "purge-window-empty"),
    (
        "reversed window",
        lambda now: _purge_body(now, **{"from": at(now), "to": at(now - timedelta(hours=1))}),
        422,
        "purge-window-empty",
    ),
    (
        "window over 31 days",
        lambda now: _purge_body(now, **{"from": at(now - timedelta(days=32)), "to": at(now)}),
        422,
        "purge-window-too-wide",
    ),
    (
        "window ending in the future",
        lambda now: _purge_body(now, to=at(now + timedelta(minutes=6))),
        422,
        "purge-window-in-future",
    ),
    ("reason missing", lambda now: _purge_body(now, reason=None), 422, "invalid-body"),
    ("reason empty", lambda now: _purge_body(now, reason=""), 422, "invalid-body"),
    ("bucket missing", lambda now: _purge_body(now, bucket=None), 422, "invalid-body"),
    (
        "time without an offset",
        lambda now: _purge_body(now, **{"from": (now - timedelta(hours=2)).replace(tzinfo=None).isoformat()}),
        422,
        "invalid-body",
    ),
    ("unknown field", lambda now: _purge_body(now, force=True), 422, "invalid-body"),
]


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize(
    ("build", "status", "slug"),
    [case[1:] for case in PURGE_REFUSALS],
    ids=[case[0] for case in PURGE_REFUSALS],
)
def test_a_refused_purge_is_a_problem_and_changes_nothing(
    client: TestClient[Litestar],
    operator: dict[str, str],
    admin_headers: dict[str, str],
    gcs: Any,
    clock: FakeClock,
    build: Callable[[datetime], dict[str, Any]],
    status: int,
    slug: str,
) -> None:
    upload(gcs, f"{PREFIX}kept.png")
    records = audit(client, admin_headers)

    problem(client.post(f"{API}/purges", headers=operator, json=build(clock.now)), status, slug)

    assert runs(client, operator) == []
    assert audit(client, admin_headers) == records
    assert names(gcs) == {f"{PREFIX}kept.png"}


@pytest.mark.usefixtures("applied")
def test_a_purge_window_of_exactly_the_maximum_and_ending_within_the_skew_is_accepted(
    client: TestClient[Litestar], operator: dict[str, str], clock: FakeClock
) -> None:
    end = clock.now + timedelta(minutes=5)
    body = _purge_body(clock.now, **{"from": at(end - timedelta(days=31)), "to": at(end)}, dry_run=True)
    accepted = client.post(f"{API}/purges", headers=operator, json=body)
    assert accepted.status_code == 202, accepted.text
    assert wait_for(client, operator, accepted.json()["id"])["status"] == "succeeded"


# --- runs ------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_a_run_deletes_expired_images_keeps_the_rest_and_the_policy_is_no_longer_overdue(
    client: TestClient[Litestar], operator: dict[str, str], admin_headers: dict[str, str], gcs: Any, clock: FakeClock
) -> None:
    # Two hours past the policy's creation (its allowance: two of its hourly gaps) plus a bit: overdue.
    clock.advance(timedelta(hours=2, minutes=1))
    assert policy(client, operator)["overdue"] is True
    now = clock.now
    for index in range(3):
        upload(gcs, f"{PREFIX}expired-{index}.png", expires(now - GRACE - timedelta(minutes=1)))
    upload(gcs, f"{PREFIX}in-grace.png", expires(now - GRACE + timedelta(minutes=1)))
    upload(gcs, f"{PREFIX}valid.png", expires(now + timedelta(hours=20)))
    upload(gcs, f"{PREFIX}no-metadata.png")
    upload(gcs, f"{PREFIX}garbage.png", {"signed_url_expires_at": "tomorrow"})
    upload(gcs, "elsewhere/expired.png", expires(now - timedelta(days=9)))

    accepted = start_run(client, operator, reason="weekly tidy")
    assert (accepted["status"], accepted["kind"], accepted["policy"]) == ("queued", "manual", POLICY)
    run = wait_for(client, operator, accepted["id"])

    assert names(gcs) == {
        f"{PREFIX}in-grace.png",
        f"{PREFIX}valid.png",
        f"{PREFIX}no-metadata.png",
        f"{PREFIX}garbage.png",
        "elsewhere/expired.png",
    }
    assert run["status"] == "succeeded", run
    assert (run["scanned"], run["matched"], run["deleted"], run["failed"], run["already_gone"]) == (7, 3, 3, 0, 0)
    assert (run["matched_bytes"], run["bytes_freed"]) == (30, 30)
    assert run["matched_by_reason"] == {"signed_url_expired": 3}
    assert run["skipped"] == {} and run["error"] == "" and run["dry_run"] is False
    assert (run["requested_by"], run["reason"]) == ("oncall", "weekly tidy")
    assert (run["bucket"], run["prefix"]) == (BUCKET, PREFIX)
    assert run["attempts"] == 1 and run["pages"] == 1
    assert instant(run["finished_at"]) == now

    shown = policy(client, operator)
    assert instant(shown["last_success_at"]) == now
    assert instant(shown["success_deadline"]) == now + timedelta(hours=2)
    assert shown["overdue"] is False
    assert shown["last_run"]["id"] == run["id"]
    [record] = audit(client, admin_headers, "cleanup.run")
    assert (record["actor"], record["target"], record["reason"]) == ("oncall", POLICY, "weekly tidy")
    assert record["after"]["run"] == run["id"]

    # A month on, images without a readable expiry are past the policy's 30 days, and every URL has expired.
    clock.advance(timedelta(days=31))
    assert policy(client, operator)["overdue"] is True
    later = wait_for(client, operator, start_run(client, operator)["id"])
    assert later["matched_by_reason"] == {
        "signed_url_expired": 2,
        "expiry_missing_past_age": 1,
        "expiry_unreadable_past_age": 1,
    }
    assert names(gcs) == {"elsewhere/expired.png"}
    assert [listed["id"] for listed in runs(client, operator, policy=POLICY)] == [later["id"], run["id"]]
    assert [listed["id"] for listed in runs(client, operator, policy=POLICY, limit=1)] == [later["id"]]
    assert runs(client, operator, policy="no-such-policy") == []


@pytest.mark.usefixtures("applied")
def test_a_dry_run_deletes_nothing_reports_what_it_would_and_is_no_success(
    client: TestClient[Litestar], operator: dict[str, str], admin_headers: dict[str, str], gcs: Any, clock: FakeClock
) -> None:
    for index in range(3):
        upload(gcs, f"{PREFIX}expired-{index}.png", expires(clock.now - timedelta(days=2)))
    upload(gcs, f"{PREFIX}valid.png", expires(clock.now + timedelta(days=2)))

    run = wait_for(client, operator, start_run(client, operator, dry_run=True)["id"])

    assert run["status"] == "succeeded" and run["dry_run"] is True
    assert (run["scanned"], run["matched"], run["matched_bytes"]) == (4, 3, 30)
    assert (run["deleted"], run["bytes_freed"]) == (0, 0)
    assert run["matched_by_reason"] == {"signed_url_expired": 3}
    assert len(names(gcs)) == 4
    assert audit(client, admin_headers, "cleanup.run") == []
    shown = policy(client, operator)
    assert shown["last_success_at"] is None and shown["last_run"]["id"] == run["id"]


@pytest.mark.usefixtures("applied")
def test_a_run_that_cannot_list_its_bucket_fails_with_the_reason(
    client: TestClient[Litestar], operator: dict[str, str], gcs: Any, clock: FakeClock
) -> None:
    gcs.bucket(BUCKET).delete(force=True)

    run = wait_for(client, operator, start_run(client, operator)["id"])

    assert run["status"] == "failed"
    assert "NotFound" in run["error"]
    assert policy(client, operator)["last_success_at"] is None
    # Failed is finished: the next request is not refused as in progress.
    gcs.create_bucket(BUCKET)
    assert wait_for(client, operator, start_run(client, operator)["id"])["status"] == "succeeded"


@pytest.mark.usefixtures("applied")
def test_a_purge_deletes_exactly_the_uploads_of_its_window_and_is_audited_when_asked_and_when_done(
    client: TestClient[Litestar], operator: dict[str, str], admin_headers: dict[str, str], gcs: Any, clock: FakeClock
) -> None:
    created = [upload(gcs, f"{PREFIX}{index}.png") for index in range(5)]
    assert created == sorted(created) and len(set(created)) == 5
    other = upload(gcs, "elsewhere/late.png")
    clock.now = max(datetime.now(UTC), clock.now)
    window = {"bucket": BUCKET, "from": at(created[1]), "to": at(created[3]), "reason": "rollback of batch 7"}

    dry = client.post(f"{API}/purges", headers=operator, json={**window, "dry_run": True})
    assert dry.status_code == 202, dry.text
    rehearsal = wait_for(client, operator, dry.json()["id"])
    assert (rehearsal["matched"], rehearsal["deleted"], rehearsal["status"]) == (2, 0, "succeeded")
    assert audit(client, admin_headers, "cleanup.purge") == []
    assert len(names(gcs)) == 6

    accepted = client.post(f"{API}/purges", headers=operator, json=window)
    assert accepted.status_code == 202, accepted.text
    assert (accepted.json()["kind"], accepted.json()["policy"]) == ("purge", None)
    run = wait_for(client, operator, accepted.json()["id"])

    # [created[1], created[3]): the upload at the start instant goes, the one at the end instant stays.
    assert names(gcs) == {f"{PREFIX}0.png", f"{PREFIX}3.png", f"{PREFIX}4.png", "elsewhere/late.png"}
    assert other > created[3]
    assert run["status"] == "succeeded"
    assert (run["scanned"], run["matched"], run["deleted"], run["bytes_freed"]) == (6, 2, 2, 20)
    assert run["matched_by_reason"] == {"uploaded_in_window": 2}
    assert run["selection"] == {"uploaded_between": {"from": at(created[1]), "to": at(created[3])}}

    [requested] = audit(client, admin_headers, "cleanup.purge")
    [finished] = audit(client, admin_headers, "cleanup.purge.finished")
    assert requested["id"] < finished["id"]
    assert (requested["actor"], requested["target_type"], requested["target"]) == ("oncall", "bucket", BUCKET)
    assert requested["reason"] == finished["reason"] == "rollback of batch 7"
    assert requested["after"]["run"] == run["id"]
    assert finished["actor"].startswith("cleanup:test-replica/")
    assert finished["after"] == {
        "run": run["id"],
        "status": "succeeded",
        "deleted": 2,
        "bytes_freed": 20,
        "skipped": {},
        "failed": 0,
    }
    # A purge is no policy's run: it does not count as the policy's success.
    assert policy(client, operator)["last_success_at"] is None


# --- metrics ---------------------------------------------------------------------------------------------------


def _metrics_once(client: TestClient[Litestar], ready: Callable[[str], bool]) -> str:
    # The executor counts a run after it recorded it finished: give the counters a moment to follow.
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while True:
        text = client.get("/metrics").text
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


@pytest.mark.usefixtures("applied")
def test_metrics_after_a_run_count_its_objects_and_move_the_success_gauges(
    client: TestClient[Litestar], operator: dict[str, str], gcs: Any, clock: FakeClock
) -> None:
    created_at = clock.now
    labels = {"policy": POLICY, "bucket": BUCKET}
    before = client.get("/metrics").text
    assert sample(before, "controlplane_cleanup_last_success_timestamp_seconds", **labels) is None
    deadline = sample(before, "controlplane_cleanup_success_deadline_timestamp_seconds", **labels)
    assert deadline == (created_at + timedelta(hours=2)).timestamp()

    clock.advance(timedelta(minutes=30))
    for index in range(4):
        upload(gcs, f"{PREFIX}expired-{index}.png", expires(clock.now - timedelta(days=1)))
    run = wait_for(client, operator, start_run(client, operator)["id"])
    assert run["deleted"] == 4

    counted = {"policy": POLICY, "kind": "manual"}
    text = _metrics_once(
        client, lambda t: sample(t, "controlplane_cleanup_runs_total", **counted, status="succeeded") is not None
    )
    assert sample(text, "controlplane_cleanup_objects_total", **counted, outcome="deleted") == 4
    assert sample(text, "controlplane_cleanup_objects_total", **counted, outcome="failed") is None
    assert sample(text, "controlplane_cleanup_runs_total", **counted, status="succeeded") == 1
    assert sample(text, "controlplane_cleanup_run_duration_seconds_count", **counted) == 1
    assert sample(text, "controlplane_cleanup_last_success_timestamp_seconds", **labels) == clock.now.timestamp()
    due = clock.now + timedelta(hours=2)
    assert sample(text, "controlplane_cleanup_success_deadline_timestamp_seconds", **labels) == due.timestamp()

    # A dry run counts as a run, never as objects acted on.
    upload(gcs, f"{PREFIX}expired-more.png", expires(clock.now - timedelta(days=1)))
    wait_for(client, operator, start_run(client, operator, dry_run=True)["id"])
    text = _metrics_once(
        client, lambda t: sample(t, "controlplane_cleanup_runs_total", **counted, status="succeeded") == 2
    )
    assert sample(text, "controlplane_cleanup_runs_total", **counted, status="succeeded") == 2
    assert sample(text, "controlplane_cleanup_objects_total", **counted, outcome="deleted") == 4
