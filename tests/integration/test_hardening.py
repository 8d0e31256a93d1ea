"""Hardening: hostile or sloppy input is refused with 4xx, never 500; unknown tokens cannot dodge rate limits;
concurrent identical applies on PostgreSQL agree on one flag.
"""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.app import create_app
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, problem

if TYPE_CHECKING:
    from tests.conftest import FakeClock

API = "/api/v1"
FLAG = "enable-reference-images"
REQUEST_TIMEOUT_SECONDS = 60.0

Client = TestClient[Litestar]


def audit(client: Client, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"{API}/audit", headers=headers, params=params)
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def new_flag(**fields: Any) -> dict[str, Any]:
    return {"key": "hardened-flag", "type": "boolean", "variants": {"on": True, "off": False}, "off_variant": "off"} | (
        fields
    )


# --- audit queries ------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize("name", ["since", "until"])
def test_an_audit_query_with_a_timezone_less_time_is_refused_with_422_invalid_query(
    client: Client, admin_headers: dict[str, str], name: str
) -> None:
    response = client.get(f"{API}/audit", headers=admin_headers, params={name: "2026-11-01T12:00:00"})

    body = problem(response, 422, "invalid-query")
    assert body["field"] == name
    assert "time zone" in body["detail"]


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize(
    "before_id", [10**20, 2**63, 2**31, 0, -1], ids=["1e20", "2^63", "2^31 (past a 32-bit id)", "zero", "negative"]
)
def test_an_audit_before_id_outside_the_id_range_is_refused_with_422_not_500(
    client: Client, admin_headers: dict[str, str], before_id: int
) -> None:
    response = client.get(f"{API}/audit", headers=admin_headers, params={"before_id": before_id})

    body = problem(response, 422, "invalid-body")
    assert "before_id" in str(body["errors"]), body


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize("before_id", [2**31 - 1], ids=["2^31-1"])
def test_an_audit_before_id_above_every_record_pages_from_the_newest_record(
    client: Client, admin_headers: dict[str, str], before_id: int
) -> None:
    everything = audit(client, admin_headers, limit=1000)
    assert everything

    assert audit(client, admin_headers, before_id=before_id, limit=1000) == everything


@pytest.mark.usefixtures("applied")
def test_an_audit_time_with_an_offset_selects_the_same_records_as_its_utc_form(
    client: Client, admin_headers: dict[str, str], clock: FakeClock
) -> None:
    applied_at = clock()
    assert applied_at.tzinfo is UTC
    just_before = applied_at - timedelta(seconds=1)
    in_utc = just_before.isoformat()
    in_plus_two = just_before.astimezone(timezone(timedelta(hours=2)))
    assert in_plus_two.isoformat().endswith("+02:00")
    everything = audit(client, admin_headers, limit=1000)
    assert everything

    assert audit(client, admin_headers, since=in_utc, limit=1000) == everything
    assert audit(client, admin_headers, since=in_plus_two.isoformat(), limit=1000) == everything
    assert audit(client, admin_headers, until=in_plus_two.isoformat(), limit=1000) == []


# --- flag bodies --------------------------------------------------------------------------------------------------


def test_creating_a_flag_with_a_200_character_owner_is_refused_with_422_invalid_body(
    client: Client, admin_headers: dict[str, str]
) -> None:
    response = client.post(f"{API}/flags", headers=admin_headers, json=new_flag(owner="o" * 200))

    body = problem(response, 422, "invalid-body")
    assert any(error.get("key") == "owner" for error in body["errors"]), body
    problem(client.get(f"{API}/flags/hardened-flag", headers=admin_headers), 404, "flag-not-found")
    assert client.get(f"{API}/flags", headers=admin_headers).json() == []


def test_changing_a_flag_owner_to_200_characters_is_refused_with_422_invalid_body(
    client: Client, admin_headers: dict[str, str]
) -> None:
    created = client.post(f"{API}/flags", headers=admin_headers, json=new_flag(owner="o" * 128))
    assert created.status_code == 201, created.text
    before = created.json()

    response = client.patch(
        f"{API}/flags/hardened-flag",
        headers={**admin_headers, "If-Match": str(before["revision"])},
        json={"owner": "o" * 200},
    )

    problem(response, 422, "invalid-body")
    assert client.get(f"{API}/flags/hardened-flag", headers=admin_headers).json() == before


# --- NUL characters -----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_a_nul_character_in_an_audit_filter_or_a_flag_key_is_answered_never_a_500(
    client: Client, admin_headers: dict[str, str], engine: Engine
) -> None:
    by_actor = client.get(f"{API}/audit", headers=admin_headers, params={"actor": "admin\x00"})
    by_key = client.get(f"{API}/flags/{FLAG}%00", headers=admin_headers)

    if engine.dialect.name == "postgresql":
        # PostgreSQL cannot hold NUL in text: the value is refused as bad input.
        problem(by_actor, 422, "invalid-value")
        problem(by_key, 422, "invalid-value")
    else:
        assert by_actor.status_code == 200, by_actor.text
        assert by_actor.json() == []
        problem(by_key, 404, "flag-not-found")


