"""Rollouts run per segment (`per: queue`): two queues rolled out independently, one rolled back by its own guard while
the other advances; the in-process provider (synced from a live server) and OFREP agree for every segment; an
Alertmanager alert of a guard scoped to a segment rolls back that segment alone."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from sqlalchemy import Engine

from controlplane.app import create_app
from controlplane.embedded import serve_in_thread
from controlplane.settings import Settings
from controlplane_client.provider import ControlPlaneProvider
from tests.conftest import FakeClock, problem
from tests.guard_traffic import GuardedTraffic

FLAG = "checkout-v2"
ROLLOUT = f"/api/v1/flags/{FLAG}/environments/production/rollout"
DEFINITION = textwrap.dedent(
    """\
    pipeline: checkout
    flags:
      - key: checkout-v2
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        bucket_by: agent_id
        plan:
          rollback_policy: "off"
          auto_rollback: true
          environments:
            - environment: production
              per: {attribute: queue, values: [support, sales]}
              stages:
                - {percentage: 10, guards: [error-rate]}
                - {percentage: 50, guards: [error-rate]}
                - {percentage: 100, guards: [error-rate]}
      - key: checkout-banner
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
        rollout_variant: "on"
        plan:
          environments:
            - environment: production
              stages: [{percentage: 100}]
    events:
      - name: http_request
        flag: checkout-v2
        outcomes: [ok, failed]
        labels:
          status_class: {values: [2xx, 5xx]}
          queue: {values: [support, sales, other], otherwise: other}
    rules:
      - name: error-rate
        kind: ratio
        event: http_request
        numerator: {status_class: [5xx]}
        op: ">"
        threshold: 0.2
        window: 1m
        min_samples: 10
        severity: page
    """
)
USERS = [f"agent-{n}" for n in range(40)]


def requests(count: int, status_class: str, queue: str, at: datetime) -> list[dict[str, Any]]:
    return [
        {
            "type": "http_request",
            "time": at.isoformat(),
            "environment": "production",
            "variant": "on",
            "outcome": "failed" if status_class == "5xx" else "ok",
            "labels": {"status_class": status_class, "queue": queue},
        }
        for _ in range(count)
    ]


def rollout(environment: str) -> str:
    return f"/api/v1/flags/{FLAG}/environments/{environment}/rollout"


def status(traffic: GuardedTraffic, segment: str | None = None, environment: str = "production") -> dict[str, Any]:
    params = {"segment": segment} if segment else None
    response = traffic.client.get(rollout(environment), headers=traffic.viewer, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def operate(
    traffic: GuardedTraffic, operation: str, segment: str | None, environment: str = "production", **body: Any
) -> dict[str, Any]:
    body.setdefault("expected_revision", status(traffic, segment, environment)["revision"])
    if segment is not None:
        body["segment"] = segment
    response = traffic.client.post(f"{rollout(environment)}/{operation}", headers=traffic.operator, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def segments(traffic: GuardedTraffic) -> dict[str, dict[str, Any]]:
    return {segment["value"]: segment for segment in status(traffic)["segments"]}


def served(traffic: GuardedTraffic, evaluate_token: str) -> dict[tuple[str, str], tuple[Any, str, str]]:
    """Per (user, queue): what OFREP answers (the in-process provider is checked against it in
    test_the_provider_and_ofrep_agree_for_every_segment)."""
    headers = {"Authorization": f"Bearer {evaluate_token}"}
    # The alert tick commits outside the app: refresh its feed as the periodic poll would.
    traffic.client.app.state.feed.refresh()  # type: ignore[attr-defined]
    answers = {}
    for user in USERS:
        for queue in ("support", "sales"):
            context = {"targetingKey": user, "agent_id": user, "queue": queue}
            response = traffic.client.post(
                f"/ofrep/v1/evaluate/flags/{FLAG}", headers=headers, json={"context": context}
            )
            assert response.status_code == 200, response.text
            body = response.json()
            answers[(user, queue)] = (body["value"], body["variant"], body["reason"])
    return answers


@pytest.fixture
def evaluate_token(make_token: Any) -> str:
    from controlplane.api.roles import Role

    token: str = make_token(Role.EVALUATE, environment="production")
    return token


def test_two_queues_roll_out_independently_and_one_is_rolled_back_by_its_own_guard(
    traffic: GuardedTraffic, evaluate_token: str
) -> None:
    traffic.apply(DEFINITION)
    overview = status(traffic)
    assert overview["gates"] == "per_segment"
    assert {value: s["state"] for value, s in segments(traffic).items()} == {"support": "pending", "sales": "pending"}

    operate(traffic, "start", "queue=support")
    operate(traffic, "start", "queue=sales")
    # No events yet: the guard lacks data, so the first advance is forced (audited with what it overrode).
    at_50 = operate(traffic, "advance", "queue=support", reason="support queue checked by hand", force=True)
    assert (at_50["segment"], at_50["percentage"], at_50["state"]) == ("queue=support", 50.0, "running")
    shown = segments(traffic)
    assert (shown["support"]["percentage"], shown["sales"]["percentage"]) == (50.0, 10.0)
    assert (shown["support"]["serving_percentage"], shown["sales"]["serving_percentage"]) == (50.0, 10.0)

    before = served(traffic, evaluate_token)
    # The same user, the same answer within a segment; and a user inside 10% of sales is inside 50% of support.
    assert served(traffic, evaluate_token) == before
    for user in USERS:
        if before[(user, "sales")][0] is True:
            assert before[(user, "support")][0] is True
    assert any(before[(user, "support")][0] and not before[(user, "sales")][0] for user in USERS)

    # The sales queue fails a third of its requests, support none: only sales's guard breaches, and only sales is
    # rolled back; the environment's kill switch stays on for support.
    for _ in range(3):
        now = traffic.clock()
        traffic.send(requests(10, "5xx", "sales", now) + requests(20, "2xx", "sales", now))
        traffic.send(requests(60, "2xx", "support", now))
        traffic.evaluate()
        traffic.clock.advance(timedelta(seconds=10))
    shown = segments(traffic)
    assert shown["sales"]["state"] == "rolled_back"
    assert shown["sales"]["serving_percentage"] == 0.0
    assert shown["support"]["state"] == "running"
    assert shown["support"]["gates"] == "clear", shown["support"]["gates_detail"]
    after = served(traffic, evaluate_token)
    assert all(after[(user, "sales")][0] is False for user in USERS)
    assert all(after[(user, "support")] == before[(user, "support")] for user in USERS)

    # Support goes on by its own clear gates.
    at_100 = operate(traffic, "advance", "queue=support", reason="support clean at 50%")
    assert at_100["percentage"] == 100.0
    assert all(
        value is True for (user, queue), (value, _, _) in served(traffic, evaluate_token).items() if queue == "support"
    )

    # Every operation is audited with its segment; the rollback by the guard scoped to sales.
    audit = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "environment": "production"}
    )
    assert audit.status_code == 200, audit.text
    records = [r for r in audit.json() if r["action"].startswith("rollout.")]
    by_action = {(r["action"], r["after"]["segment"]) for r in records}
    assert ("rollout.rollback", "queue=sales") in by_action
    assert ("rollout.start", "queue=support") in by_action
    rollback = next(r for r in records if r["action"] == "rollout.rollback")
    assert "error-rate-queue-sales" in rollback["reason"]


def test_segment_is_required_for_a_plan_run_per_segment_and_refused_for_one_run_once(traffic: GuardedTraffic) -> None:
    traffic.apply(DEFINITION)
    revision = status(traffic)["revision"]
    missing = traffic.client.post(f"{ROLLOUT}/start", headers=traffic.operator, json={"expected_revision": revision})
    problem(missing, 422, "segment-required")
    unknown = traffic.client.post(
        f"{ROLLOUT}/start", headers=traffic.operator, json={"expected_revision": revision, "segment": "queue=billing"}
    )
    assert "queue=support, queue=sales" in problem(unknown, 422, "unknown-segment")["detail"]
    malformed = traffic.client.post(
        f"{ROLLOUT}/start", headers=traffic.operator, json={"expected_revision": revision, "segment": "support"}
    )
    problem(malformed, 422, "invalid-segment")
    banner = "/api/v1/flags/checkout-banner/environments/production/rollout"
    shown = traffic.client.get(banner, headers=traffic.viewer).json()
    refused = traffic.client.post(
        f"{banner}/start",
        headers=traffic.operator,
        json={"expected_revision": shown["revision"], "segment": "queue=support"},
    )
    problem(refused, 422, "segment-not-applicable")
    operate(traffic, "start", "queue=sales")
    revision = status(traffic)["revision"]
    # Uploads carry no segment: a purge with one segment's rollback would delete every segment's.
    purge = traffic.client.post(
        f"{ROLLOUT}/rollback",
        headers=traffic.operator,
        json={"segment": "queue=sales", "reason": "bad", "purge_uploads_since": "2026-11-01T11:00:00+00:00"},
    )
    problem(purge, 422, "purge-not-per-segment")
    # Nothing changed.
    assert status(traffic)["revision"] == revision
    assert {value: s["state"] for value, s in segments(traffic).items()} == {"support": "pending", "sales": "running"}


def alertmanager_alert(labels: dict[str, str]) -> dict[str, Any]:
    """A webhook notification (version 4) of one firing alert of ``labels`` about the flag in production."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "ErrorRate", "flag": FLAG, "environment": "production", **labels},
        "annotations": {"summary": "error rate above 20%"},
        "startsAt": "2026-12-04T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "5e2c7a91d4b3aaaa",
    }
    return {
        "receiver": "rollback-webhook",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": {"alertname": "ErrorRate"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="ErrorRate"}',
        "truncatedAlerts": 0,
    }


