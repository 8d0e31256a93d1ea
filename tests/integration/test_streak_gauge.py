"""`controlplane_event_streak` on /metrics: the trailing run of a streak rule's outcome, read from the stored event
tails at scrape time exactly as the rule measures it, the same on every replica, and clean for `promtool check
metrics`. Prometheus' streak alerts (alerts/*.rules.yml) read it."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from controlplane.api.roles import Role
from controlplane.app import create_app
from controlplane.exporter.metrics import STREAK_GAUGE
from controlplane.render.promql import STREAK_GAUGE as RENDERED_STREAK_GAUGE
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, FakeClock, bearer, missing_service

Client = TestClient[Litestar]
IMAGES = "reference-images"
RULE = "vision-error-streak"

# A streak rule with a window, a `where` and min_samples, measured in two environments only.
DEMO = textwrap.dedent(
    """\
    pipeline: streak-demo
    flags:
      - key: streak-demo-flag
        type: boolean
        variants: {"on": true, "off": false}
        off_variant: "off"
    events:
      - name: streak_job
        outcomes: [ok, failed]
        labels:
          queue: {values: [fast, slow]}
    rules:
      - name: slow-job-failures
        kind: streak
        event: streak_job
        where: {queue: [slow]}
        outcome: failed
        op: ">="
        threshold: 3
        window: 10m
        min_samples: 4
        environments: [qa, production]
    """
)


def apply(client: Client, headers: dict[str, str], content: str, source: str) -> None:
    response = client.post("/api/v1/definitions/apply", headers=headers, json={"content": content, "source": source})
    assert response.status_code == 200, response.text


def send(client: Client, token: str, pipeline: str, batch: str, events: list[dict[str, Any]]) -> None:
    response = client.post(
        "/api/v1/events", headers=bearer(token), json={"batch_id": batch, "pipeline": pipeline, "events": events}
    )
    assert response.status_code == 200, response.text


def vision(clock: FakeClock, environment: str, *outcomes: str) -> list[dict[str, Any]]:
    """Vision analyses in this order, a second apart, the last one now."""
    now = clock()
    return [
        {
            "type": "vision_analysis",
            "time": (now - timedelta(seconds=len(outcomes) - index)).isoformat(),
            "environment": environment,
            "variant": "on",
            "outcome": outcome,
            "value": 0.5,
        }
        for index, outcome in enumerate(outcomes)
    ]


def streaks(client: Client) -> dict[tuple[str, str], float]:
    """(rule, environment) -> value of every controlplane_event_streak sample of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.text):
        if family.name == STREAK_GAUGE:
            assert family.type == "gauge"
            for sample in family.samples:
                found[(sample.labels["rule"], sample.labels["environment"])] = sample.value
    return found


@pytest.fixture
def ingest(make_token: Callable[..., str]) -> str:
    return make_token(Role.INGEST)


def test_the_gauge_is_the_trailing_run_of_the_rules_outcome_in_each_environment(
    client: Client, admin_headers: dict[str, str], ingest: str, clock: FakeClock
) -> None:
    apply(client, admin_headers, (REPO_ROOT / "definitions" / f"{IMAGES}.yaml").read_text(), IMAGES)

    # Declared and measured everywhere: with no events yet, a run of 0 (the rule has no min_samples).
    assert streaks(client) == {(RULE, environment): 0 for environment in Settings().environments}

    send(client, ingest, IMAGES, "streak-batch-01", vision(clock, "qa", "error", "ok", "error", "error", "error"))
    send(client, ingest, IMAGES, "streak-batch-02", vision(clock, "staging", "error", "error", "ok"))
    found = streaks(client)

    assert found[(RULE, "qa")] == 3
    assert found[(RULE, "staging")] == 0
    assert found[(RULE, "production")] == 0

    clock.advance(timedelta(seconds=5))
    send(client, ingest, IMAGES, "streak-batch-03", vision(clock, "qa", "error"))
    assert streaks(client)[(RULE, "qa")] == 4
    send(client, ingest, IMAGES, "streak-batch-04", vision(clock, "qa", "ok"))
    assert streaks(client)[(RULE, "qa")] == 0


def test_the_gauge_follows_the_rules_where_window_min_samples_and_environments(
    client: Client, admin_headers: dict[str, str], ingest: str, clock: FakeClock
) -> None:
    apply(client, admin_headers, DEMO, "streak-demo.yaml")

    def job(queue: str, outcome: str, seconds_ago: float) -> dict[str, Any]:
        at = clock() - timedelta(seconds=seconds_ago)
        return {"type": "streak_job", "time": at.isoformat(), "environment": "qa", "variant": "on",
                "outcome": outcome, "labels": {"queue": queue}}  # fmt: skip

    # Three slow failures: a run of 3, but fewer than min_samples (4) slow jobs: no series at all.
    send(client, ingest, "streak-demo", "demo-batch-0001", [job("slow", "failed", s) for s in (30, 20, 10)])
    assert ("slow-job-failures", "qa") not in streaks(client)

    # A failing fast job is outside `where`: it neither counts nor breaks the run.
    send(client, ingest, "streak-demo", "demo-batch-0002", [job("fast", "failed", 5), job("slow", "failed", 1)])
    found = streaks(client)
    assert found[("slow-job-failures", "qa")] == 4
    # Measured in qa and production only; production has no events, so too few: absent as well.
    assert {environment for rule, environment in found if rule == "slow-job-failures"} == {"qa"}

    # Ten minutes on, the window holds none of those events.
    clock.advance(timedelta(minutes=10, seconds=1))
    assert ("slow-job-failures", "qa") not in streaks(client)


def test_every_replica_exports_the_same_streak(
    client: Client,
    admin_headers: dict[str, str],
    ingest: str,
    clock: FakeClock,
    settings: Settings,
    engine: Engine,
) -> None:
    apply(client, admin_headers, (REPO_ROOT / "definitions" / f"{IMAGES}.yaml").read_text(), IMAGES)
    send(client, ingest, IMAGES, "replica-batch-1", vision(clock, "production", "ok", "error", "error"))
    replica_settings = Settings(database_url=settings.database_url, scheduler_enabled=False, replica_id="second")
    other = create_app(replica_settings, engine=engine, clock=clock)

    with TestClient(other) as replica:
        assert streaks(replica) == streaks(client)
        assert streaks(replica)[(RULE, "production")] == 2


def test_the_rendered_rules_read_the_gauge_the_control_plane_exports() -> None:
    assert RENDERED_STREAK_GAUGE == STREAK_GAUGE


def test_promtool_check_metrics_accepts_the_gauge(
    client: Client, admin_headers: dict[str, str], ingest: str, clock: FakeClock
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_service("promtool (Debian package `prometheus`)")
    assert promtool is not None
    apply(client, admin_headers, (REPO_ROOT / "definitions" / f"{IMAGES}.yaml").read_text(), IMAGES)
    send(client, ingest, IMAGES, "promtool-batch-1", vision(clock, "qa", "error", "error"))
    exposition = client.get("/metrics").text
    assert f"# TYPE {STREAK_GAUGE} gauge" in exposition

    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60, check=False
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert STREAK_GAUGE not in checked.stdout + checked.stderr
