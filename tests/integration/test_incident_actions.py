"""Incident actions against the real served app, on both backends: `ai.mode` set to HUMANO everywhere (the incident
playbook's "switch the global mode to HUMANO when OpenAI fails") as every agent is then answered through OFREP and
through the in-process provider, the running production rollout paused and resumed by the undo, the audit log and
the notification outbox; an undo refused after a concurrent change and forced; bad input refused with nothing
changed; the same through the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfeature.evaluation_context import EvaluationContext

from controlplane.api.roles import Role
from controlplane.settings import Settings
from controlplane_client.provider import ControlPlaneProvider
from tests.conftest import REPO_ROOT, problem
from tests.integration.test_cli import cli_env, run  # noqa: F401 (cli_env is a fixture used by name)

FLAG = "ai.mode"
ENVIRONMENTS = ("dev", "qa", "staging", "production")
# Agents of pilot and other tenants, on the support queue and another: the dev and qa rules pick some of them.
AGENTS = [
    {"targetingKey": f"agent-{n}", "agent_id": f"agent-{n}", "tenant": tenant, "queue": queue}
    for n, (tenant, queue) in enumerate(
        (tenant, queue) for tenant in ("acme", "globex", "initech") for queue in ("support", "billing")
    )
] + [
    {"targetingKey": f"agent-x{n}", "agent_id": f"agent-x{n}", "tenant": "initech", "queue": "sales"} for n in range(60)
]

Answers = dict[str, dict[str, str]]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Incident actions routed to a webhook receiver (never delivered here: the outbox is what is checked)."""
    path = tmp_path / "notifications.yaml"
    path.write_text(
        "receivers:\n  oncall: {type: webhook, url: 'http://127.0.0.1:9/hook'}\n"
        "routes:\n  - {kind: [incident, rollout], receivers: [oncall]}\n"
    )
    return Settings(
        database_url=database_url, scheduler_enabled=False, replica_id="test-replica", notifications_file=path
    )