def test_an_alertmanager_alert_of_a_scoped_guard_rolls_back_its_segment_alone(traffic: GuardedTraffic) -> None:
    traffic.apply(DEFINITION)
    operate(traffic, "start", "queue=support")
    operate(traffic, "start", "queue=sales")
    hook = "/api/v1/alertmanager/webhook"

    # The environment's own rule measures every queue at once: it names no segment, so nothing is rolled back.
    unscoped = traffic.client.post(hook, headers=traffic.operator, json=alertmanager_alert({"rule": "error-rate"}))
    assert unscoped.status_code == 200, unscoped.text
    (outcome,) = unscoped.json()
    assert outcome["action"] == "refused"
    assert "runs per `queue` and the alert names no segment" in outcome["detail"]
    assert {value: s["state"] for value, s in segments(traffic).items()} == {"support": "running", "sales": "running"}

    # The guard scoped to sales (as rendered: rule and guard labels) rolls back sales, by the stored rule's segment.
    scoped = alertmanager_alert({"rule": "error-rate-queue-sales", "guard": "true"})
    response = traffic.client.post(hook, headers=traffic.operator, json=scoped)
    assert response.status_code == 200, response.text
    (outcome,) = response.json()
    assert (outcome["action"], outcome["segment"]) == ("rolled_back", "queue=sales"), outcome
    shown = segments(traffic)
    assert (shown["sales"]["state"], shown["sales"]["serving_percentage"]) == ("rolled_back", 0.0)
    assert (shown["support"]["state"], shown["support"]["serving_percentage"]) == ("running", 10.0)
    assert status(traffic)["enabled"] is True  # the kill switch stays on for support

    # Alertmanager re-sends the group: nothing more happens.
    again = traffic.client.post(hook, headers=traffic.operator, json=scoped)
    assert [(item["action"], item["segment"]) for item in again.json()] == [("already_rolled_back", "queue=sales")]

    # A hand-written alert grouped by queue names its segment by the label.
    labelled = traffic.client.post(hook, headers=traffic.operator, json=alertmanager_alert({"queue": "support"}))
    assert [(item["action"], item["segment"]) for item in labelled.json()] == [("rolled_back", "queue=support")]
    assert segments(traffic)["support"]["state"] == "rolled_back"

    audit = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    assert sorted(record["after"]["segment"] for record in audit) == ["queue=sales", "queue=support"]
    assert all("Alertmanager alert ErrorRate" in record["reason"] for record in audit)


