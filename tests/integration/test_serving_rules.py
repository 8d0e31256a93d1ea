"""What a serving rollout owns and what stays editable: the kill switch, `rollout-in-progress`, apply while a
rollout serves, and `force` only where it means something. Every refusal is checked to have changed nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from controlplane.api.roles import Role
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, problem, tick_rollouts

if TYPE_CHECKING:
    from tests.conftest import FakeClock

API = "/api/v1"
FLAG = "enable-reference-images"
AI_MODE = "ai.mode"
OPERATOR = "olivia-operator"
#: What a rollout's status shows that only the clock moves.
CLOCK_FIELDS = ("bake_remaining_seconds", "progress_deadline_passed")

Client = TestClient[Litestar]


# --- helpers ------------------------------------------------------------------------------------------------------


def ok(response: httpx.Response) -> Any:
    """The JSON body of a 200 answer."""
    assert response.status_code == 200, response.text
    return response.json()


def rollout_url(environment: str, operation: str | None = None, flag: str = FLAG) -> str:
    base = f"{API}/flags/{flag}/environments/{environment}/rollout"
    return f"{base}/{operation}" if operation else base


def status(client: Client, headers: dict[str, str], environment: str, flag: str = FLAG) -> dict[str, Any]:
    shown: dict[str, Any] = ok(client.get(rollout_url(environment, flag=flag), headers=headers))
    return shown


def environment_state(client: Client, headers: dict[str, str], environment: str, flag: str = FLAG) -> dict[str, Any]:
    state: dict[str, Any] = ok(client.get(f"{API}/flags/{flag}/environments/{environment}", headers=headers))
    return state


def read_flag(client: Client, headers: dict[str, str], flag: str = FLAG) -> dict[str, Any]:
    read: dict[str, Any] = ok(client.get(f"{API}/flags/{flag}", headers=headers))
    return read


def post_operation(
    client: Client, headers: dict[str, str], environment: str, operation: str, flag: str = FLAG, **body: Any
) -> httpx.Response:
    return client.post(rollout_url(environment, operation, flag=flag), headers=headers, json=body)


def operate(
    client: Client, headers: dict[str, str], environment: str, operation: str, flag: str = FLAG, **body: Any
) -> dict[str, Any]:
    """Apply an operation against the revision currently shown; it must succeed."""
    body.setdefault("expected_revision", status(client, headers, environment, flag=flag)["revision"])
    result: dict[str, Any] = ok(post_operation(client, headers, environment, operation, flag=flag, **body))
    return result


def complete(client: Client, headers: dict[str, str], environment: str, flag: str = FLAG) -> None:
    """Start a single-stage environment and advance it to completion."""
    operate(client, headers, environment, "start", flag=flag)
    done = operate(client, headers, environment, "advance", flag=flag, reason=f"{environment} looks healthy")
    assert done["state"] == "completed"


def patch_environment(
    client: Client, headers: dict[str, str], environment: str, body: dict[str, Any], flag: str = FLAG
) -> httpx.Response:
    """PATCH a flag's state in one environment against the revision currently shown."""
    revision = environment_state(client, headers, environment, flag=flag)["revision"]
    return client.patch(
        f"{API}/flags/{flag}/environments/{environment}",
        headers={**headers, "If-Match": str(revision)},
        json=body,
    )


def apply(client: Client, headers: dict[str, str], content: str, *, dry_run: bool = False) -> dict[str, Any]:
    response = client.post(
        f"{API}/definitions/apply",
        headers=headers,
        json={"content": content, "source": "reference-images.yaml", "dry_run": dry_run},
    )
    report: dict[str, Any] = ok(response)
    return report


