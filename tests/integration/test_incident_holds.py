"""Nothing fights an incident override in force, on both backends: while `enable-reference-images` serves `off` to
everyone in production by an incident, a breaching guard (and an Alertmanager alert) is recorded and told but rolls
nothing back, once told, naming the incident and its undo; after the undo the guard rolls back as usual. An
operator's start, advance and resume are refused with `409 incident-active` and change nothing; a manual rollback
is allowed, and the undo is then refused with `409 changed-since` unless forced. The incident in force is marked
on the flag's read and on `/metrics` (`controlplane_flag_incident_active`) until undone."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine

from controlplane.settings import Settings
from tests.conftest import FakeClock, problem
from tests.integration.test_guarded_rollback import (  # noqa: F401 (fixtures used by name)
    FLAG,
    Story,
    alertmanager_payload,
    notifications_file,
    receiver,
    settings,
    upload_requests,
)
from tests.integration.test_metrics_endpoint import Scrape, scrape

ROLLOUT = f"/api/v1/flags/{FLAG}/environments/production/rollout"


@pytest.fixture
def story(
    client: TestClient[Litestar],
    clock: FakeClock,
    engine: Engine,
    settings: Settings,  # noqa: F811 (the guarded-rollback story's, imported above)
    make_token: Callable[..., str],
) -> Story:
    """The reference-images control plane of the guarded-rollback story."""
    return Story(client, clock, engine, settings, make_token)


def set_off_in_production(story: Story) -> dict[str, Any]:
    """The incident action: `off` to everyone in production (the running rollout is paused by it)."""
    response = story.client.post(
        f"/api/v1/flags/{FLAG}/set-variant",
        headers=story.operator,
        json={"variant": "off", "environments": ["production"], "reason": "uploads corrupt references"},
    )
    assert response.status_code == 201, response.text
    incident: dict[str, Any] = response.json()
    return incident


def served(story: Story) -> dict[str, Any]:
    """What production serves, with its revision."""
    response = story.client.get(f"/api/v1/flags/{FLAG}/environments/production", headers=story.operator)
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()
    return {name: state[name] for name in ("enabled", "default_variant", "rules", "rollout", "revision")}


def audit(story: Story, action: str) -> list[dict[str, Any]]:
    response = story.client.get("/api/v1/audit", headers=story.admin, params={"flag": FLAG, "action": action})
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()
    return records


def told(story: Story, kind: str) -> list[dict[str, Any]]:
    """Every event of ``kind`` in the notification outbox, with the body the receiver gets."""
    rows = story.client.get("/api/v1/notifications", headers=story.operator).json()
    return [
        {**alert, "body": row["payload"]["body"]}
        for row in rows
        for alert in row["payload"]["alerts"]
        if alert["kind"] == kind
    ]


def breach_the_guard(story: Story) -> None:
    """Upload failures past 3% at 99% confidence in production (as in the guarded-rollback story), evaluated."""
    story.send(upload_requests(291, "2xx", story.clock()) + upload_requests(6, "5xx", story.clock()))
    story.evaluate()
    story.clock.advance(timedelta(seconds=10))
    story.send(upload_requests(15, "5xx", story.clock()))
    story.clock.advance(timedelta(seconds=10))
    story.evaluate()


def alert_state(story: Story, rule: str) -> str:
    alerts = story.client.get("/api/v1/alerts", headers=story.operator).json()
    state: str = next(a["state"] for a in alerts if (a["rule"], a["environment"]) == (rule, "production"))
    return state


def test_a_guard_firing_under_an_incident_override_is_told_but_rolls_nothing_back_until_the_undo(story: Story) -> None:
    story.apply()
    story.start_production()
    incident = set_off_in_production(story)
    during = served(story)
    assert (during["enabled"], during["default_variant"]) == (True, "off")

    breach_the_guard(story)
    story.clock.advance(timedelta(seconds=10))
    story.evaluate()  # still breaching on the next tick: held again, recorded and told only once

    # The guard fired and is recorded and told as ever; what is served did not move.
    assert alert_state(story, "upload-failure-rate") == "firing"
    assert [alert["rule"] for alert in told(story, "trigger")].count("upload-failure-rate") == 1
    assert served(story) == during
    assert story.rollout()["state"] == "paused"
    assert audit(story, "rollout.rollback") == []
    # The incident says it held the rollback, once per guard; audited and told naming the incident and its undo.
    read = story.client.get(f"/api/v1/incidents/{incident['id']}", headers=story.operator).json()
    held = read["environments"][0]["held"]
    assert [(item["rule"], item["trigger"]) for item in held] == [("upload-failure-rate", "guard")]
    undo = f"controlplane flags undo {incident['id']}"
    records = audit(story, "flag.incident.rollback_held")
    assert len(records) == 1
    assert records[0]["actor"] == "controlplane" and f"held by incident {incident['id']}" in records[0]["reason"]
    assert undo in records[0]["reason"] and "upload-failure-rate" in records[0]["reason"]
    assert records[0]["before"] == records[0]["after"]
    notices = told(story, "rollback_held")
    assert len(notices) == 1
    # A change event on PagerDuty: the incident named in its summary, the undo in its details.
    change = notices[0]["body"]["payload"]
    assert f"incident {incident['id']}" in change["summary"] and "upload-failure-rate" in change["summary"]
    assert undo in change["custom_details"]["description"] and change["custom_details"]["incident"] == incident["id"]
    assert notices[0]["environment"] == "production"

    undone = story.client.post(
        f"/api/v1/incidents/{incident['id']}/undo", headers=story.operator, json={"reason": "references fixed"}
    )
    assert undone.status_code == 200, undone.text
    assert story.rollout()["state"] == "running"

    # Undone, the guard acts again as usual: the next tick rolls the rollout back.
    story.clock.advance(timedelta(seconds=1))
    story.evaluate()

    assert story.rollout()["state"] == "rolled_back"
    rolled = audit(story, "rollout.rollback")
    assert len(rolled) == 1 and rolled[0]["actor"] == "controlplane" and "upload-failure-rate" in rolled[0]["reason"]
    assert served(story)["enabled"] is False
    assert len(told(story, "rollback")) == 1


def test_an_alertmanager_alert_under_an_incident_override_is_held_and_told_once(story: Story) -> None:
    story.apply()
    story.start_production()
    incident = set_off_in_production(story)
    during = served(story)
    hook = {"Authorization": story.operator["Authorization"], "User-Agent": "Alertmanager/0.25.0"}

    first = story.client.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("firing"))
    again = story.client.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("firing"))

    assert first.status_code == 200, first.text
    assert [item["action"] for item in first.json()] == ["held_by_incident"]
    assert [item["action"] for item in again.json()] == ["held_by_incident"]
    assert f"controlplane flags undo {incident['id']}" in first.json()[0]["detail"]
    assert served(story) == during and story.rollout()["state"] == "paused"
    assert audit(story, "rollout.rollback") == []
    assert len(audit(story, "flag.incident.rollback_held")) == 1
    assert len(told(story, "rollback_held")) == 1

    story.client.post(f"/api/v1/incidents/{incident['id']}/undo", headers=story.operator, json={"reason": "fixed"})
    after = story.client.post("/api/v1/alertmanager/webhook", headers=hook, json=alertmanager_payload("firing"))
    assert [item["action"] for item in after.json()] == ["rolled_back"]
    assert story.rollout()["state"] == "rolled_back"


def test_start_advance_and_resume_are_refused_under_an_incident_override_and_change_nothing(story: Story) -> None:
    story.apply()
    story.start_production()
    incident = set_off_in_production(story)
    before, status_before = served(story), story.rollout()
    audited = len(story.client.get("/api/v1/audit", headers=story.admin, params={"flag": FLAG}).json())
    revision = before["revision"]

    for operation in ("resume", "advance", "start"):
        body = {"expected_revision": revision, "reason": "carry on", "force": operation == "start"}
        refused = problem(
            story.client.post(f"{ROLLOUT}/{operation}", headers=story.operator, json=body), 409, "incident-active"
        )
        assert refused["incident"] == incident["id"]
        assert refused["undo"] == f"controlplane flags undo {incident['id']} --reason TEXT"
        assert f"incident {incident['id']}" in refused["detail"] and "`off` to everyone" in refused["detail"]

    assert served(story) == before
    assert story.rollout() == status_before
    assert len(story.client.get("/api/v1/audit", headers=story.admin, params={"flag": FLAG}).json()) == audited


def test_a_manual_rollback_under_an_incident_is_allowed_and_its_undo_then_needs_force(story: Story) -> None:
    story.apply()
    story.start_production()
    incident = set_off_in_production(story)

    rolled = story.client.post(
        f"{ROLLOUT}/rollback", headers=story.operator, json={"reason": "drop the rollout for good"}
    )

    assert rolled.status_code == 200, rolled.text
    assert story.rollout()["state"] == "rolled_back" and served(story)["enabled"] is False
    refused = problem(
        story.client.post(f"/api/v1/incidents/{incident['id']}/undo", headers=story.operator, json={"reason": "over"}),
        409,
        "changed-since",
    )
    assert refused["environments"] == ["production"]
    forced = story.client.post(
        f"/api/v1/incidents/{incident['id']}/undo", headers=story.operator, json={"reason": "over", "force": True}
    )
    assert forced.status_code == 200, forced.text
    production = forced.json()["undo"][0]
    assert production["changed_since"] is True and production["rollout"].startswith("not resumed")
    # The rollback stands; the incident is over, so a new start is no longer held.
    assert story.rollout()["state"] == "rolled_back"
    start = story.client.post(
        f"{ROLLOUT}/start",
        headers=story.operator,
        json={"expected_revision": served(story)["revision"], "force": True, "reason": "again, fixed"},
    )
    assert start.status_code == 200, start.text


def test_the_flag_read_and_metrics_mark_the_incident_in_force_until_it_is_undone(story: Story) -> None:
    story.apply()
    story.start_production()
    incident = set_off_in_production(story)
    environments = story.settings.environments

    flag = story.client.get(f"/api/v1/flags/{FLAG}", headers=story.operator).json()
    listed = next(
        item for item in story.client.get("/api/v1/flags", headers=story.operator).json() if item["key"] == FLAG
    )
    metrics = Scrape.of_text(scrape(story.client).text)

    marked = {state["environment"]: state["incident"] for state in flag["environments"]}
    assert marked["production"] == {
        "id": incident["id"],
        "variant": "off",
        "since": incident["created_at"],
        "actor": "sre-alice",
        "reason": "uploads corrupt references",
        "undo": f"controlplane flags undo {incident['id']} --reason TEXT",
    }
    assert all(marked[name] is None for name in environments if name != "production")
    assert [state["incident"] for state in listed["environments"]] == [
        state["incident"] for state in flag["environments"]
    ]
    one = story.client.get(f"/api/v1/flags/{FLAG}/environments/production", headers=story.operator).json()
    assert one["incident"] == marked["production"]
    assert metrics.value("controlplane_flag_incident_active", flag=FLAG, environment="production") == 1
    assert [
        metrics.value("controlplane_flag_incident_active", flag=FLAG, environment=name)
        for name in environments
        if name != "production"
    ] == [0] * (len(environments) - 1)

    story.client.post(f"/api/v1/incidents/{incident['id']}/undo", headers=story.operator, json={"reason": "over"})

    flag = story.client.get(f"/api/v1/flags/{FLAG}", headers=story.operator).json()
    assert [state["incident"] for state in flag["environments"]] == [None] * len(environments)
    after = Scrape.of_text(scrape(story.client).text)
    assert after.value("controlplane_flag_incident_active", flag=FLAG, environment="production") == 0


@pytest.mark.parametrize("trial", ["together-1", "together-2", "together-3", "rollback-first"])
def test_a_guard_rollback_racing_a_set_variant_ends_in_one_order_or_the_other(story: Story, trial: str) -> None:
    """The guard's evaluation and the incident action, started together: writes take one lock, so either the
    rollback commits first (the incident then overrides a rolled-back flag: everyone gets `on`, the rollout stays
    rolled back) or the incident does (the rollback is held and recorded, the rollout stays paused). Never a rollback
    over an incident in force. Started together, the incident has won every run here (the evaluation reads before
    it writes), so the other order is also run one after the other."""
    story.apply()
    story.start_production()
    story.send(upload_requests(291, "2xx", story.clock()) + upload_requests(6, "5xx", story.clock()))
    story.evaluate()
    story.clock.advance(timedelta(seconds=10))
    story.send(upload_requests(15, "5xx", story.clock()))
    story.clock.advance(timedelta(seconds=10))  # the next evaluation breaches
    start = threading.Barrier(1 if trial == "rollback-first" else 2)
    answers: list[Any] = []

    def evaluate() -> None:
        start.wait()
        story.evaluate()

    def set_on() -> None:
        start.wait()
        answers.append(
            story.client.post(
                f"/api/v1/flags/{FLAG}/set-variant",
                headers=story.operator,
                json={"variant": "on", "environments": ["production"], "reason": f"race {trial}"},
            )
        )

    if trial == "rollback-first":
        evaluate()
        set_on()
    else:
        threads = [threading.Thread(target=evaluate), threading.Thread(target=set_on)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    [answer] = answers
    assert answer.status_code == 201, answer.text
    incident = answer.json()

    during = served(story)
    assert (during["enabled"], during["default_variant"], during["rules"]) == (True, "on", [])
    rolled_back = audit(story, "rollout.rollback")
    held = story.client.get(f"/api/v1/incidents/{incident['id']}", headers=story.operator).json()
    held_rules = [item["rule"] for item in held["environments"][0]["held"]]
    if rolled_back:  # the rollback first: the incident overrode a rolled-back rollout
        assert story.rollout()["state"] == "rolled_back" and held_rules == []
        assert incident["environments"][0]["before"]["enabled"] is False
        assert rolled_back[0]["id"] < audit(story, "flag.incident.set_variant")[0]["id"]
    else:  # the incident first: the guard's rollback held
        assert story.rollout()["state"] == "paused" and held_rules == ["upload-failure-rate"]