#: The definition with a third queue, billing, so the agreement test has a segment at each of 50%, 10% and rolled back.
THREE_QUEUES = DEFINITION.replace("values: [support, sales]}", "values: [support, sales, billing]}").replace(
    "values: [support, sales, other]", "values: [support, sales, billing, other]"
)
AGENTS = [f"agent-{n}" for n in range(300)]


@pytest.mark.parametrize(
    "queue",
    [
        pytest.param("support", id="support-at-50"),
        pytest.param("sales", id="sales-at-10"),
        pytest.param("billing", id="billing-rolled-back"),
        pytest.param("other", id="undeclared-queue"),
        pytest.param(None, id="no-queue"),
    ],
)
def test_the_provider_and_ofrep_agree_for_every_segment(
    traffic: GuardedTraffic,
    settings: Settings,
    engine: Engine,
    clock: FakeClock,
    evaluate_token: str,
    queue: str | None,
) -> None:
    traffic.apply(THREE_QUEUES)
    for segment in ("queue=support", "queue=sales", "queue=billing"):
        operate(traffic, "start", segment)
    operate(traffic, "advance", "queue=support", reason="support checked by hand", force=True)
    operate(traffic, "rollback", "queue=billing", reason="billing agents asked to wait")
    shown = segments(traffic)
    assert {value: (s["state"], s["serving_percentage"]) for value, s in shown.items()} == {
        "support": ("running", 50.0),
        "sales": ("running", 10.0),
        "billing": ("rolled_back", 0.0),
    }
    headers = {"Authorization": f"Bearer {evaluate_token}"}
    # The provider syncs from a second app on the same database (a replica): the `traffic` app runs in its client.
    with serve_in_thread(create_app(settings, engine=engine, clock=clock)) as url:
        domain = f"segments-{queue}"
        api.set_provider_and_wait(ControlPlaneProvider(url, evaluate_token, environ={}), domain)
        try:
            flags = api.get_client(domain)
            provided, answered = [], []
            for agent in AGENTS:
                attributes = {"agent_id": agent} | ({"queue": queue} if queue else {})
                details = flags.get_boolean_details(FLAG, False, EvaluationContext(agent, attributes))
                provided.append((details.value, details.variant, str(details.reason)))
                response = traffic.client.post(
                    f"/ofrep/v1/evaluate/flags/{FLAG}",
                    headers=headers,
                    json={"context": {"targetingKey": agent, **attributes}},
                )
                assert response.status_code == 200, response.text
                body = response.json()
                answered.append((body["value"], body["variant"], body["reason"]))
        finally:
            api.clear_providers()
    assert provided == answered
    on = sum(1 for value, _, _ in answered if value)
    if queue == "support":
        assert {reason for _, _, reason in answered} == {"SPLIT"}
        assert 0.35 * len(AGENTS) < on < 0.65 * len(AGENTS)
    elif queue == "sales":
        assert {reason for _, _, reason in answered} == {"SPLIT"}
        assert 0 < on < 0.2 * len(AGENTS)
    else:
        # Rolled back (0%), an undeclared queue or none: the off variant for everyone, never the split.
        assert on == 0
        assert {variant for _, variant, _ in answered} == {"off"}


