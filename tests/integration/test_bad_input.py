"""Bad input over HTTP: each refusal has its status, its problem `type`, the details a client needs, and no effect."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.settings import Settings
from tests.conftest import problem

API = "/api/v1"
FLAG = "enable-reference-images"


def rollout_url(environment: str, operation: str | None = None) -> str:
    base = f"{API}/flags/{FLAG}/environments/{environment}/rollout"
    return f"{base}/{operation}" if operation else base


def rollout_status(client: TestClient[Litestar], headers: dict[str, str], environment: str) -> dict[str, Any]:
    response = client.get(rollout_url(environment), headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def operate(
    client: TestClient[Litestar], headers: dict[str, str], environment: str, operation: str, **body: Any
) -> httpx.Response:
    return client.post(rollout_url(environment, operation), headers=headers, json=body)


def start_qa(client: TestClient[Litestar], headers: dict[str, str]) -> dict[str, Any]:
    """Start the QA rollout and return its status."""
    revision = rollout_status(client, headers, "qa")["revision"]
    response = operate(client, headers, "qa", "start", expected_revision=revision)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["state"] == "running"
    return body


def flags_listing(client: TestClient[Litestar], headers: dict[str, str]) -> list[dict[str, Any]]:
    response = client.get(f"{API}/flags", headers=headers)
    assert response.status_code == 200, response.text
    flags: list[dict[str, Any]] = response.json()
    return flags


def audit_count(client: TestClient[Litestar], headers: dict[str, str]) -> int:
    response = client.get(f"{API}/audit/verify", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    count: int = response.json()["records"]
    return count


# --- unknown things ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_reading_an_unknown_flag_is_refused_with_404_flag_not_found(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    for url in (f"{API}/flags/no-such-flag", f"{API}/flags/no-such-flag/environments/qa/rollout"):
        body = problem(client.get(url, headers=admin_headers), 404, "flag-not-found")
        assert body["flag"] == "no-such-flag"
        assert body["instance"] == url


@pytest.mark.usefixtures("applied")
def test_an_unknown_environment_is_refused_with_404_environment_not_found(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    reads = (
        f"{API}/flags/{FLAG}/environments/moon",
        rollout_url("moon"),
        f"{API}/flags/{FLAG}/environments/moon/rollouts",
    )
    for url in reads:
        body = problem(client.get(url, headers=admin_headers), 404, "environment-not-found")
        assert body["environment"] == "moon"
        assert "production" in body["detail"]

    refused = operate(client, admin_headers, "moon", "start", expected_revision=1)
    assert problem(refused, 404, "environment-not-found")["environment"] == "moon"
    # Nothing was created for the unknown environment.
    environments = {state["environment"] for state in flags_listing(client, admin_headers)[0]["environments"]}
    assert "moon" not in environments


# --- definitions --------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_a_definition_with_an_unknown_field_is_refused_on_its_line_and_applies_nothing(
    client: TestClient[Litestar], admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    flags_before = flags_listing(client, admin_headers)
    audit_before = audit_count(client, admin_headers)
    # A valid change (the description) and an unknown field in the same file: all or nothing.
    content = reference_images_yaml.replace(
        "    owner: team-images\n", "    owner: team-images\n    colour: blue\n"
    ).replace("description: Let users upload", "description: CHANGED Let users upload")
    expected_line = content.splitlines().index("    colour: blue") + 1

    response = client.post(
        f"{API}/definitions/apply", headers=admin_headers, json={"content": content, "source": "broken.yaml"}
    )

    body = problem(response, 422, "invalid-definition")
    assert body["line"] == expected_line
    assert body["field"] == "flags[0].colour"
    assert body["source"] == "broken.yaml"
    assert f"broken.yaml:{expected_line}" in body["detail"]
    assert flags_listing(client, admin_headers) == flags_before
    assert audit_count(client, admin_headers) == audit_before


def test_a_definition_whose_stages_go_down_is_refused_on_that_stage_and_applies_nothing(
    client: TestClient[Litestar], admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    audit_before = audit_count(client, admin_headers)
    content = reference_images_yaml.replace("            - percentage: 50\n", "            - percentage: 5\n")
    expected_line = content.splitlines().index("            - percentage: 5") + 1

    response = client.post(f"{API}/definitions/apply", headers=admin_headers, json={"content": content})

    body = problem(response, 422, "invalid-definition")
    assert body["line"] == expected_line
    assert body["field"] == "flags[0].plan.environments[2].stages[1].percentage"
    assert "strictly increase" in body["detail"]
    assert flags_listing(client, admin_headers) == []
    assert audit_count(client, admin_headers) == audit_before


@pytest.mark.usefixtures("applied")
def test_a_definition_refused_half_way_through_applying_leaves_no_partial_change(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    flags_before = flags_listing(client, admin_headers)
    audit_before = audit_count(client, admin_headers)
    # The first flag is new and valid; the second changes the existing flag's type, which apply refuses.
    content = """\
