"""Incident actions over rollouts run per segment, and the scheduler under an incident, on both backends.

`flags set-variant` must serve its variant to every context whatever the rollout is doing: a rollout run per queue
served each queue its own percentage (and the off variant outside every queue) through the override, and the action
called it "already serving `off` to everyone" while 10% of each queue got `on`. Now every segment's rollout is paused,
the override serves no segment, and the undo resumes exactly the segments it paused. The scheduler's tick asks the
same hold as an operator's advance: a rollout running under an incident override (whatever brought it there) does not
advance, and its progress-deadline step says the incident holds it.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from controlplane.api.roles import Role
from controlplane.db import session_scope
from controlplane.guarding.readings import AlertGateReader
from controlplane.rollouts.operations import Operation, RolloutTarget
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.service import operate_rollout
from controlplane.rollouts.steps import RolloutStep
from tests.conftest import problem, tick_rollouts
from tests.guard_traffic import GuardedTraffic
from tests.integration.test_segment_rollouts import DEFINITION, FLAG, USERS, operate, segments, status

#: Contexts in each declared queue, in an undeclared one, and without the segment attribute.
CONTEXTS = [
    {"targetingKey": user, "agent_id": user, **({"queue": queue} if queue else {})}
    for user in USERS
    for queue in ("support", "sales", "other", None)
]


@pytest.fixture
def evaluate_token(make_token: Any) -> str:
    token: str = make_token(Role.EVALUATE, environment="production")
    return token


def answers(traffic: GuardedTraffic, evaluate_token: str) -> list[tuple[Any, str]]:
    """What OFREP serves each of ``CONTEXTS`` in production: (value, variant)."""
    headers = {"Authorization": f"Bearer {evaluate_token}"}
    served = []
    for context in CONTEXTS:
        response = traffic.client.post(f"/ofrep/v1/evaluate/flags/{FLAG}", headers=headers, json={"context": context})
        assert response.status_code == 200, response.text
        served.append((response.json()["value"], response.json()["variant"]))
    return served


def set_variant(traffic: GuardedTraffic, variant: str) -> dict[str, Any]:
    response = traffic.client.post(
        f"/api/v1/flags/{FLAG}/set-variant",
        headers=traffic.operator,
        json={"variant": variant, "environments": ["production"], "reason": "checkout broken in every queue"},
    )
    assert response.status_code == 201, response.text
    incident: dict[str, Any] = response.json()
    return incident


def undo(traffic: GuardedTraffic, incident: dict[str, Any], *, force: bool = False) -> dict[str, Any]:
    response = traffic.client.post(
        f"/api/v1/incidents/{incident['id']}/undo", headers=traffic.operator, json={"reason": "fixed", "force": force}
    )
    assert response.status_code == 200, response.text
    undone: dict[str, Any] = response.json()
    return undone


def start_both_queues(traffic: GuardedTraffic) -> None:
    traffic.apply(DEFINITION)
    operate(traffic, "start", "queue=support")
    operate(traffic, "start", "queue=sales")
    operate(traffic, "advance", "queue=support", reason="support checked by hand", force=True)


@pytest.mark.parametrize("variant", ["off", "on"])
def test_an_incident_serves_its_variant_to_every_context_of_a_rollout_run_per_segment_and_its_undo_resumes_it(
    traffic: GuardedTraffic, evaluate_token: str, variant: str
) -> None:
    start_both_queues(traffic)
    before = answers(traffic, evaluate_token)
    assert {value for value, _ in before} == {True, False}, "the rollout serves some contexts on, others off"

    incident = set_variant(traffic, variant)

    [production] = incident["environments"]
    assert production["rollout_paused"] is True
    assert production["paused_segments"] == ["queue=support", "queue=sales"]
    assert "segments" not in production["after"]["rollout"]
    assert production["after"]["rollout"]["percentage"] == 0.0
    # Every context, in a queue, outside them or without one, gets the incident's variant.
    assert set(answers(traffic, evaluate_token)) == {(variant == "on", variant)}
    shown = segments(traffic)
    assert {value: (s["state"], s["serving_percentage"]) for value, s in shown.items()} == {
        "support": ("paused", 0.0),
        "sales": ("paused", 0.0),
    }
    # No segment may be resumed or advanced under the override.
    revision = status(traffic, "queue=sales")["revision"]
    refused = traffic.client.post(
        f"/api/v1/flags/{FLAG}/environments/production/rollout/resume",
        headers=traffic.operator,
        json={"expected_revision": revision, "segment": "queue=sales", "reason": "try"},
    )
    problem(refused, 409, "incident-active")
    # Nor rolled back: that would serve the segments' percentages again (and off outside them), not the variant.
    during = answers(traffic, evaluate_token)
    rollback = traffic.client.post(
        f"/api/v1/flags/{FLAG}/environments/production/rollout/rollback",
        headers=traffic.operator,
        json={"segment": "queue=sales", "reason": "sales is the worst"},
    )
    assert "rollback of queue=sales would fight it" in problem(rollback, 409, "incident-active")["detail"]
    assert answers(traffic, evaluate_token) == during
    assert segments(traffic)["sales"]["state"] == "paused"

    undone = undo(traffic, incident)

    [restored] = undone["undo"]
    assert restored["rollout"] == (
        "queue=support: resumed (the stage's bake time starts again); "
        "queue=sales: resumed (the stage's bake time starts again)"
    )
    shown = segments(traffic)
    assert {value: (s["state"], s["percentage"]) for value, s in shown.items()} == {
        "support": ("running", 50.0),
        "sales": ("running", 10.0),
    }
    assert answers(traffic, evaluate_token) == before


def test_the_incident_and_the_audit_name_the_paused_segments(traffic: GuardedTraffic) -> None:
    start_both_queues(traffic)
    incident = set_variant(traffic, "off")

    shown = traffic.client.get(f"/api/v1/incidents/{incident['id']}", headers=traffic.operator).json()
    assert shown["environments"][0]["paused_segments"] == ["queue=support", "queue=sales"]
    records = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "flag.incident.set_variant"}
    ).json()
    assert "running rollouts of queue=support, queue=sales paused" in records[0]["reason"]
    pauses = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "rollout.pause"}
    ).json()
    assert sorted(record["after"]["segment"] for record in pauses) == ["queue=sales", "queue=support"]


BAKED = textwrap.dedent(
    """\
    pipeline: checkout
    flags:
      - key: checkout-v2
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        plan:
          environments:
            - environment: production
              stages:
                - {percentage: 10, bake: 10m, auto_advance: true}
                - {percentage: 100}
    """
)


class Told:
    """A ``StepAnnouncer`` that keeps the steps it is told."""

    def __init__(self) -> None:
        self.steps: list[RolloutStep] = []

    def announce(self, session: Session, steps: Sequence[RolloutStep], *, now: datetime) -> None:
        self.steps.extend(steps)


def test_the_scheduler_does_not_advance_a_rollout_an_incident_holds_and_says_so_at_its_deadline(
    traffic: GuardedTraffic,
) -> None:
    traffic.apply(BAKED)
    operate(traffic, "start", None)
    incident = set_variant(traffic, "off")
    assert status(traffic)["state"] == "paused"
    # Running under the override, whatever brought it there (here the service itself, asked without a hold):
    with session_scope(traffic.factory) as session:
        operate_rollout(
            session,
            target=RolloutTarget(FLAG, "production"),
            operation=Operation.RESUME,
            body=RolloutOperation(reason="resumed past the hold", expected_revision=status(traffic)["revision"]),
            actor="test",
            environments=traffic.settings.environments,
            now=traffic.clock(),
            gates=AlertGateReader(),
            announcer=None,
            hold=None,
        )
    told = Told()

    def tick() -> dict[str, int]:
        return tick_rollouts(traffic.factory, traffic.settings.environments, traffic.clock, told)

    traffic.clock.advance(timedelta(minutes=10))  # baked, no guards: only the hold keeps it
    assert tick() == {"checked": 1, "advanced": 0, "held": 1, "deadlines": 0, "conflicts": 0, "errors": 0}
    assert (status(traffic)["state"], status(traffic)["percentage"]) == ("running", 10.0)

    traffic.clock.advance(timedelta(minutes=10))  # past its progress deadline: 10m bake + 10m
    assert tick()["deadlines"] == 1
    [deadline] = told.steps
    assert f"by incident {incident['id']}" in deadline.reason
    assert f"controlplane flags undo {incident['id']}" in deadline.reason

    # The resume past the hold changed production since the incident: undone with force; its own resume finds the
    # rollout running and reports it.
    undone = undo(traffic, incident, force=True)
    assert undone["undo"][0]["rollout"].startswith("not resumed")
    assert tick()["advanced"] == 1
    assert status(traffic)["percentage"] == 100.0
