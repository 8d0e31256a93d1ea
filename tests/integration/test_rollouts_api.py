"""The reference-images rollout over HTTP: qa, staging, production in stages, rollback, restart, and its audit trail."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from controlplane.api.roles import Role

API = "/api/v1"
FLAG = "enable-reference-images"
OPERATOR = "olivia-operator"


class AdvancingClock(Protocol):
    """The test clock: callable for the time, moved by hand."""

    def __call__(self) -> datetime: ...

    def advance(self, delta: timedelta) -> None: ...


Client = TestClient[Litestar]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def status(client: Client, headers: dict[str, str], environment: str) -> dict[str, Any]:
    response = client.get(f"{API}/flags/{FLAG}/environments/{environment}/rollout", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def environment_state(client: Client, headers: dict[str, str], environment: str) -> dict[str, Any]:
    response = client.get(f"{API}/flags/{FLAG}/environments/{environment}", headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def history(client: Client, headers: dict[str, str], environment: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/flags/{FLAG}/environments/{environment}/rollouts", headers=headers)
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def post_operation(
    client: Client, headers: dict[str, str], environment: str, operation: str, **body: Any
) -> httpx.Response:
    return client.post(f"{API}/flags/{FLAG}/environments/{environment}/rollout/{operation}", headers=headers, json=body)


def operate(client: Client, headers: dict[str, str], environment: str, operation: str, **body: Any) -> dict[str, Any]:
    """Apply an operation against the revision currently shown; it must succeed."""
    body.setdefault("expected_revision", status(client, headers, environment)["revision"])
    response = post_operation(client, headers, environment, operation, **body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def complete(client: Client, headers: dict[str, str], environment: str) -> None:
    """Start a single-stage environment and advance it to completion."""
    operate(client, headers, environment, "start")
    done = operate(client, headers, environment, "advance", reason=f"{environment} looks healthy")
    assert done["state"] == "completed"


def apply(client: Client, headers: dict[str, str], content: str) -> dict[str, Any]:
    response = client.post(
        f"{API}/definitions/apply", headers=headers, json={"content": content, "source": "reference-images.yaml"}
    )
    assert response.status_code == 200, response.text
    report: dict[str, Any] = response.json()
    return report


def assert_serves(client: Client, headers: dict[str, str], environment: str, shown: dict[str, Any]) -> None:
    """The environment's flag state agrees with what rollout status says it serves."""
    state = environment_state(client, headers, environment)
    assert state["enabled"] is shown["enabled"]
    assert state["rollout"]["percentage"] == shown["percentage"]
    assert state["rollout"]["variant"] == "on"
    assert state["revision"] == shown["revision"]