#: Staging run per queue, then production run once: production's start waits for every queue of staging.
STAGING_PER_QUEUE = DEFINITION.replace(
    """
        - environment: production
          per: {attribute: queue, values: [support, sales]}
          stages:
            - {percentage: 10, guards: [error-rate]}
            - {percentage: 50, guards: [error-rate]}
            - {percentage: 100, guards: [error-rate]}
""",
    """
        - environment: staging
          per: {attribute: queue, values: [support, sales]}
          stages: [{percentage: 100}]
        - environment: production
          stages: [{percentage: 10}, {percentage: 100}]
""",
)


def test_the_next_environment_is_promoted_only_once_every_segment_of_the_previous_one_completed(
    traffic: GuardedTraffic,
) -> None:
    assert STAGING_PER_QUEUE != DEFINITION
    traffic.apply(STAGING_PER_QUEUE)

    def start_production() -> tuple[dict[str, Any], dict[str, Any]]:
        shown = status(traffic, environment="production")
        response = traffic.client.post(
            f"{rollout('production')}/start", headers=traffic.operator, json={"expected_revision": shown["revision"]}
        )
        return shown, response.json() if response.status_code == 409 else {"status": response.status_code}

    def refused_while(state: str) -> None:
        shown, body = start_production()
        assert body.get("type", "").endswith("/promotion-order"), body
        assert (body["previous_environment"], body["previous_state"]) == ("staging", state)
        assert status(traffic, environment="staging")["state"] == state
        assert shown["previous_environment_state"] == state
        assert status(traffic, environment="production") == shown  # nothing changed

    # Support completed, sales never started: staging is not completed.
    operate(traffic, "start", "queue=support", "staging")
    operate(traffic, "advance", "queue=support", "staging", reason="support done")
    refused_while("pending")
    # Sales running, then rolled back: still not completed.
    operate(traffic, "start", "queue=sales", "staging")
    refused_while("running")
    operate(traffic, "rollback", "queue=sales", "staging", reason="sales agents saw errors")
    refused_while("rolled_back")
    # Sales run again to completion: every segment completed, production may start.
    operate(traffic, "start", "queue=sales", "staging", reason="fixed, again")
    operate(traffic, "advance", "queue=sales", "staging", reason="sales done")
    assert status(traffic, environment="staging")["state"] == "completed"
    started = operate(traffic, "start", None, "production")
    assert (started["state"], started["percentage"], started["previous_environment_state"]) == (
        "running",
        10.0,
        "completed",
    )


