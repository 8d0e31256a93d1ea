"""The rollback loop through real Prometheus and Alertmanager, as a scenario shared by a test and a benchmark.

The control plane is served over HTTP with its own alert evaluation off, so the only way its flag can be rolled
back is the one under test: Prometheus scrapes `/metrics`, evaluates the rendered rules (`alerts/*.rules.yml`; the
pipeline's rendered from the definition applied, whose guard is plain: see ``plain_guard_definition``),
sends the firing guard alert to Alertmanager, which runs a configuration made from `alerts/alertmanager.example.yml`
(its receivers pointed at loopback: the control plane's webhook, and a scripted PagerDuty/Slack stand-in), and the
webhook rolls the flag back.

    with loop_stack(database_url) as stack:
        stack.start_rollout()
        elapsed = stack.break_uploads_until_rolled_back()
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from controlplane.definitions.loader import parse_definition
from controlplane.render.alerts import render_rules
from tests.prometheus_stack import (
    AlertmanagerProcess,
    PrometheusProcess,
    running_alertmanager,
    running_prometheus,
    scrape_job,
    wait_until,
)
from tests.receivers import ScriptedReceiver, scripted_receiver

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERTS = REPO_ROOT / "alerts"
FLAG = "enable-reference-images"
PIPELINE = "reference-images"
WEBHOOK_PATH = "/api/v1/alertmanager/webhook"
#: Events per batch, and how often the pipeline stand-in flushes one.
BATCH_EVENTS = 100
FLUSH_SECONDS = 0.5


def alertmanager_config(
    example: dict[str, Any], control_plane: str, operator_token: str, oncall: str
) -> dict[str, Any]:
    """The shipped example with its placeholders filled in for loopback, and timings short enough for a test.

    The routes, matchers and inhibition rules are the example's own: only where notifications go, and how soon,
    change.
    """
    config = copy.deepcopy(example)
    for receiver in config.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            if hook.get("url", "").endswith(WEBHOOK_PATH):
                hook["url"] = control_plane + WEBHOOK_PATH
                hook["http_config"] = {"authorization": {"type": "Bearer", "credentials": operator_token}}
        for pager in receiver.get("pagerduty_configs", []):
            pager["url"] = f"{oncall}/v2/enqueue"
        for slack in receiver.get("slack_configs", []):
            slack["api_url"] = f"{oncall}/slack"
    route = config["route"]
    route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"})
    for child in route.get("routes", []):
        for key in ("group_wait", "group_interval"):
            if key in child:
                child[key] = "1s"
    return config


def plain_guard_definition() -> str:
    """The shipped reference-images definition with its stage guard `upload-failure-rate` plain (no `confidence`).

    The shipped guard is sequential: the control plane's own test decides it, and the webhook answers Prometheus's
    plain alert of it `sequential_guard` without acting (a plain threshold would undo the test). What this loop
    measures is the path itself, which acts on a plain guard's alert: the same rule, compared plainly."""
    text = (REPO_ROOT / "definitions" / "reference-images.yaml").read_text()
    head, rule, tail = text.partition("  - name: upload-failure-rate\n")
    body, following, rest = tail.partition("  - name: ")
    assert rule and "    confidence: 0.99\n" in body, "the shipped upload-failure-rate is sequential"
    return head + rule + body.replace("    confidence: 0.99\n", "") + following + rest


def upload_requests(count: int, errors: int, variant: str = "on") -> list[dict[str, Any]]:
    """``count`` upload requests in production, ``errors`` of them answered 5xx, the rest 2xx."""
    now = datetime.now(UTC).isoformat()
    return [
        {
            "type": "http_request",
            "time": now,
            "environment": "production",
            "variant": variant,
            "labels": {"route": "upload_reference_image", "status_class": "5xx" if index < errors else "2xx"},
            "value": 0.2,
        }
        for index in range(count)
    ]


