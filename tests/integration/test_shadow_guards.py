"""A shadow guard through the served app: it fires and is recorded, on-call hears of it as `info`, but it holds no
stage (`rollout advance` goes through without force) and rolls nothing back, neither by the control plane's own
evaluation nor through an Alertmanager alert naming it. An enforced guard beside it still does both. Prometheus's alert
of a sequential rule rolls nothing back through Alertmanager either: the control plane's own test decides."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.catalog.rules import SHADOW_CONDITION
from controlplane.settings import Settings
from tests.guard_traffic import FLAG, PIPELINE, GuardedTraffic, notifying_settings, requests

NOTIFICATIONS = """
receivers:
  oncall:
    type: pagerduty
    routing_key: "0123456789abcdef0123456789abcdef"
    url: http://127.0.0.1:9/v2/enqueue
  watching:
    type: webhook
    url: http://127.0.0.1:9/hook
routes:
  - severity: [page, ticket]
    receivers: [oncall]
  - severity: [info]
    receivers: [watching]
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return notifying_settings(database_url, tmp_path, NOTIFICATIONS)


def test_a_firing_shadow_guard_neither_holds_advance_nor_rolls_back(traffic: GuardedTraffic) -> None:
    traffic.apply()
    started = traffic.operate("start")
    assert started.status_code == 200, started.text

    # 10% errors: over the shadow guard's 5%, under the enforced guard's 20%.
    traffic.send(requests(10, "5xx", traffic.clock()) + requests(90, "2xx", traffic.clock()))
    traffic.evaluate()

    alerts = traffic.alerts()
    shadow = alerts[("error-rate-strict", "production")]
    assert (shadow["state"], shadow["value"], shadow["samples"]) == ("firing", pytest.approx(0.1), 100)
    assert shadow["condition"].endswith(SHADOW_CONDITION)
    assert alerts[("error-rate", "production")]["state"] == "inactive"
    assert [item["to_state"] for item in traffic.history("error-rate-strict")] == ["firing"]

    status = traffic.rollout()
    assert status["state"] == "running"  # no automatic rollback
    guards = {guard["rule"]: guard for guard in status["guards"]}
    assert guards["error-rate-strict"]["state"] == "firing"  # shown, marked shadow
    assert SHADOW_CONDITION in guards["error-rate-strict"]["condition"]
    assert status["gates"] == "clear", status["gates_detail"]

    # A rendered guard alert naming the shadow rule rolls nothing back through Alertmanager either.
    labels = {"alertname": "ErrorRateStrict", "environment": "production", "flag": FLAG, "pipeline": PIPELINE}
    alert = {"status": "firing", "labels": labels | {"guard": "true", "rule": "error-rate-strict", "severity": "page"}}
    payload = {"version": "4", "status": "firing", "alerts": [alert | {"fingerprint": "5a1e"}]}
    hook = traffic.client.post("/api/v1/alertmanager/webhook", headers=traffic.operator, json=payload)
    assert hook.status_code == 200, hook.text
    assert [item["action"] for item in hook.json()] == ["shadow_guard"]
    assert traffic.rollout()["state"] == "running"

    advanced = traffic.operate("advance", reason="the strict line is only watched")
    assert advanced.status_code == 200, advanced.text
    assert advanced.json()["percentage"] == 100

    # On-call heard of the shadow guard as info only; nothing was paged, nothing rolled back. (The catch-all route
    # also carries the rollout's own steps, all info: started and advanced.)
    notes = traffic.client.get("/api/v1/notifications", headers=traffic.viewer).json()
    assert {(note["rule"], note["kind"], note["severity"], note["receiver"]) for note in notes} == {
        ("error-rate-strict", "trigger", "info", "watching"),
        ("rollout", "rollout_started", "info", "watching"),
        ("rollout", "stage_advanced", "info", "watching"),
    }
    audit = traffic.client.get("/api/v1/audit", headers=traffic.admin, params={"flag": FLAG}).json()
    assert "rollout.rollback" not in {record["action"] for record in audit}