def test_metrics_show_each_segment_its_own_stage_percentage_and_state(traffic: GuardedTraffic) -> None:
    from tests.integration.test_metrics_endpoint import Scrape

    traffic.apply(DEFINITION)
    operate(traffic, "start", "queue=support")
    operate(traffic, "advance", "queue=support", reason="support checked by hand", force=True)
    operate(traffic, "start", "queue=sales")
    operate(traffic, "rollback", "queue=sales", reason="sales agents asked to wait")
    response = traffic.client.get("/metrics")
    assert response.status_code == 200, response.text
    metrics = Scrape.of_text(response.text)

    def of(name: str, segment: str, **labels: str) -> float:
        return metrics.value(name, flag=FLAG, environment="production", segment=segment, **labels)

    assert (
        of("controlplane_rollout_percentage", "queue=support"),
        of("controlplane_rollout_stage", "queue=support"),
    ) == (
        50.0,
        2.0,
    )
    assert of("controlplane_rollout_state", "queue=support", state="running") == 1.0
    assert (of("controlplane_rollout_percentage", "queue=sales"), of("controlplane_rollout_stage", "queue=sales")) == (
        0.0,
        0.0,
    )
    assert of("controlplane_rollout_state", "queue=sales", state="rolled_back") == 1.0
    # No series for the environment as a whole: it serves no one percentage of its own.
    assert metrics.all("controlplane_rollout_percentage", flag=FLAG, environment="production", segment="") == []
    # A plan run once keeps one series per environment, its segment label empty.
    banner = metrics.value("controlplane_rollout_percentage", flag="checkout-banner", environment="production")
    assert banner == 0.0
    assert metrics.all("controlplane_rollout_state", flag="checkout-banner", segment="")