@pytest.fixture
def operator(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of an operator token; its name is the audit actor."""
    return {"Authorization": f"Bearer {make_token(Role.OPERATOR, name=OPERATOR)}"}


@pytest.fixture
def staging_completed(applied: None, client: Client, operator: dict[str, str]) -> None:
    """qa and staging completed, production pending."""
    complete(client, operator, "qa")
    complete(client, operator, "staging")


def roll_production_out_and_back(client: Client, headers: dict[str, str]) -> None:
    operate(client, headers, "production", "start")
    operate(client, headers, "production", "advance", reason="10% is healthy")
    operate(client, headers, "production", "advance", reason="50% is healthy")
    operate(client, headers, "production", "rollback", reason="upload errors spiked")


# --- the walkthrough ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_the_flag_is_promoted_through_qa_staging_and_production_stages_then_rolled_back(
    client: Client, operator: dict[str, str]
) -> None:
    qa = operate(client, operator, "qa", "start")
    assert (qa["state"], qa["percentage"], qa["enabled"]) == ("running", 100.0, True)
    qa = operate(client, operator, "qa", "advance", reason="qa canary is healthy")
    assert (qa["state"], qa["percentage"], qa["enabled"]) == ("completed", 100.0, True)
    assert_serves(client, operator, "qa", qa)

    staging = operate(client, operator, "staging", "start")
    assert staging["previous_environment"] == "qa"
    assert staging["previous_environment_state"] == "completed"
    staging = operate(client, operator, "staging", "advance", reason="staging is healthy")
    assert staging["state"] == "completed"

    production = operate(client, operator, "production", "start")
    assert (production["state"], production["stage_index"], production["percentage"]) == ("running", 0, 10.0)
    assert production["enabled"] is True
    assert production["started_by"] == OPERATOR
    assert production["forced_reason"] is None
    assert_serves(client, operator, "production", production)

    production = operate(client, operator, "production", "advance", reason="10% is healthy")
    assert (production["state"], production["stage_index"], production["percentage"]) == ("running", 1, 50.0)
    assert_serves(client, operator, "production", production)

    production = operate(client, operator, "production", "advance", reason="50% is healthy")
    assert (production["state"], production["stage_index"], production["percentage"]) == ("running", 2, 100.0)
    assert_serves(client, operator, "production", production)

    production = operate(client, operator, "production", "rollback", reason="upload errors spiked")
    assert (production["state"], production["percentage"], production["enabled"]) == ("rolled_back", 0.0, False)
    assert_serves(client, operator, "production", production)
    # Untouched by production's rollback.
    assert environment_state(client, operator, "staging")["enabled"] is True

    rows = history(client, operator, "production")
    assert len(rows) == 1
    assert rows[0]["id"] == production["rollout_id"]
    assert (rows[0]["state"], rows[0]["percentage"], rows[0]["started_by"]) == ("rolled_back", 0.0, OPERATOR)
    assert rows[0]["ended_at"] is not None


@pytest.mark.usefixtures("staging_completed")
def test_starting_again_after_a_rollback_creates_a_new_rollout(client: Client, operator: dict[str, str]) -> None:
    roll_production_out_and_back(client, operator)
    first_id = status(client, operator, "production")["rollout_id"]

    restarted = operate(client, operator, "production", "start")

    assert (restarted["state"], restarted["stage_index"], restarted["percentage"]) == ("running", 0, 10.0)
    assert restarted["enabled"] is True
    assert restarted["rollout_id"] != first_id
    rows = history(client, operator, "production")
    assert [row["id"] for row in rows] == [restarted["rollout_id"], first_id]
    assert [row["state"] for row in rows] == ["running", "rolled_back"]


# --- promotion order ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_starting_production_before_staging_completed_is_refused_with_409_promotion_order(
    client: Client, operator: dict[str, str]
) -> None:
    complete(client, operator, "qa")
    operate(client, operator, "staging", "start")
    before = status(client, operator, "production")

    response = post_operation(client, operator, "production", "start", expected_revision=before["revision"])

    assert response.status_code == 409, response.text
    body = response.json()
    assert body["type"].endswith("/promotion-order")
    assert (body["previous_environment"], body["previous_state"]) == ("staging", "running")
    assert status(client, operator, "production") == before
    assert history(client, operator, "production") == []
    assert environment_state(client, operator, "production")["enabled"] is False


@pytest.mark.usefixtures("applied")
def test_a_forced_start_with_a_reason_skips_promotion_order_and_shows_why(
    client: Client, operator: dict[str, str]
) -> None:
    reason = "hotfix for incident 4711, approved by the on-call lead"

    forced = operate(client, operator, "production", "start", force=True, reason=reason)

    assert (forced["state"], forced["percentage"], forced["enabled"]) == ("running", 10.0, True)
    assert forced["forced_reason"] == reason
    assert forced["previous_environment_state"] == "pending"
    assert status(client, operator, "production")["forced_reason"] == reason
    assert history(client, operator, "production")[0]["forced_reason"] == reason


@pytest.mark.usefixtures("applied")
def test_a_forced_start_without_a_reason_is_refused_with_422(client: Client, operator: dict[str, str]) -> None:
    before = status(client, operator, "production")

    response = post_operation(client, operator, "production", "start", force=True, expected_revision=1)

    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/reason-required")
    assert status(client, operator, "production") == before


# --- pause, resume, rollback policies, gates ----------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_pausing_then_resuming_restarts_the_stage_bake_time_from_the_clock(
    client: Client, operator: dict[str, str], clock: AdvancingClock
) -> None:
    started = operate(client, operator, "qa", "start")
    assert when(started["stage_started_at"]) == clock()
    clock.advance(timedelta(minutes=10))
    paused = operate(client, operator, "qa", "pause", reason="checking a report")
    assert (paused["state"], paused["percentage"], paused["enabled"]) == ("paused", 100.0, True)
    assert paused["bake_remaining_seconds"] == 0.0
    clock.advance(timedelta(minutes=45))

    resumed = operate(client, operator, "qa", "resume")

    assert resumed["state"] == "running"
    assert when(resumed["stage_started_at"]) == clock()
    assert when(resumed["stage_started_at"]) == when(started["stage_started_at"]) + timedelta(minutes=55)
    # The qa stage bakes 30 minutes; the 10 minutes before the pause no longer count.
    assert resumed["bake_remaining_seconds"] == 30 * 60
    clock.advance(timedelta(minutes=5))
    assert status(client, operator, "qa")["bake_remaining_seconds"] == 25 * 60


@pytest.mark.usefixtures("staging_completed")
def test_rolling_back_with_previous_stage_policy_from_50_percent_pauses_at_10_percent(
    client: Client, operator: dict[str, str]
) -> None:
    operate(client, operator, "production", "start")
    at_50 = operate(client, operator, "production", "advance", reason="10% is healthy")
    assert at_50["percentage"] == 50.0

    back = operate(client, operator, "production", "rollback", reason="latency creeping up", policy="previous_stage")

    assert (back["state"], back["stage_index"], back["percentage"], back["enabled"]) == ("paused", 0, 10.0, True)
    assert back["rollout_id"] == at_50["rollout_id"]
    assert_serves(client, operator, "production", back)


@pytest.mark.usefixtures("applied")
def test_status_says_whether_gates_are_judged(client: Client, operator: dict[str, str]) -> None:
    pending = status(client, operator, "qa")
    running = operate(client, operator, "qa", "start")

    assert pending["gates"] == "not_running"
    assert "pending" in pending["gates_detail"]
    # Without guards or a sample minimum (the `applied` fixture strips them), a running stage is clear.
    assert (running["gates"], running["gates_detail"], running["guards"]) == ("clear", "guards clear", [])


# --- definitions apply --------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_applying_the_same_definition_twice_reports_no_change(
    client: Client, admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    audit_before = client.get(f"{API}/audit/verify", headers=admin_headers).json()["records"]
    flag_before = client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json()

    report = apply(client, admin_headers, reference_images_yaml)

    assert report["changed"] is False
    assert {change["action"] for change in report["changes"]} == {"unchanged"}
    assert client.get(f"{API}/audit/verify", headers=admin_headers).json()["records"] == audit_before
    assert client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json() == flag_before


@pytest.mark.usefixtures("staging_completed")
def test_reapplying_a_changed_plan_during_a_rollout_never_moves_its_stage(
    client: Client, operator: dict[str, str], admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    operate(client, operator, "production", "start")
    running = operate(client, operator, "production", "advance", reason="10% is healthy")
    assert (running["stage_index"], running["percentage"]) == (1, 50.0)
    served_before = environment_state(client, operator, "production")
    changed_plan = reference_images_yaml.replace("bake: 2h", "bake: 3h").replace(
        "            - percentage: 10\n", "            - percentage: 5\n"
    )
    assert changed_plan.count("bake: 3h") == 1
    assert changed_plan.count("- percentage: 5\n") == 1

    report = apply(client, admin_headers, changed_plan)

    assert report["changed"] is True
    updates = [change for change in report["changes"] if change["action"] == "plan_updated"]
    assert [change["environment"] for change in updates] == ["production"]
    assert updates[0]["fields"] == ["stages"]
    assert "running" in updates[0]["note"]
    assert "keeps the stages it started with" in updates[0]["note"]
    after = status(client, operator, "production")
    assert (after["state"], after["stage_index"], after["percentage"]) == ("running", 1, 50.0)
    assert after["stages"] == running["stages"]
    assert after["revision"] == running["revision"]
    assert environment_state(client, operator, "production") == served_before
    # The next step still follows the plan the rollout started with.
    assert operate(client, operator, "production", "advance", reason="50% is healthy")["percentage"] == 100.0


# --- audit --------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("staging_completed")
def test_every_production_operation_is_audited_with_actor_reason_and_before_after(
    client: Client, operator: dict[str, str], admin_headers: dict[str, str]
) -> None:
    roll_production_out_and_back(client, operator)

    response = client.get(
        f"{API}/audit", headers=operator, params={"flag": FLAG, "environment": "production", "limit": 1000}
    )

    assert response.status_code == 200, response.text
    records = response.json()
    assert {record["environment"] for record in records} == {"production"}
    assert {record["target"] for record in records} == {FLAG}
    operations = [record for record in reversed(records) if record["action"].startswith("rollout.")]
    assert [record["action"] for record in operations] == [
        "rollout.start",
        "rollout.advance",
        "rollout.advance",
        "rollout.rollback",
    ]
    assert {record["actor"] for record in operations} == {OPERATOR}
    percentages = [(record["before"]["percentage"], record["after"]["percentage"]) for record in operations]
    assert percentages == [(0.0, 10.0), (10.0, 50.0), (50.0, 100.0), (100.0, 0.0)]
    states = [(record["before"]["state"], record["after"]["state"]) for record in operations]
    assert states == [
        ("pending", "running"),
        ("running", "running"),
        ("running", "running"),
        ("running", "rolled_back"),
    ]
    assert operations[-1]["before"]["enabled"] is True
    assert operations[-1]["after"]["enabled"] is False
    assert operations[1]["reason"].startswith("10% is healthy")
    assert operations[2]["reason"].startswith("50% is healthy")
    assert operations[3]["reason"].startswith("upload errors spiked")
    # Each record's `after` revision is the next record's `before`: the log has no gaps.
    for earlier, later in itertools.pairwise(operations):
        assert earlier["after"]["revision"] == later["before"]["revision"]
    assert operations[-1]["after"]["revision"] == status(client, operator, "production")["revision"]
    # The plan came from the definition, applied by the admin token.
    assert [record["actor"] for record in records if record["action"] == "plan.apply"] == ["admin"]

    verification = client.get(f"{API}/audit/verify", headers=operator)
    assert verification.status_code == 200, verification.text
    total = len(client.get(f"{API}/audit", headers=admin_headers, params={"limit": 1000}).json())
    assert verification.json() | {"head_id": None, "head_digest": None} == {
        "ok": True,
        "records": total,
        "head_id": None,
        "head_digest": None,
        "first_broken_id": None,
        "reason": None,
    }