@dataclass
class LoopStack:
    """The served control plane, Prometheus, Alertmanager and the on-call stand-in, wired together."""

    base_url: str
    admin: dict[str, str]
    prometheus: PrometheusProcess
    alertmanager: AlertmanagerProcess
    oncall: ScriptedReceiver
    operator: dict[str, str] = field(default_factory=dict)
    ingest: dict[str, str] = field(default_factory=dict)

    def post(self, path: str, headers: dict[str, str], body: Any) -> Any:
        """POST JSON to the control plane, asserting a 200."""
        response = httpx.post(self.base_url + path, headers=headers, json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def rollout(self) -> dict[str, Any]:
        """The production rollout's status."""
        response = httpx.get(
            f"{self.base_url}/api/v1/flags/{FLAG}/environments/production/rollout", headers=self.operator, timeout=10
        )
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        return status

    def send(self, events: list[dict[str, Any]]) -> None:
        """One batch through the ingest API."""
        self.post(
            "/api/v1/events", self.ingest, {"batch_id": f"b-{uuid.uuid4().hex}", "pipeline": PIPELINE, "events": events}
        )

    def start_rollout(self) -> dict[str, Any]:
        """Start the production rollout (forced past the earlier environments) and send healthy traffic until
        Prometheus has scraped it, so the error series that appear later are increases over a known baseline."""
        status: dict[str, Any] = self.post(
            f"/api/v1/flags/{FLAG}/environments/production/rollout/start",
            self.operator,
            {
                "expected_revision": self.rollout()["revision"],
                "force": True,
                "reason": "canary straight to production for the Prometheus loop test",
            },
        )
        assert status["state"] == "running", status

        def scraped() -> bool:
            self.send(upload_requests(BATCH_EVENTS, 0))
            result = self.prometheus.query(f'sum(http_request_events_total{{pipeline="{PIPELINE}"}})')
            return bool(result) and float(result[0]["value"][1]) >= 3 * BATCH_EVENTS

        wait_until(scraped, timeout=30, interval=FLUSH_SECONDS, what="healthy traffic scraped by Prometheus")
        return status

    def break_uploads_until_rolled_back(self, *, error_share: float = 0.1, timeout: float = 90.0) -> float:
        """Send batches with ``error_share`` 5xx every flush until the rollout is rolled back; the seconds from
        the first bad event to the rollback being visible in the rollout's status."""
        errors = round(BATCH_EVENTS * error_share)
        first_bad = time.monotonic()
        deadline = first_bad + timeout
        next_flush = first_bad
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now >= next_flush:
                self.send(upload_requests(BATCH_EVENTS, errors))
                next_flush = now + FLUSH_SECONDS
            if self.rollout()["state"] == "rolled_back":
                return time.monotonic() - first_bad
            time.sleep(0.05)  # polling the live stack against the deadline above
        raise AssertionError(
            f"no rollback within {timeout:g}s; Prometheus alerts: {self.prometheus.alerts()}; "
            f"Alertmanager alerts: {self.alertmanager.alerts()}"
        )


@contextmanager
def loop_stack(base_url: str, admin: dict[str, str]) -> Iterator[LoopStack]:
    """Start Alertmanager and Prometheus around an already served control plane (``base_url``, admin headers),
    with the reference-images definition applied and operator and ingest tokens made."""

    def token(role: str, name: str) -> dict[str, str]:
        response = httpx.post(f"{base_url}/api/v1/tokens", headers=admin, json={"name": name, "role": role}, timeout=10)
        assert response.status_code in (200, 201), response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    text = plain_guard_definition()
    applied = httpx.post(
        f"{base_url}/api/v1/definitions/apply",
        headers=admin,
        json={"content": text, "source": "reference-images.yaml"},
        timeout=10,
    )
    assert applied.status_code == 200, applied.text
    operator = token("operator", f"alertmanager-{uuid.uuid4().hex[:6]}")
    ingest = token("ingest", f"pipeline-{uuid.uuid4().hex[:6]}")
    example = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())
    rule_files = {path.name: path.read_text() for path in sorted(ALERTS.glob("*.rules.yml"))}
    # The rules Prometheus evaluates are those of the definition applied: the shipped ones, with the guard plain.
    environments = ("dev", "qa", "staging", "production")
    definition = parse_definition(text, source="reference-images.yaml", environments=environments)
    rule_files[f"{PIPELINE}.rules.yml"] = render_rules(definition)
    with ExitStack() as stack:
        oncall = stack.enter_context(scripted_receiver())
        alertmanager = stack.enter_context(
            running_alertmanager(
                alertmanager_config(example, base_url, operator["Authorization"].split()[1], oncall.url)
            )
        )
        target = base_url.removeprefix("http://")
        prometheus = stack.enter_context(
            running_prometheus(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [scrape_job("controlplane", target)],
                    "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.address]}]}]},
                },
                rule_files=rule_files,
            )
        )
        prometheus.wait_for_targets()
        yield LoopStack(base_url, admin, prometheus, alertmanager, oncall, operator=operator, ingest=ingest)