def test_a_nul_character_in_a_flag_description_is_stored_as_sent_or_refused_never_a_500(
    client: Client, admin_headers: dict[str, str]
) -> None:
    description = "before\x00after"

    response = client.post(f"{API}/flags", headers=admin_headers, json=new_flag(description=description))

    assert response.status_code in (201, 422), response.text
    read = client.get(f"{API}/flags/hardened-flag", headers=admin_headers)
    if response.status_code == 201:
        assert read.json()["description"] == description
    else:
        problem(read, 404, "flag-not-found")


# --- plans the calendar cannot hold -------------------------------------------------------------------------------


def test_a_plan_with_a_ten_thousand_year_bake_is_refused_at_apply_or_starts_without_a_500(
    client: Client, admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    content = reference_images_yaml.replace("bake: 30m", "bake: 3650000d")
    assert content.count("bake: 3650000d") == 1

    applied = client.post(f"{API}/definitions/apply", headers=admin_headers, json={"content": content})

    assert applied.status_code in (200, 422), applied.text
    if applied.status_code == 422:
        assert problem(applied, 422, "invalid-definition")["field"].endswith(".bake")
        return
    rollout = f"{API}/flags/{FLAG}/environments/qa/rollout"
    revision = client.get(rollout, headers=admin_headers).json()["revision"]
    started = client.post(f"{rollout}/start", headers=admin_headers, json={"expected_revision": revision})
    assert started.status_code == 200, started.text
    assert client.get(rollout, headers=admin_headers).status_code == 200


# --- rate limits --------------------------------------------------------------------------------------------------


def test_unknown_tokens_are_rate_limited_by_client_address(
    database_url: str, engine: Engine, clock: FakeClock, admin_headers: dict[str, str]
) -> None:
    settings = Settings(
        database_url=database_url,
        scheduler_enabled=False,
        replica_id="test-replica",
        rate_limit_per_minute=1000,
        rate_limit_per_address_per_minute=5,
    )
    invented = [{"Authorization": f"Bearer cpt_{secrets.token_urlsafe(32)}"} for _ in range(6)]

    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        answers = [client.get(f"{API}/flags", headers=headers) for headers in invented]
        # The limit is the address's, whatever the token: a valid one from the same address waits too.
        valid = client.get(f"{API}/flags", headers=admin_headers)

    for answer in answers[:5]:
        problem(answer, 401, "unauthenticated")
    for refused in (answers[5], valid):
        problem(refused, 429, "rate-limited")
        retry_after = refused.headers["Retry-After"]
        assert retry_after.isdigit(), retry_after
        assert 1 <= int(retry_after) <= 60


# --- concurrent applies -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """One racer's response."""

    status: int
    body: dict[str, Any]


def test_concurrent_identical_applies_on_postgresql_answer_200_or_409_and_create_the_flag_once(
    postgres_server: tuple[str, dict[str, str]],
) -> None:
    base_url, headers = postgres_server
    content = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    racers = 8
    barrier = threading.Barrier(racers)

    def racer(number: int) -> Answer:
        with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
            barrier.wait(timeout=REQUEST_TIMEOUT_SECONDS)
            response = client.post(
                f"{API}/definitions/apply", json={"content": content, "source": f"racer-{number}.yaml"}
            )
        return Answer(response.status_code, response.json())

    with ThreadPoolExecutor(max_workers=racers) as pool:
        answers = list(pool.map(racer, range(racers)))

    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) <= {200, 409}, statuses
    assert 200 in statuses, statuses
    refusals = {str(answer.body["type"]).rsplit("/", 1)[-1] for answer in answers if answer.status == 409}
    assert refusals <= {"concurrent-change", "stale-revision"}, refusals
    created = [answer for answer in answers if answer.status == 200 and answer.body["changed"]]
    assert len(created) == 1, statuses
    assert {"created"} <= {change["action"] for change in created[0].body["changes"]}
    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        flags = client.get(f"{API}/flags").json()
        creations = client.get(f"{API}/audit", params={"action": "flag.create"}).json()
        plans = client.get(f"{API}/audit", params={"action": "plan.apply"}).json()
        status = client.get(f"{API}/flags/{FLAG}/environments/production/rollout")
        verification = client.get(f"{API}/audit/verify").json()
    assert [flag["key"] for flag in flags] == [FLAG]
    assert [record["target"] for record in creations] == [FLAG]
    assert sorted(record["environment"] for record in plans) == ["production", "qa", "staging"]
    assert status.status_code == 200, status.text
    assert [stage["percentage"] for stage in status.json()["stages"]] == [10.0, 50.0, 100.0]
    assert verification["ok"] is True
