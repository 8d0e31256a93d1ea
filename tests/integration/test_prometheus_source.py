"""Guards measured by a real Prometheus: the Debian binary scrapes a metrics endpoint this test controls (1 s
scrape interval), and the control plane's evaluation job queries it. While the guard lacks data, advancing is
refused (409 guard-holding, with the reason); exactly at the threshold a `>` guard is clear; across it the guard
fires: the rollout without auto_rollback is held, the one with it is rolled back. Then Prometheus goes away and the
firing guard holds. Without Prometheus (not configured, unreachable, or silent) a guard lacks data, never passes.

Waiting for Prometheus to scrape is real time: the test polls against deadlines. The control plane's clock is
the FakeClock moved to the real present before each evaluation, as Prometheus answers about the present.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client import CollectorRegistry, Counter, start_http_server
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.prometheus import NOT_CONFIGURED, PrometheusSource, prometheus_source
from controlplane.api.roles import Role
from controlplane.guarding.jobs import evaluate_alert_rules
from controlplane.notifications.config import NotificationConfig
from controlplane.scheduler import Leadership, build_jobs
from controlplane.settings import Settings
from tests.conftest import FakeClock, missing_service
from tests.prometheus_stack import (
    ALERTMANAGER,
    PROMETHEUS,
    find_binary,
    running_alertmanager,
    running_prometheus,
    scrape_job,
    wait_until,
)

RULE = "checkout-error-ratio"
HELD, GUARDED = "held-flag", "guarded-flag"


def definition(auto_rollback_flag: str = GUARDED) -> str:
    """Two flags guarded by one Prometheus rule in production; only ``auto_rollback_flag`` rolls back by itself."""
    flags = []
    for flag in (HELD, GUARDED):
        flags.append(
            f"""
  - key: {flag}
    type: boolean
    variants: {{"on": true, "off": false}}
    off_variant: "off"
    rollout_variant: "on"
    plan:
      auto_rollback: {"true" if flag == auto_rollback_flag else "false"}
      environments:
        - environment: production
          stages:
            - {{percentage: 10, guards: [{RULE}]}}
            - {{percentage: 50, guards: [{RULE}]}}
            - {{percentage: 100}}"""
        )
    return f"""pipeline: checkout
flags:{"".join(flags)}
rules:
  - name: {RULE}
    description: Share of checkout requests that failed, as Prometheus counts them.
    source: prometheus
    query: >-
      sum(checkout_requests_total{{environment="{{environment}}", status="error"}})
      / sum(checkout_requests_total{{environment="{{environment}}"}})
    samples_query: sum(checkout_requests_total{{environment="{{environment}}"}})
    min_samples: 100
    op: ">"
    threshold: 0.03
    severity: page
    environments: [staging, production]