pipeline: reference-images
flags:
  - key: brand-new-flag
    type: boolean
    variants: {"on": true, "off": false}
    off_variant: "off"
  - key: enable-reference-images
    type: string
    variants: {"on": "yes", "off": "no"}
    off_variant: "off"
"""

    response = client.post(f"{API}/definitions/apply", headers=admin_headers, json={"content": content})

    body = problem(response, 422, "flag-type-change")
    assert body["flag"] == FLAG
    problem(client.get(f"{API}/flags/brand-new-flag", headers=admin_headers), 404, "flag-not-found")
    assert flags_listing(client, admin_headers) == flags_before
    assert audit_count(client, admin_headers) == audit_before


# --- malformed and ill-typed bodies -------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_malformed_json_is_refused_with_400_malformed_request(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    before = rollout_status(client, admin_headers, "qa")
    headers = {**admin_headers, "Content-Type": "application/json"}

    for url in (f"{API}/flags", rollout_url("qa", "start")):
        response = client.post(url, headers=headers, content=b'{"key": "half-a-flag", ')
        assert problem(response, 400, "malformed-request")["instance"] == url

    assert [flag["key"] for flag in flags_listing(client, admin_headers)] == [FLAG]
    assert rollout_status(client, admin_headers, "qa") == before


def test_a_body_of_the_wrong_type_is_refused_with_422_invalid_body(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    flag = {"key": "typed-wrong", "type": 5, "variants": {"on": True, "off": False}, "off_variant": "off"}

    response = client.post(f"{API}/flags", headers=admin_headers, json=flag)

    body = problem(response, 422, "invalid-body")
    assert any(error.get("key") == "type" for error in body["errors"]), body
    problem(client.get(f"{API}/flags/typed-wrong", headers=admin_headers), 404, "flag-not-found")


@pytest.mark.usefixtures("applied")
def test_a_rollout_operation_with_a_wrongly_typed_field_is_refused_with_422_invalid_body(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    before = rollout_status(client, admin_headers, "qa")

    response = operate(client, admin_headers, "qa", "start", expected_revision="one")

    problem(response, 422, "invalid-body")
    assert rollout_status(client, admin_headers, "qa") == before


# --- revisions ----------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_patching_a_flag_with_a_stale_if_match_is_refused_with_409_and_changes_nothing(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    seen = client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json()["revision"]
    first = client.patch(
        f"{API}/flags/{FLAG}", headers={**admin_headers, "If-Match": str(seen)}, json={"owner": "team-first"}
    )
    assert first.status_code == 200, first.text
    after_first = client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json()
    assert after_first["revision"] > seen
    audit_before = audit_count(client, admin_headers)

    stale = client.patch(
        f"{API}/flags/{FLAG}", headers={**admin_headers, "If-Match": f'"{seen}"'}, json={"owner": "team-second"}
    )

    body = problem(stale, 409, "stale-revision")
    assert body["expected_revision"] == seen
    assert body["current_revision"] == after_first["revision"]
    assert client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json() == after_first
    assert audit_count(client, admin_headers) == audit_before


@pytest.mark.usefixtures("applied")
def test_patching_without_if_match_is_refused_with_428_revision_required(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    flag_before = client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json()

    flag_patch = client.patch(f"{API}/flags/{FLAG}", headers=admin_headers, json={"owner": "nobody"})
    environment_patch = client.patch(
        f"{API}/flags/{FLAG}/environments/qa", headers=admin_headers, json={"enabled": True}
    )

    assert "If-Match" in problem(flag_patch, 428, "revision-required")["detail"]
    problem(environment_patch, 428, "revision-required")
    assert client.get(f"{API}/flags/{FLAG}", headers=admin_headers).json() == flag_before


@pytest.mark.usefixtures("applied")
def test_advancing_with_a_stale_expected_revision_is_refused_with_409(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    started = start_qa(client, admin_headers)
    stale = started["revision"] - 1

    response = operate(client, admin_headers, "qa", "advance", reason="looks fine", expected_revision=stale)

    body = problem(response, 409, "stale-revision")
    assert body["expected_revision"] == stale
    assert body["current_revision"] == started["revision"]
    assert rollout_status(client, admin_headers, "qa") == started


@pytest.mark.usefixtures("applied")
def test_starting_without_an_expected_revision_is_refused_with_428(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    before = rollout_status(client, admin_headers, "qa")

    response = operate(client, admin_headers, "qa", "start")

    assert problem(response, 428, "revision-required")["field"] == "expected_revision"
    assert rollout_status(client, admin_headers, "qa") == before


# --- illegal transitions and missing reasons ----------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_advancing_a_pending_rollout_is_an_illegal_transition_naming_the_state(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    before = rollout_status(client, admin_headers, "qa")
    assert before["state"] == "pending"

    response = operate(client, admin_headers, "qa", "advance", reason="go", expected_revision=before["revision"])

    body = problem(response, 409, "illegal-transition")
    assert body["state"] == "pending"
    assert body["operation"] == "advance"
    assert "pending" in body["detail"]
    assert rollout_status(client, admin_headers, "qa") == before


@pytest.mark.usefixtures("applied")
def test_advancing_a_completed_rollout_is_an_illegal_transition_naming_the_state(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    started = start_qa(client, admin_headers)
    completed = operate(client, admin_headers, "qa", "advance", reason="qa ok", expected_revision=started["revision"])
    assert completed.status_code == 200, completed.text
    assert completed.json()["state"] == "completed"

    response = operate(
        client, admin_headers, "qa", "advance", reason="again", expected_revision=completed.json()["revision"]
    )

    body = problem(response, 409, "illegal-transition")
    assert body["state"] == "completed"
    assert "completed" in body["detail"]
    assert rollout_status(client, admin_headers, "qa") == completed.json()


@pytest.mark.usefixtures("applied")
def test_resuming_a_running_rollout_is_an_illegal_transition_naming_the_state(
    client: TestClient[Litestar], admin_headers: dict[str, str]
) -> None:
    started = start_qa(client, admin_headers)

    response = operate(client, admin_headers, "qa", "resume", expected_revision=started["revision"])

    body = problem(response, 409, "illegal-transition")
    assert body["state"] == "running"
    assert body["operation"] == "resume"
    assert "running" in body["detail"]
    assert rollout_status(client, admin_headers, "qa") == started


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize("operation", ["advance", "pause", "rollback"])
@pytest.mark.parametrize("reason", [None, "   "], ids=["missing", "blank"])
def test_advance_pause_and_rollback_without_a_reason_are_refused_with_422(
    client: TestClient[Litestar], admin_headers: dict[str, str], operation: str, reason: str | None
) -> None:
    started = start_qa(client, admin_headers)
    body: dict[str, Any] = {"expected_revision": started["revision"]}
    if reason is not None:
        body["reason"] = reason

    response = operate(client, admin_headers, "qa", operation, **body)

    refusal = problem(response, 422, "reason-required")
    assert refusal["field"] == "reason"
    assert operation in refusal["detail"]
    assert rollout_status(client, admin_headers, "qa") == started


# --- size and rate limits -----------------------------------------------------------------------------------------


def test_a_body_over_32_kib_is_refused_with_413(
    client: TestClient[Litestar], admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    padding = "# " + "x" * 78 + "\n"
    content = reference_images_yaml + padding * (33 * 1024 // len(padding))
    assert len(content.encode()) > 32 * 1024

    response = client.post(f"{API}/definitions/apply", headers=admin_headers, json={"content": content})

    problem(response, 413, "body-too-large")
    assert flags_listing(client, admin_headers) == []


def test_the_fourth_request_in_a_minute_is_rate_limited_per_token(
    database_url: str, engine: Engine, clock: Callable[[], datetime], make_token: Callable[..., str]
) -> None:
    settings = Settings(
        database_url=database_url, scheduler_enabled=False, replica_id="test-replica", rate_limit_per_minute=3
    )
    limited = {"Authorization": f"Bearer {make_token(Role.VIEWER, name='busy-viewer')}"}
    other = {"Authorization": f"Bearer {make_token(Role.VIEWER, name='quiet-viewer')}"}

    with TestClient(create_app(settings, engine=engine, clock=clock)) as client:
        allowed = [client.get(f"{API}/flags", headers=limited) for _ in range(3)]
        fourth = client.get(f"{API}/flags", headers=limited)
        different_token = client.get(f"{API}/flags", headers=other)

    assert [response.status_code for response in allowed] == [200, 200, 200]
    problem(fourth, 429, "rate-limited")
    retry_after = fourth.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60
    assert different_token.status_code == 200, different_token.text