def test_the_operators_page_lists_the_segments_and_acts_on_the_one_its_form_names(traffic: GuardedTraffic) -> None:
    traffic.apply(DEFINITION)
    page = f"/ui/flags/{FLAG}/environments/production"
    html = {"Accept": "text/html"}
    operate(traffic, "start", "queue=support")

    shown = traffic.client.get(page, headers=traffic.operator | html)
    assert shown.status_code == 200, shown.text
    assert 'data-testid="segments"' in shown.text
    assert 'data-testid="segment-support"' in shown.text and 'data-testid="segment-sales"' in shown.text
    assert '<option value="queue=sales">queue=sales</option>' in shown.text

    revision = str(status(traffic)["revision"])
    acted = traffic.client.post(
        f"{page}/rollout",
        data={"operation": "start", "segment": "queue=sales", "expected_revision": revision},
        headers=traffic.operator,
        follow_redirects=False,
    )
    assert acted.status_code == 303, acted.text
    assert segments(traffic)["sales"]["state"] == "running"
    # The audit and history tables name each row's segment; an edit of the environment as a whole says "all".
    text = traffic.client.get(page, headers=traffic.operator | html).text
    audit = text[text.index('data-testid="audit"') : text.index('data-testid="notifications"')]
    assert "<th>Segment</th>" in audit
    assert "<td>rollout.start</td><td>queue=sales</td>" in audit
    assert "<td>rollout.start</td><td>queue=support</td>" in audit
    history = text[text.index('data-testid="history"') :]
    assert history.count("<td>queue=sales</td>") == 1 and history.count("<td>queue=support</td>") == 1

    # Without a segment the form is refused as the API refuses it, and nothing changes.
    before = status(traffic)
    refused = traffic.client.post(
        f"{page}/rollout",
        data={"operation": "pause", "reason": "look", "expected_revision": str(before["revision"])},
        headers=traffic.operator | {"Accept": "application/json"},
    )
    problem(refused, 422, "segment-required")
    assert status(traffic) == before


STREAK_PER_QUEUE = DEFINITION.replace("guards: [error-rate]}", "guards: [error-rate, failed-streak]}").replace(
    "\nrules:\n",
    "\nrules:\n"
    "  - name: failed-streak\n"
    "    kind: streak\n"
    "    event: http_request\n"
    "    outcome: failed\n"
    '    op: ">="\n'
    "    threshold: 3\n"
    "    window: 0\n"
    "    severity: page\n",
)
assert STREAK_PER_QUEUE.count("failed-streak") == 4


def test_a_streak_guard_scoped_to_a_quiet_segment_sees_its_streak_past_a_busy_segments_events(
    traffic: GuardedTraffic,
) -> None:
    """The tail of every event keeps the newest 64: 100 support requests after three failed sales requests push
    those out of it, so sales's streak guard reads a tail of sales's events alone."""
    traffic.apply(STREAK_PER_QUEUE)
    operate(traffic, "start", "queue=support")
    operate(traffic, "start", "queue=sales")

    now = traffic.clock()
    traffic.send(requests(3, "5xx", "sales", now) + requests(100, "2xx", "support", now))
    traffic.evaluate()

    shown = segments(traffic)
    assert shown["sales"]["state"] == "rolled_back"
    assert shown["support"]["state"] == "running"
    alerts = {
        (alert["rule"], alert["environment"]): alert
        for alert in traffic.client.get("/api/v1/alerts", headers=traffic.viewer).json()
    }
    assert alerts[("failed-streak-queue-sales", "production")]["state"] == "firing"
    assert alerts[("failed-streak-queue-support", "production")]["state"] == "inactive"
    rollback = traffic.client.get(
        "/api/v1/audit", headers=traffic.admin, params={"flag": FLAG, "action": "rollout.rollback"}
    ).json()
    assert len(rollback) == 1 and "failed-streak-queue-sales" in rollback[0]["reason"]