"""


class Plane:
    """The control plane under test: HTTP for operators, the evaluation job called with a Prometheus source."""

    def __init__(
        self, client: TestClient[Litestar], clock: FakeClock, engine: Engine, make_token: Callable[..., str]
    ) -> None:
        self.client = client
        self.clock = clock
        self.factory: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        self.admin = {"Authorization": f"Bearer {make_token(Role.ADMIN, name='admin')}"}
        self.operator = {"Authorization": f"Bearer {make_token(Role.OPERATOR, name='sre-alice')}"}

    def apply(self, text: str) -> None:
        response = self.client.post(
            "/api/v1/definitions/apply", headers=self.admin, json={"content": text, "source": "checkout.yaml"}
        )
        assert response.status_code == 200, response.text

    def evaluate(self, prometheus: PrometheusSource | None) -> float:
        """One evaluation tick at the real present; the seconds it took."""
        self.clock.now = max(self.clock.now, datetime.now(UTC))
        started = time.monotonic()
        evaluate_alert_rules(
            self.factory,
            environments=Settings().environments,
            clock=self.clock,
            notifications=NotificationConfig,
            window_size=Settings().telemetry_window,
            prometheus=prometheus,
        )
        return time.monotonic() - started

    def alert(self, environment: str = "production") -> dict[str, Any]:
        alerts = self.client.get("/api/v1/alerts", headers=self.operator).json()
        found: dict[str, Any] = next(a for a in alerts if (a["rule"], a["environment"]) == (RULE, environment))
        return found

    def rollout(self, flag: str) -> dict[str, Any]:
        response = self.client.get(f"/api/v1/flags/{flag}/environments/production/rollout", headers=self.operator)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def operate(self, flag: str, operation: str, reason: str) -> Any:
        return self.client.post(
            f"/api/v1/flags/{flag}/environments/production/rollout/{operation}",
            headers=self.operator,
            json={"expected_revision": self.rollout(flag)["revision"], "reason": reason},
        )


@pytest.fixture
def plane(client: TestClient[Litestar], clock: FakeClock, engine: Engine, make_token: Callable[..., str]) -> Plane:
    return Plane(client, clock, engine, make_token)


@contextmanager
def metrics_endpoint() -> Iterator[tuple[str, Counter]]:
    """A prometheus_client exposition server on a free loopback port, with the counter the test sets."""
    registry = CollectorRegistry()
    requests = Counter(
        "checkout_requests", "Checkout requests by outcome.", ["environment", "status"], registry=registry
    )
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_prometheus_guard_holds_while_it_lacks_data_clears_at_the_threshold_and_rolls_back_past_it(
    plane: Plane,
) -> None:
    if find_binary(PROMETHEUS) is None:
        missing_service("the prometheus binary (Debian package prometheus)")
    timings: dict[str, float] = {}
    with (
        metrics_endpoint() as (target, requests),
        running_prometheus(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [scrape_job("checkout", target)],
            }
        ) as prometheus,
    ):
        settings = Settings(prometheus_url=prometheus.url, prometheus_query_timeout_seconds=2.0)
        source = prometheus_source(settings.prometheus_url, settings.prometheus_query_timeout_seconds)
        assert source is not None
        started = time.monotonic()
        prometheus.wait_for_targets()
        timings["first scrape"] = time.monotonic() - started

        plane.apply(definition())
        for flag in (HELD, GUARDED):
            response = plane.operate(flag, "start", "canary in production")
            assert response.status_code == 200, response.text

        # Nothing counted yet: the guard lacks data, and says why.
        timings["evaluation"] = plane.evaluate(source)
        alert = plane.alert()
        assert alert["state"] == "insufficient_data"
        assert "0 samples, fewer than 100 needed" in alert["detail"]
        refused = plane.operate(HELD, "advance", "looks fine")
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"].endswith("/guard-holding")
        assert f"guard `{RULE}` lacks data" in refused.json()["detail"]
        assert "0 samples, fewer than 100 needed" in refused.json()["detail"]

        # Exactly 3% in production (3 of 100): a `> 0.03` guard is clear. Staging fails at 50%: its own query.
        requests.labels("production", "ok").inc(97)
        requests.labels("production", "error").inc(3)
        requests.labels("staging", "ok").inc(50)
        requests.labels("staging", "error").inc(50)
        counted = time.monotonic()

        def measured() -> bool:
            plane.evaluate(source)
            return bool(plane.alert()["state"] == "inactive" and plane.alert("staging")["state"] == "firing")

        wait_until(measured, timeout=20, interval=0.2, what="the counters scraped and measured")
        timings["counters to measured"] = time.monotonic() - counted
        assert plane.alert()["value"] == 0.03
        assert "query answered 0.03; 100 samples" in plane.alert()["detail"]
        assert plane.alert("staging")["value"] == 0.5
        for flag in (HELD, GUARDED):
            advanced = plane.operate(flag, "advance", "3% is within the guard")
            assert advanced.status_code == 200, advanced.text
            assert advanced.json()["percentage"] == 50

        # Past the threshold: 4 of 101. The guard fires; the held rollout stays, the guarded one rolls back.
        requests.labels("production", "error").inc()
        crossed = time.monotonic()

        def fired() -> bool:
            plane.evaluate(source)
            return bool(plane.alert()["state"] == "firing")

        wait_until(fired, timeout=20, interval=0.2, what="the guard firing")
        timings["crossing to rollback"] = time.monotonic() - crossed
        assert plane.alert()["value"] == pytest.approx(4 / 101)

        rolled_back = plane.rollout(GUARDED)
        assert (rolled_back["state"], rolled_back["serving_percentage"]) == ("rolled_back", 0)
        held = plane.rollout(HELD)
        assert (held["state"], held["percentage"]) == ("running", 50)
        refused = plane.operate(HELD, "advance", "push on")
        assert refused.status_code == 409, refused.text
        assert f"guard `{RULE}` is firing: value 0.039604" in refused.json()["detail"]

        audit = plane.client.get(
            "/api/v1/audit", headers=plane.admin, params={"flag": GUARDED, "action": "rollout.rollback"}
        ).json()
        assert [record["actor"] for record in audit] == ["controlplane"]
        assert RULE in audit[0]["reason"]
        assert "query answered 0.039603960396039604; 101 samples" in audit[0]["reason"]
        assert "> 0.03 with at least 100 samples" in audit[0]["reason"]
        assert not plane.client.get(
            "/api/v1/audit", headers=plane.admin, params={"flag": HELD, "action": "rollout.rollback"}
        ).json()

    # Prometheus is gone: the firing guard holds (missing data proves no recovery), and says why.
    plane.evaluate(source)
    alert = plane.alert()
    assert alert["state"] == "firing"
    assert "could not be reached" in alert["detail"]
    history = plane.client.get(
        "/api/v1/alerts/history", headers=plane.operator, params={"rule": RULE, "environment": "production"}
    ).json()
    assert [item["to_state"] for item in reversed(history)] == ["insufficient_data", "inactive", "firing"]
    print("timings (s):", {name: round(seconds, 2) for name, seconds in timings.items()})


def test_without_a_prometheus_url_a_prometheus_guard_lacks_data_and_holds(plane: Plane) -> None:
    plane.apply(definition())
    assert plane.operate(HELD, "start", "canary").status_code == 200
    assert prometheus_source(Settings().prometheus_url, 2.0) is None  # nothing configured by default

    plane.evaluate(None)
    alert = plane.alert()
    assert (alert["state"], alert["detail"]) == ("insufficient_data", NOT_CONFIGURED)
    refused = plane.operate(HELD, "advance", "looks fine")
    assert refused.status_code == 409, refused.text
    assert "set CONTROLPLANE_PROMETHEUS_URL" in refused.json()["detail"]


@contextmanager
def silent_server() -> Iterator[str]:
    """A loopback listener that accepts connections and never answers: a stalled Prometheus."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_an_unreachable_or_silent_prometheus_leaves_the_guard_without_data_within_the_budget(plane: Plane) -> None:
    plane.apply(definition())
    assert plane.operate(GUARDED, "start", "canary").status_code == 200

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        plane.evaluate(prometheus_source(refused_url, 2.0))
    alert = plane.alert()
    assert alert["state"] == "insufficient_data"
    assert f"Prometheus at {refused_url} could not be reached" in alert["detail"]

    with silent_server() as url:
        took = plane.evaluate(prometheus_source(url, 0.3))
    assert took < 2.0  # the queries' budget is 0.45 s; the rest is the database work of one tick
    alert = plane.alert()
    assert alert["state"] == "insufficient_data"
    assert f"Prometheus at {url} did not answer within 0.3s" in alert["detail"]
    assert plane.rollout(GUARDED)["state"] == "running"  # no data is never a rollback