def audit(client: Client, headers: dict[str, str], **filters: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/audit", headers=headers, params={"limit": 1000, **filters})
    records: list[dict[str, Any]] = ok(response)
    return records


def audit_count(client: Client, headers: dict[str, str]) -> int:
    verification: dict[str, Any] = ok(client.get(f"{API}/audit/verify", headers=headers))
    assert verification["ok"] is True
    count: int = verification["records"]
    return count


def without_clock(shown: dict[str, Any]) -> dict[str, Any]:
    """A status without the fields that move with the clock alone."""
    return {name: value for name, value in shown.items() if name not in CLOCK_FIELDS}


def changes_of(report: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(change["action"], change["environment"]) for change in report["changes"]}


def rebucketed_without_production(reference_images_yaml: str) -> str:
    """The shipped definition with another bucketing attribute and no production plan entry."""
    marker = "        - environment: production\n"
    assert reference_images_yaml.count(marker) == 1
    # The production entry is the plan's last: cut from it to the end of the flags (events and rules stay).
    start, end = reference_images_yaml.index(marker), reference_images_yaml.index("\n# What the pipeline reports")
    content = reference_images_yaml[:start] + reference_images_yaml[end:]
    assert content.count("bucket_by: targetingKey") == 1
    return content.replace("bucket_by: targetingKey", "bucket_by: userId")


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def operator(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of an operator token; its name is the audit actor."""
    return {"Authorization": f"Bearer {make_token(Role.OPERATOR, name=OPERATOR)}"}


@pytest.fixture
def production_at_10(applied: None, client: Client, operator: dict[str, str]) -> dict[str, Any]:
    """qa and staging completed through the API, production running at its first stage (10%)."""
    complete(client, operator, "qa")
    complete(client, operator, "staging")
    started = operate(client, operator, "production", "start")
    assert (started["state"], started["stage_index"], started["percentage"], started["enabled"]) == (
        "running",
        0,
        10.0,
        True,
    )
    return started


@pytest.fixture
def switched_off(
    production_at_10: dict[str, Any], client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> dict[str, Any]:
    """Production running at 10% with its kill switch pulled; the status after the switch."""
    response = patch_environment(client, admin_headers, "production", {"enabled": False})
    assert response.status_code == 200, response.text
    assert response.json()["enabled"] is False
    return status(client, operator, "production")


# --- the kill switch ----------------------------------------------------------------------------------------------


def test_pulling_the_kill_switch_during_a_rollout_keeps_its_stage_but_serves_nothing(
    production_at_10: dict[str, Any], client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    revision = environment_state(client, admin_headers, "production")["revision"]

    response = client.patch(
        f"{API}/flags/{FLAG}/environments/production",
        headers={**admin_headers, "If-Match": str(revision)},
        json={"enabled": False},
    )

    state = ok(response)
    assert state["enabled"] is False
    assert state["revision"] > revision
    assert state["rollout"]["percentage"] == 10.0
    shown = status(client, operator, "production")
    assert (shown["state"], shown["stage_index"], shown["rollout_id"]) == ("running", 0, production_at_10["rollout_id"])
    assert shown["percentage"] == 10.0
    assert shown["serving_percentage"] == 0.0
    assert shown["enabled"] is False
    record = audit(client, admin_headers, flag=FLAG, environment="production", action="flag.environment.update")[0]
    assert (record["before"]["enabled"], record["after"]["enabled"]) == (True, False)
    assert record["actor"] == "admin"


def test_advancing_a_switched_off_rollout_is_refused_with_409_kill_switch_off(
    switched_off: dict[str, Any], client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    state_before = environment_state(client, admin_headers, "production")
    audit_before = audit_count(client, admin_headers)

    response = post_operation(
        client, operator, "production", "advance", reason="10% looks fine", expected_revision=switched_off["revision"]
    )

    body = problem(response, 409, "kill-switch-off")
    assert (body["state"], body["operation"]) == ("running", "advance")
    assert without_clock(status(client, operator, "production")) == without_clock(switched_off)
    assert environment_state(client, admin_headers, "production") == state_before
    assert audit_count(client, admin_headers) == audit_before


def test_resuming_a_paused_rollout_while_switched_off_is_refused_with_409_kill_switch_off(
    switched_off: dict[str, Any], client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    paused = operate(client, operator, "production", "pause", reason="looking into a report")
    assert (paused["state"], paused["enabled"], paused["serving_percentage"]) == ("paused", False, 0.0)
    state_before = environment_state(client, admin_headers, "production")
    audit_before = audit_count(client, admin_headers)

    response = post_operation(client, operator, "production", "resume", expected_revision=paused["revision"])

    body = problem(response, 409, "kill-switch-off")
    assert (body["state"], body["operation"]) == ("paused", "resume")
    assert status(client, operator, "production") == paused
    assert environment_state(client, admin_headers, "production") == state_before
    assert audit_count(client, admin_headers) == audit_before


def test_the_scheduler_tick_neither_advances_a_switched_off_rollout_nor_switches_it_on(
    switched_off: dict[str, Any],
    client: Client,
    admin_headers: dict[str, str],
    operator: dict[str, str],
    session_factory: sessionmaker[Session],
    settings: Settings,
    clock: FakeClock,
) -> None:
    state_before = environment_state(client, admin_headers, "production")
    # Production's first stage bakes 1h with auto_advance: without the kill switch, this tick would advance it.
    clock.advance(timedelta(hours=2))

    counts = tick_rollouts(session_factory, settings.environments, clock)

    assert counts == {"checked": 1, "advanced": 0, "held": 0, "deadlines": 0, "conflicts": 0, "errors": 0}
    after = status(client, operator, "production")
    assert without_clock(after) == without_clock(switched_off)
    assert (after["state"], after["percentage"], after["serving_percentage"], after["enabled"]) == (
        "running",
        10.0,
        0.0,
        False,
    )
    assert environment_state(client, admin_headers, "production") == state_before
    assert audit(client, admin_headers, action="rollout.auto_advance") == []

    # The same tick advances once the switch is back on: the refusal above was the kill switch, not the bake.
    assert patch_environment(client, admin_headers, "production", {"enabled": True}).status_code == 200
    counts = tick_rollouts(session_factory, settings.environments, clock)
    assert counts["advanced"] == 1
    assert status(client, operator, "production")["percentage"] == 50.0


def test_rolling_back_a_switched_off_rollout_still_works(
    switched_off: dict[str, Any], client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    back = operate(client, operator, "production", "rollback", reason="switched off for an incident")

    assert (back["state"], back["percentage"], back["serving_percentage"], back["enabled"]) == (
        "rolled_back",
        0.0,
        0.0,
        False,
    )
    assert back["rollout_id"] == switched_off["rollout_id"]
    state = environment_state(client, admin_headers, "production")
    assert (state["enabled"], state["rollout"]["percentage"]) == (False, 0.0)
    record = audit(client, admin_headers, flag=FLAG, environment="production", action="rollout.rollback")[0]
    assert record["reason"].startswith("switched off for an incident")


# --- what a serving rollout owns ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"bucket_by": "userId"},
        {"percentage": 100.0},
        {"variant": "off"},
        {"when": [{"attribute": "tenant", "op": "equals", "value": "acme"}]},
    ],
    ids=["bucket_by", "percentage", "variant", "when"],
)
def test_changing_the_rollout_of_a_serving_environment_is_refused_with_409_rollout_in_progress(
    production_at_10: dict[str, Any],
    client: Client,
    admin_headers: dict[str, str],
    operator: dict[str, str],
    change: dict[str, Any],
) -> None:
    state_before = environment_state(client, admin_headers, "production")
    audit_before = audit_count(client, admin_headers)

    response = patch_environment(
        client, admin_headers, "production", {"enabled": True, "rollout": {**state_before["rollout"], **change}}
    )

    problem(response, 409, "rollout-in-progress")
    assert environment_state(client, admin_headers, "production") == state_before
    assert without_clock(status(client, operator, "production")) == without_clock(production_at_10)
    assert audit_count(client, admin_headers) == audit_before


def test_the_kill_switch_rules_and_default_variant_stay_editable_while_a_rollout_serves(
    production_at_10: dict[str, Any], client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    before = environment_state(client, admin_headers, "production")
    rules = [
        {"name": "beta-testers", "when": [{"attribute": "group", "op": "equals", "value": "beta"}], "variant": "on"}
    ]

    edited = ok(patch_environment(client, admin_headers, "production", {"rules": rules, "default_variant": "off"}))
    # A client that sends back the rollout it read, unchanged, is not refused.
    echoed = ok(patch_environment(client, admin_headers, "production", {"enabled": True, "rollout": before["rollout"]}))

    assert [(rule["name"], rule["variant"], rule["when"][0]["value"]) for rule in edited["rules"]] == [
        ("beta-testers", "on", "beta")
    ]
    assert edited["default_variant"] == "off"
    assert edited["revision"] > before["revision"]
    assert edited["rollout"] == before["rollout"]
    assert echoed == edited
    switched = ok(patch_environment(client, admin_headers, "production", {"enabled": False}))
    assert (switched["enabled"], switched["rollout"]) == (False, before["rollout"])
    shown = status(client, operator, "production")
    assert (shown["state"], shown["percentage"], shown["revision"]) == ("running", 10.0, switched["revision"])


def test_changing_the_rollout_variant_while_a_rollout_serves_is_refused_until_it_is_rolled_back(
    client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    content = (REPO_ROOT / "definitions" / "ai-assistant.yaml").read_text()
    ok(client.post(f"{API}/definitions/apply", headers=admin_headers, json={"content": content}))
    started = operate(client, operator, "qa", "start", flag=AI_MODE)
    assert (started["state"], started["percentage"], started["enabled"]) == ("running", 100.0, True)
    flag_before = read_flag(client, admin_headers, AI_MODE)
    assert flag_before["rollout_variant"] == "COPILOTO"
    audit_before = audit_count(client, admin_headers)
    if_match = {**admin_headers, "If-Match": str(flag_before["revision"])}

    refused = client.patch(f"{API}/flags/{AI_MODE}", headers=if_match, json={"rollout_variant": "AUTONOMO"})

    assert "qa" in problem(refused, 409, "rollout-in-progress")["detail"]
    assert read_flag(client, admin_headers, AI_MODE) == flag_before
    assert audit_count(client, admin_headers) == audit_before

    operate(client, operator, "qa", "rollback", flag=AI_MODE, reason="pilot tenants report wrong replies")
    changed = ok(client.patch(f"{API}/flags/{AI_MODE}", headers=if_match, json={"rollout_variant": "AUTONOMO"}))

    assert changed["rollout_variant"] == "AUTONOMO"
    assert changed["revision"] > flag_before["revision"]
    variants = {state["environment"]: state["rollout"]["variant"] for state in changed["environments"]}
    assert set(variants.values()) == {"AUTONOMO"}, variants


# --- definitions apply while a rollout serves ---------------------------------------------------------------------


def test_applying_new_bucketing_and_a_shorter_plan_while_production_serves_keeps_both(
    production_at_10: dict[str, Any],
    client: Client,
    admin_headers: dict[str, str],
    operator: dict[str, str],
    reference_images_yaml: str,
) -> None:
    content = rebucketed_without_production(reference_images_yaml)
    serving_before = {env: environment_state(client, admin_headers, env) for env in ("qa", "staging", "production")}

    report = apply(client, admin_headers, content)

    assert changes_of(report) == {
        ("unchanged", None),
        # dev has no rollout: its bucketing is not held by anything.
        ("bucketing_updated", "dev"),
        ("bucketing_kept", "qa"),
        ("bucketing_kept", "staging"),
        ("bucketing_kept", "production"),
        ("plan_kept", "production"),
    }
    assert report["changed"] is True
    kept = [change for change in report["changes"] if change["action"].endswith("_kept")]
    assert all(change["note"] for change in kept), kept
    for environment, before in serving_before.items():
        assert environment_state(client, admin_headers, environment) == before
    assert environment_state(client, admin_headers, "dev")["rollout"]["bucket_by"] == "userId"
    shown = status(client, operator, "production")
    assert without_clock(shown) == without_clock(production_at_10)

    # Only the kept entries are left: applying again reports nothing as changed.
    again = apply(client, admin_headers, content)
    assert again["changed"] is False
    assert changes_of(again) == changes_of(report) - {("bucketing_updated", "dev")}


def test_applying_a_new_rollout_variant_while_a_rollout_serves_keeps_every_environment_on_the_flags_variant(
    client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    content = (REPO_ROOT / "definitions" / "ai-assistant.yaml").read_text()
    apply(client, admin_headers, content)
    operate(client, operator, "qa", "start", flag=AI_MODE)
    changed_variant = content.replace("    rollout_variant: COPILOTO\n", "    rollout_variant: AUTONOMO\n")
    assert changed_variant.count("rollout_variant: AUTONOMO") == 1

    report = apply(client, admin_headers, changed_variant)

    flag_change = next(c for c in report["changes"] if c["flag"] == AI_MODE and c["environment"] is None)
    assert "rollout_variant kept" in flag_change["note"]
    flag = read_flag(client, admin_headers, AI_MODE)
    assert flag["rollout_variant"] == "COPILOTO"
    variants = {state["environment"]: state["rollout"]["variant"] for state in flag["environments"]}
    assert variants == dict.fromkeys(("dev", "qa", "staging", "production"), "COPILOTO")


def test_after_a_rollback_the_same_apply_updates_the_bucketing_and_removes_the_plan(
    production_at_10: dict[str, Any],
    client: Client,
    admin_headers: dict[str, str],
    operator: dict[str, str],
    reference_images_yaml: str,
) -> None:
    content = rebucketed_without_production(reference_images_yaml)
    apply(client, admin_headers, content)
    operate(client, operator, "production", "rollback", reason="upload errors spiked")

    report = apply(client, admin_headers, content)

    assert report["changed"] is True
    assert changes_of(report) == {
        ("unchanged", None),
        ("bucketing_kept", "qa"),
        ("bucketing_kept", "staging"),
        ("bucketing_updated", "production"),
        ("plan_removed", "production"),
    }
    state = environment_state(client, admin_headers, "production")
    assert state["rollout"] == {"variant": "on", "percentage": 0.0, "bucket_by": "userId", "when": []}
    assert state["enabled"] is False
    records = audit(client, admin_headers, flag=FLAG, environment="production", action="flag.environment.update")
    assert len(records) == 1
    assert records[0]["before"]["rollout"]["bucket_by"] == "targetingKey"
    assert records[0]["after"]["rollout"]["bucket_by"] == "userId"
    assert records[0]["actor"] == "admin"
    assert "reference-images.yaml" in records[0]["reason"]
    removal = audit(client, admin_headers, flag=FLAG, environment="production", action="plan.apply")[0]
    assert removal["after"] is None
    problem(client.get(rollout_url("production"), headers=operator), 404, "rollout-plan-not-found")
    # The rolled-back rollout stays in the history.
    history = ok(client.get(f"{API}/flags/{FLAG}/environments/production/rollouts", headers=operator))
    assert [row["state"] for row in history] == ["rolled_back"]


def test_a_dry_run_apply_reports_the_changes_and_keeps_none_of_them(
    production_at_10: dict[str, Any],
    client: Client,
    admin_headers: dict[str, str],
    operator: dict[str, str],
    reference_images_yaml: str,
) -> None:
    content = rebucketed_without_production(reference_images_yaml)
    operate(client, operator, "production", "rollback", reason="upload errors spiked")
    flag_before = read_flag(client, admin_headers)
    status_before = status(client, operator, "production")
    audit_before = audit_count(client, admin_headers)

    dry = apply(client, admin_headers, content, dry_run=True)

    assert (dry["dry_run"], dry["changed"]) == (True, True)
    assert {("bucketing_updated", "production"), ("plan_removed", "production")} <= changes_of(dry)
    assert read_flag(client, admin_headers) == flag_before
    assert status(client, operator, "production") == status_before
    assert audit_count(client, admin_headers) == audit_before
    # The real apply does exactly what the dry run said it would.
    real = apply(client, admin_headers, content)
    assert real["dry_run"] is False
    assert real["changes"] == dry["changes"]


def test_a_dry_run_apply_of_a_new_definition_creates_nothing(
    client: Client, admin_headers: dict[str, str], reference_images_yaml: str
) -> None:
    audit_before = audit_count(client, admin_headers)

    dry = apply(client, admin_headers, reference_images_yaml, dry_run=True)

    assert (dry["dry_run"], dry["changed"]) == (True, True)
    assert ("created", None) in changes_of(dry)
    assert {("plan_created", env) for env in ("qa", "staging", "production")} <= changes_of(dry)
    assert ok(client.get(f"{API}/flags", headers=admin_headers)) == []
    problem(client.get(f"{API}/flags/{FLAG}", headers=admin_headers), 404, "flag-not-found")
    assert audit_count(client, admin_headers) == audit_before


# --- force --------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("applied")
def test_force_on_pause_is_refused_with_422_invalid_field(
    client: Client, admin_headers: dict[str, str], operator: dict[str, str]
) -> None:
    started = operate(client, operator, "qa", "start")
    audit_before = audit_count(client, admin_headers)

    response = post_operation(
        client, operator, "qa", "pause", force=True, reason="ship it", expected_revision=started["revision"]
    )

    assert problem(response, 422, "invalid-field")["field"] == "force"
    assert without_clock(status(client, operator, "qa")) == without_clock(started)
    assert audit_count(client, admin_headers) == audit_before


@pytest.mark.usefixtures("applied")
@pytest.mark.parametrize("environment", ["qa", "production"], ids=["first-in-order", "after-staging-completed"])
def test_a_forced_start_already_in_promotion_order_is_not_recorded_as_forced(
    client: Client, admin_headers: dict[str, str], operator: dict[str, str], environment: str
) -> None:
    if environment == "production":
        complete(client, operator, "qa")
        complete(client, operator, "staging")
    reason = "pressed force out of habit"

    started = operate(client, operator, environment, "start", force=True, reason=reason)

    assert (started["state"], started["enabled"]) == ("running", True)
    assert started["forced_reason"] is None
    assert status(client, operator, environment)["forced_reason"] is None
    history = ok(client.get(f"{API}/flags/{FLAG}/environments/{environment}/rollouts", headers=operator))
    assert history[0]["forced_reason"] is None
    record = audit(client, admin_headers, flag=FLAG, environment=environment, action="rollout.start")[0]
    assert record["reason"].startswith(reason)
    assert "forced" not in record["reason"]