class Desk:
    """The served control plane: an SRE (operator), an admin who changes things meanwhile, evaluation tokens."""

    def __init__(self, base_url: str, make_token: Callable[..., str]) -> None:
        self.base_url = base_url
        self.sre = httpx.Client(base_url=base_url, headers=_bearer(make_token(Role.OPERATOR, name="sre-ana")))
        self.admin = httpx.Client(base_url=base_url, headers=_bearer(make_token(Role.ADMIN, name="admin-bo")))
        self.evaluate = {env: make_token(Role.EVALUATE, environment=env) for env in ENVIRONMENTS}

    def close(self) -> None:
        self.sre.close()
        self.admin.close()

    def ok(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
        response = client.request(method, "/api/v1" + path, **kwargs)
        assert response.is_success, response.text
        return response.json()

    def start_production_rollout(self) -> None:
        """ai.mode's production rollout at its first stage (10% of agents), forced past the promotion order."""
        path = f"/flags/{FLAG}/environments/production/rollout"
        revision = self.ok(self.sre, "GET", path)["revision"]
        body = {"expected_revision": revision, "force": True, "reason": "pilot straight to production"}
        self.ok(self.sre, "POST", f"{path}/start", json=body)

    def told(self) -> list[tuple[str, str]]:
        """(kind, environment) of every incident event in the notification outbox, sorted."""
        rows = self.ok(self.sre, "GET", "/notifications", params={"rule": "incident"})
        alerts = [alert for row in rows for alert in row["payload"]["alerts"]]
        return sorted((alert["kind"], alert["environment"]) for alert in alerts)

    def rollout_state(self, environment: str) -> str:
        state: str = self.ok(self.sre, "GET", f"/flags/{FLAG}/environments/{environment}/rollout")["state"]
        return state

    def ofrep_answers(self) -> Answers:
        """Every agent's variant in every environment, through OFREP."""
        answers: Answers = {}
        with httpx.Client(base_url=self.base_url) as http:
            for environment in ENVIRONMENTS:
                answers[environment] = {}
                for context in AGENTS:
                    response = http.post(
                        f"/ofrep/v1/evaluate/flags/{FLAG}",
                        headers=_bearer(self.evaluate[environment]),
                        json={"context": context},
                    )
                    assert response.status_code == 200, response.text
                    answers[environment][context["agent_id"]] = response.json()["variant"]
        return answers

    def provider_answers(self) -> Answers:
        """Every agent's variant in every environment, through a fresh in-process provider per environment."""
        answers: Answers = {}
        for environment in ENVIRONMENTS:
            provider = ControlPlaneProvider(self.base_url, self.evaluate[environment], environ={})
            provider.initialize(EvaluationContext())
            try:
                answers[environment] = {}
                for context in AGENTS:
                    attributes = {name: value for name, value in context.items() if name != "targetingKey"}
                    evaluation = EvaluationContext(targeting_key=context["targetingKey"], attributes=attributes)
                    details = provider.resolve_string_details(FLAG, "unset", evaluation)
                    assert details.variant is not None, details
                    answers[environment][context["agent_id"]] = details.variant
            finally:
                provider.shutdown()
        return answers

    def answers(self) -> Answers:
        """What every agent gets in every environment; OFREP and the in-process provider must agree on it."""
        ofrep = self.ofrep_answers()
        assert self.provider_answers() == ofrep
        return ofrep


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def desk(live_server: str, make_token: Callable[..., str]) -> Iterator[Desk]:
    """The AI assistant definition applied as shipped."""
    served = Desk(live_server, make_token)
    text = (REPO_ROOT / "definitions" / "ai-assistant.yaml").read_text()
    served.ok(served.admin, "POST", "/definitions/apply", json={"content": text, "source": "ai-assistant.yaml"})
    try:
        yield served
    finally:
        served.close()


def test_set_variant_serves_humano_to_every_agent_everywhere_and_undo_brings_back_the_earlier_answers(
    desk: Desk,
) -> None:
    desk.start_production_rollout()
    earlier = desk.answers()
    # The pilot rules (dev, qa) and production's 10% serve the copilot to some agents: there is something to undo.
    assert {"COPILOTO", "HUMANO"} <= set(earlier["dev"].values())
    assert "COPILOTO" in earlier["production"].values()

    incident = desk.ok(
        desk.sre,
        "POST",
        f"/flags/{FLAG}/set-variant",
        json={"variant": "HUMANO", "all_environments": True, "reason": "OpenAI is failing"},
    )

    # Every environment where the flag is on, overridden; staging (switched off, serving HUMANO already) left alone.
    assert [item["environment"] for item in incident["environments"]] == ["dev", "qa", "production"]
    assert set(incident["skipped"]) == {"staging"}
    by_env = {item["environment"]: item for item in incident["environments"]}
    assert by_env["production"]["rollout_paused"] is True and by_env["dev"]["rollout_paused"] is False
    assert by_env["dev"]["before"]["rules"] and by_env["dev"]["after"]["rules"] == []
    assert by_env["production"]["after"]["rollout"]["percentage"] == 0
    assert desk.rollout_state("production") == "paused"
    during = desk.answers()
    assert {environment: set(agents.values()) for environment, agents in during.items()} == {
        environment: {"HUMANO"} for environment in ENVIRONMENTS
    }

    # One audit record per environment with before and after; the pause audited as the incident's.
    audit = desk.ok(desk.sre, "GET", "/audit", params={"flag": FLAG, "action": "flag.incident.set_variant"})
    assert sorted(record["environment"] for record in audit) == ["dev", "production", "qa"]
    assert all(record["before"] and record["after"]["default_variant"] == "HUMANO" for record in audit)
    assert all(record["actor"] == "sre-ana" and "OpenAI is failing" in record["reason"] for record in audit)
    paused = desk.ok(desk.sre, "GET", "/audit", params={"flag": FLAG, "action": "rollout.pause"})
    assert len(paused) == 1 and f"paused by incident {incident['id']}" in paused[0]["reason"]
    # On-call hears of each environment, in one webhook message.
    assert desk.told() == [("variant_set", "dev"), ("variant_set", "production"), ("variant_set", "qa")]

    undone = desk.ok(desk.sre, "POST", f"/incidents/{incident['id']}/undo", json={"reason": "OpenAI is back"})

    assert {item["environment"]: item["changed_since"] for item in undone["undo"]} == {
        "dev": False,
        "qa": False,
        "production": False,
    }
    assert next(item for item in undone["undo"] if item["environment"] == "production")["rollout"].startswith("resumed")
    assert desk.rollout_state("production") == "running"
    assert desk.answers() == earlier
    restored = desk.ok(desk.sre, "GET", "/audit", params={"flag": FLAG, "action": "flag.incident.undo"})
    assert sorted(record["environment"] for record in restored) == ["dev", "production", "qa"]
    assert [kind for kind, _ in desk.told()] == ["variant_restored"] * 3 + ["variant_set"] * 3

    again = desk.sre.post(f"/api/v1/incidents/{incident['id']}/undo", json={"reason": "twice"})
    problem(again, 409, "incident-undone")


def test_undo_after_a_concurrent_change_is_refused_with_409_and_force_restores_the_recorded_states(
    desk: Desk,
) -> None:
    before = desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")
    incident = desk.ok(
        desk.sre,
        "POST",
        f"/flags/{FLAG}/set-variant",
        json={"variant": "HUMANO", "environments": ["dev", "qa"], "reason": "OpenAI is failing"},
    )
    # Meanwhile someone else moves dev to the autonomous mode.
    current = desk.ok(desk.admin, "GET", f"/flags/{FLAG}/environments/dev")
    desk.ok(
        desk.admin,
        "PATCH",
        f"/flags/{FLAG}/environments/dev",
        json={"default_variant": "AUTONOMO"},
        headers={"If-Match": str(current["revision"])},
        params={"reason": "trying autonomous replies"},
    )

    refused = desk.sre.post(f"/api/v1/incidents/{incident['id']}/undo", json={"reason": "OpenAI is back"})

    body = problem(refused, 409, "changed-since")
    assert body["environments"] == ["dev"] and body["overridable_with"] == "force"
    # Nothing changed: dev keeps the other change, qa still overridden, the incident still in force.
    assert desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")["default_variant"] == "AUTONOMO"
    assert desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/qa")["rules"] == []
    assert desk.ok(desk.sre, "GET", f"/incidents/{incident['id']}")["undone_at"] is None

    forced = desk.ok(
        desk.sre, "POST", f"/incidents/{incident['id']}/undo", json={"reason": "OpenAI is back", "force": True}
    )

    assert {item["environment"]: item["changed_since"] for item in forced["undo"]} == {"dev": True, "qa": False}
    after = desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")
    fields = ("enabled", "default_variant", "rules", "rollout")
    assert {name: after[name] for name in fields} == {name: before[name] for name in fields}
    audit = desk.ok(desk.sre, "GET", "/audit", params={"flag": FLAG, "action": "flag.incident.undo"})
    dev = next(record for record in audit if record["environment"] == "dev")
    assert "overriding changes since" in dev["reason"] and dev["before"]["default_variant"] == "AUTONOMO"


def test_an_incident_overridden_by_a_later_one_is_undone_only_after_it_even_forced(desk: Desk) -> None:
    before = desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")
    first = desk.ok(
        desk.sre,
        "POST",
        f"/flags/{FLAG}/set-variant",
        json={"variant": "HUMANO", "environments": ["dev"], "reason": "OpenAI is failing"},
    )
    second = desk.ok(
        desk.sre,
        "POST",
        f"/flags/{FLAG}/set-variant",
        json={"variant": "COPILOTO", "environments": ["dev"], "reason": "humans overwhelmed: copilot only"},
    )

    for force in (False, True):
        refused = desk.sre.post(
            f"/api/v1/incidents/{first['id']}/undo", json={"reason": "OpenAI is back", "force": force}
        )
        body = problem(refused, 409, "incident-superseded")
        assert (body["superseded_by"], body["environments"]) == (second["id"], ["dev"])
        assert f"controlplane flags undo {second['id']}" in body["detail"]
    assert desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")["default_variant"] == "COPILOTO"

    # Undone newest first: the first incident's override comes back, then the state before both.
    desk.ok(desk.sre, "POST", f"/incidents/{second['id']}/undo", json={"reason": "humans caught up"})
    assert desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")["default_variant"] == "HUMANO"
    desk.ok(desk.sre, "POST", f"/incidents/{first['id']}/undo", json={"reason": "OpenAI is back"})
    after = desk.ok(desk.sre, "GET", f"/flags/{FLAG}/environments/dev")
    fields = ("enabled", "default_variant", "rules", "rollout")
    assert {name: after[name] for name in fields} == {name: before[name] for name in fields}


def test_bad_incident_requests_are_refused_with_problem_details_and_change_nothing(desk: Desk) -> None:
    flag_before = desk.ok(desk.sre, "GET", f"/flags/{FLAG}")
    path = f"/api/v1/flags/{FLAG}/set-variant"

    problem(
        desk.sre.post(
            "/api/v1/flags/no.such.flag/set-variant",
            json={"variant": "HUMANO", "all_environments": True, "reason": "x"},
        ),
        404,
        "flag-not-found",
    )
    unknown = problem(
        desk.sre.post(path, json={"variant": "OFF", "all_environments": True, "reason": "x"}), 422, "unknown-variant"
    )
    assert "HUMANO" in unknown["detail"]
    problem(desk.sre.post(path, json={"variant": "HUMANO", "all_environments": True}), 422, "reason-required")
    problem(desk.sre.post(path, json={"variant": "HUMANO", "reason": " "}), 422, "reason-required")
    problem(desk.sre.post(path, json={"variant": "HUMANO", "reason": "x"}), 422, "invalid-field")
    problem(
        desk.sre.post(path, json={"variant": "HUMANO", "environments": ["moon"], "reason": "x"}),
        404,
        "environment-not-found",
    )
    # Staging is off and serves HUMANO to everyone already: nothing to do there.
    problem(
        desk.sre.post(path, json={"variant": "HUMANO", "environments": ["staging"], "reason": "x"}),
        409,
        "nothing-to-change",
    )
    problem(desk.sre.post("/api/v1/incidents/41/undo", json={"reason": "x"}), 404, "incident-not-found")
    assert desk.ok(desk.sre, "GET", "/incidents") == []
    assert desk.ok(desk.sre, "GET", f"/flags/{FLAG}") == flag_before
    done = desk.sre.post(path, json={"variant": "HUMANO", "all_environments": True, "reason": "drill"})
    assert done.status_code == 201, done.text
    incident = desk.ok(desk.sre, "GET", "/incidents")[0]
    problem(desk.sre.post(f"/api/v1/incidents/{incident['id']}/undo", json={}), 422, "reason-required")

    desk.ok(desk.sre, "POST", f"/incidents/{incident['id']}/undo", json={"reason": "drill over"})
    flag_after = desk.ok(desk.sre, "GET", f"/flags/{FLAG}")
    served = ("environment", "enabled", "default_variant", "rules", "rollout")
    assert [{name: env[name] for name in served} for env in flag_after["environments"]] == [
        {name: env[name] for name in served} for env in flag_before["environments"]
    ]


@pytest.mark.usefixtures("cli_env")
def test_the_cli_sets_the_variant_everywhere_refuses_a_stale_undo_and_forces_it(
    desk: Desk, capsys: pytest.CaptureFixture[str]
) -> None:
    desk.start_production_rollout()
    earlier = desk.ofrep_answers()

    code, out, err = run(
        capsys, "flags", "set-variant", FLAG, "HUMANO", "--all-environments", "--reason", "OpenAI is failing"
    )

    assert code == 0, err
    assert "left alone: staging" in out
    assert "running rollouts paused (resumed by the undo): production" in out
    incident = desk.ok(desk.sre, "GET", "/incidents", params={"flag": FLAG})[0]
    assert f"controlplane flags undo {incident['id']}" in out
    assert {variant for agents in desk.ofrep_answers().values() for variant in agents.values()} == {"HUMANO"}
    code, out, _ = run(capsys, "flags", "incidents", "--flag", FLAG)
    assert code == 0 and "in force" in out and "OpenAI is failing" in out
    # `flags show` marks the incident in force: where, what, by whom, why, and its undo.
    code, out, _ = run(capsys, "flags", "show", FLAG)
    assert code == 0
    assert f"INCIDENT {incident['id']} in force in dev, qa, production" in out
    assert "`HUMANO` to everyone since" in out and "by admin: OpenAI is failing" in out
    assert f"undo: controlplane flags undo {incident['id']} --reason TEXT" in out
    assert f"HUMANO to everyone (incident {incident['id']})" in out

    # Someone adds a rule in qa meanwhile: the undo would overwrite it.
    current = desk.ok(desk.admin, "GET", f"/flags/{FLAG}/environments/qa")
    rule = {"name": "vip", "when": [{"attribute": "tenant", "op": "equals", "value": "globex"}], "variant": "COPILOTO"}
    desk.ok(
        desk.admin,
        "PATCH",
        f"/flags/{FLAG}/environments/qa",
        json={"rules": [rule]},
        headers={"If-Match": str(current["revision"])},
    )
    code, _, err = run(capsys, "flags", "undo", str(incident["id"]), "--reason", "OpenAI is back")
    assert code == 1
    assert "409 changed-since" in err and "qa" in err and "--force" in err
    assert desk.rollout_state("production") == "paused"  # nothing undone

    code, out, err = run(capsys, "flags", "undo", str(incident["id"]), "--reason", "OpenAI is back", "--force")

    assert code == 0, err
    assert "restored (forced)" in out and "resumed" in out
    assert desk.rollout_state("production") == "running"
    assert desk.ofrep_answers() == earlier
    code, out, _ = run(capsys, "flags", "show", FLAG)
    assert code == 0 and "INCIDENT" not in out and "to everyone" not in out