def test_the_stack_harness_runs_prometheus_and_alertmanager_and_reaps_them(capsys: pytest.CaptureFixture[str]) -> None:
    """The harness the end-to-end tests build on: a rule file's alert reaches Alertmanager; logs print on failure."""
    for binary in (PROMETHEUS, ALERTMANAGER):
        if find_binary(binary) is None:
            missing_service(f"the {binary} binary")
    route = {"receiver": "nobody", "group_wait": "1s", "group_interval": "1s"}
    always = {"groups": [{"name": "harness", "rules": [{"alert": "HarnessAlways", "expr": "vector(1)"}]}]}
    started = time.monotonic()
    with (
        pytest.raises(RuntimeError, match="deliberate"),
        running_alertmanager({"route": route, "receivers": [{"name": "nobody"}]}) as alertmanager,
        running_prometheus(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.address]}]}]},
            },
            rule_files={"always.yml": always},
        ) as prometheus,
    ):
        assert [group["name"] for group in prometheus.rules()] == ["harness"]
        delivered = alertmanager.wait_until(
            lambda: [a for a in alertmanager.alerts() if a["labels"]["alertname"] == "HarnessAlways"] or None,
            timeout=20,
            what="the alert in Alertmanager",
        )
        assert delivered[0]["status"]["state"] == "active"
        reached = time.monotonic() - started
        raise RuntimeError("deliberate failure inside the block")
    printed = capsys.readouterr().out
    assert "----- prometheus log" in printed and "Server is ready to receive web requests" in printed
    assert "----- alertmanager log" in printed and "Listening" in printed
    assert prometheus.process.returncode is not None and alertmanager.process.returncode is not None
    assert not prometheus.directory.exists()  # its own temporary working directory, removed
    with capsys.disabled():
        print(f"harness: from start to the alert in Alertmanager {reached:.2f}s")


def test_the_scheduled_evaluation_queries_the_prometheus_the_settings_name(plane: Plane) -> None:
    plane.apply(definition())
    assert plane.operate(GUARDED, "start", "canary").status_code == 200
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        settings = Settings(prometheus_url=url, prometheus_query_timeout_seconds=0.5)
        plane.clock.now = max(plane.clock.now, datetime.now(UTC))
        leadership = Leadership(plane.factory, holder="test", ttl=timedelta(seconds=30), clock=plane.clock)
        jobs = {job.id: job for job in build_jobs(settings, plane.factory, leadership, plane.clock)}
        jobs["evaluate_alert_rules"].run()
    # Not "no Prometheus is configured": the job was handed the client for the configured URL.
    assert f"Prometheus at {url} could not be reached" in plane.alert()["detail"]