def test_an_enforced_guard_beside_it_still_holds_and_rolls_back(traffic: GuardedTraffic) -> None:
    traffic.apply()
    assert traffic.operate("start").status_code == 200

    # 30% errors: both guards fire; the enforced one rolls the flag back, as before.
    traffic.send(requests(30, "5xx", traffic.clock()) + requests(70, "2xx", traffic.clock()))
    traffic.evaluate()

    status = traffic.rollout()
    assert status["state"] == "rolled_back"
    audit = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    assert len(audit) == 1 and "guard error-rate in production" in audit[0]["reason"]
    notes = traffic.client.get("/api/v1/notifications", headers=traffic.viewer).json()
    severities = {(note["rule"], note["kind"]): note["severity"] for note in notes}
    assert severities[("error-rate-strict", "trigger")] == "info"
    assert severities[("error-rate", "trigger")] == severities[("error-rate", "rollback")] == "page"
    # The automatic rollback is told once, as its guard's rollback; the rollout's own step log has only the start.
    assert [note["kind"] for note in notes if note["rule"] == "rollout"] == ["rollout_started"]


def test_a_firing_shadow_guard_of_the_first_stage_does_not_block_a_start(traffic: GuardedTraffic) -> None:
    traffic.apply()
    # 10% errors before any rollout: the shadow guard (5%) fires in production, the enforced one (20%) does not.
    traffic.send(requests(10, "5xx", traffic.clock()) + requests(90, "2xx", traffic.clock()))
    traffic.evaluate()
    assert traffic.alerts()[("error-rate-strict", "production")]["state"] == "firing"

    started = traffic.operate("start")
    assert started.status_code == 200, started.text
    status = traffic.rollout()
    assert status["state"] == "running"
    assert {guard["rule"]: guard["state"] for guard in status["guards"]}["error-rate-strict"] == "firing"  # shown


def test_a_firing_enforced_guard_of_the_first_stage_still_blocks_a_start(traffic: GuardedTraffic) -> None:
    traffic.apply()
    traffic.send(requests(30, "5xx", traffic.clock()) + requests(70, "2xx", traffic.clock()))
    traffic.evaluate()

    refused = traffic.operate("start")
    assert refused.status_code == 409, refused.text
    assert "`error-rate`" in refused.text and "`error-rate-strict`" not in refused.text


def test_prometheus_alerts_of_a_sequential_rule_roll_nothing_back_through_alertmanager(traffic: GuardedTraffic) -> None:
    # Prometheus renders a sequential rule as its plain threshold, which noise crosses: the control plane's own test
    # decides the rollback, and the webhook says so instead of acting on the plain alert.
    traffic.apply()
    assert traffic.operate("start").status_code == 200
    labels = {"alertname": "ErrorRateSequential", "environment": "production", "flag": FLAG, "pipeline": PIPELINE}
    alert = {"status": "firing", "labels": labels | {"guard": "true", "rule": "error-rate-sequential"}}
    payload = {"version": "4", "status": "firing", "alerts": [alert | {"fingerprint": "5e9a"}]}

    hook = traffic.client.post("/api/v1/alertmanager/webhook", headers=traffic.operator, json=payload)

    assert hook.status_code == 200, hook.text
    (outcome,) = hook.json()
    assert outcome["action"] == "sequential_guard"
    assert "decided at 99% confidence (sequential: CUSUM against 0.1)" in outcome["detail"], outcome["detail"]
    assert traffic.rollout()["state"] == "running"
    # A plain guard's alert still rolls back, as before.
    plain = alert | {"labels": labels | {"guard": "true", "rule": "error-rate", "alertname": "ErrorRate"}}
    hook = traffic.client.post(
        "/api/v1/alertmanager/webhook", headers=traffic.operator, json=payload | {"alerts": [plain]}
    )
    assert [item["action"] for item in hook.json()] == ["rolled_back"]
    assert traffic.rollout()["state"] == "rolled_back"
