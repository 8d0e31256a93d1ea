"""`GET /metrics` after real traffic: event metrics named from the definitions count exactly what was ingested,
control-plane gauges and counters follow rollouts, alerts and evaluations, and `promtool check metrics` is silent.

The exposition is read with prometheus_client's own parsers, not regexes.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.guarding.jobs import evaluate_alert_rules
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, FakeClock, bearer, missing_service, without_gates

API = "/api/v1"
FLAG = "enable-reference-images"
IMAGES = "reference-images"
ASSISTANT = "ai-assistant"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
#: What Prometheus 2.42 sends when it scrapes: OpenMetrics first, the text format as a fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMTOOL_TIMEOUT_SECONDS = 60

Client = TestClient[Litestar]
#: The strict OpenMetrics parser (prometheus_client leaves it unannotated).
openmetrics_families: Callable[[str], Iterator[Metric]] = openmetrics_parser.text_string_to_metric_families


# --- reading an exposition ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """The samples of one exposition, looked up by sample name and labels."""

    samples: list[Sample]

    @classmethod
    def of_text(cls, text: str) -> Scrape:
        return cls([sample for family in text_string_to_metric_families(text) for sample in family.samples])

    def all(self, name: str, **labels: str) -> list[Sample]:
        """Samples called ``name`` whose labels include ``labels``."""
        return [
            sample
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample called ``name`` with (at least) these labels."""
        found = self.all(name, **labels)
        assert len(found) == 1, f"{len(found)} samples of {name} with {labels}: {found}"
        return found[0].value

    def total(self, name: str, **labels: str) -> float:
        return sum(sample.value for sample in self.all(name, **labels))

    def names(self) -> set[str]:
        return {sample.name for sample in self.samples}


def scrape(client: Client, accept: str | None = None) -> httpx.Response:
    """GET /metrics without a token (it is public), with an optional Accept header."""
    response = client.get("/metrics", headers={"Accept": accept} if accept else {})
    assert response.status_code == 200, response.text
    return response


# --- the scene: definitions applied, events ingested, a rollout operated, alerts evaluated, a flag evaluated --------


def request_event(
    at: datetime, environment: str, variant: str, route: str, status: str, seconds: float
) -> dict[str, Any]:
    return {
        "type": "http_request",
        "time": at.isoformat(),
        "environment": environment,
        "variant": variant,
        "labels": {"route": route, "status_class": status},
        "value": seconds,
    }


def ai_run(at: datetime, outcome: str, mode: str, queue: str, seconds: float, tokens: float) -> dict[str, Any]:
    return {
        "type": "ai_run",
        "time": at.isoformat(),
        "environment": "qa",
        "variant": "on",
        "outcome": outcome,
        "labels": {"mode": mode, "queue": queue},
        "value": seconds,
        "totals": {"tokens": tokens},
    }


@dataclass
class Scene:
    client: Client
    operator: dict[str, str]
    images_batch: dict[str, Any]
    assistant_batch: dict[str, Any]


def apply(client: Client, headers: dict[str, str], name: str) -> None:
    """Apply a shipped definition, gates removed (rollout mechanics alone; guards have their own tests)."""
    content = without_gates((REPO_ROOT / "definitions" / f"{name}.yaml").read_text())
    response = client.post(f"{API}/definitions/apply", headers=headers, json={"content": content, "source": name})
    assert response.status_code == 200, response.text


def operate(client: Client, headers: dict[str, str], environment: str, operation: str, **body: Any) -> None:
    path = f"{API}/flags/{FLAG}/environments/{environment}/rollout"
    revision = client.get(path, headers=headers).json()["revision"]
    response = client.post(f"{path}/{operation}", headers=headers, json={"expected_revision": revision, **body})
    assert response.status_code == 200, response.text


@pytest.fixture
def scene(
    client: Client,
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
    clock: FakeClock,
    engine: Engine,
    settings: Settings,
    app: Litestar,
) -> Scene:
    apply(client, admin_headers, IMAGES)
    apply(client, admin_headers, ASSISTANT)
    ingest = bearer(make_token(Role.INGEST))
    now = clock()
    images = {
        "batch_id": "batch-images-0001",
        "pipeline": IMAGES,
        "events": [
            request_event(now, "qa", "on", "upload_reference_image", "2xx", 0.2),
            request_event(now - timedelta(seconds=30), "qa", "on", "upload_reference_image", "2xx", 0.3),
            request_event(now, "qa", "on", "upload_reference_image", "2xx", 7.0),
            request_event(now, "qa", "off", "upload_reference_image", "5xx", 0.01),
            request_event(now, "production", "on", "a_route_not_declared", "2xx", 0.1),
            request_event(now, "production", "on", "other", "2xx", 60.5),
            {"type": "vision_analysis", "time": now.isoformat(), "environment": "qa", "variant": "on",
             "outcome": "error", "value": 0.75},
            {"type": "reference_image_upload", "time": now.isoformat(), "environment": "qa", "variant": "on",
             "outcome": "rejected", "labels": {"content_type": "image/gif", "rejection_reason": "too_large"},
             "value": 12_000_000},
            {"type": "preflight_reference_images", "time": now.isoformat(), "environment": "qa", "variant": "off",
             "outcome": "ignored"},
            {"type": "image_assets_generation", "time": now.isoformat(), "environment": "qa", "variant": "on",
             "outcome": "pass", "labels": {"reference_images_present": "true"}, "value": 12.0},
        ],
    }  # fmt: skip
    assistant = {
        "batch_id": "batch-assistant-0001",
        "pipeline": ASSISTANT,
        "events": [
            ai_run(now, "ok", "HUMANO", "support", 3.0, 120),
            ai_run(now, "ok", "HUMANO", "support", 1.0, 30),
            ai_run(now, "error", "COPILOTO", "vip", 25.0, 5),
            request_event(now, "qa", "on", "reply", "2xx", 0.4),
        ],
    }
    for batch in (images, images, assistant):  # the second send of `images` is a retry: counted once
        response = client.post(f"{API}/events", headers=ingest, json=batch)
        assert response.status_code == 200, response.text
    refused = {"batch_id": "batch-refused-01", "pipeline": IMAGES, "events": [images["events"][0], {"type": "nope"}]}
    assert client.post(f"{API}/events", headers=ingest, json=refused).status_code == 422

    operator = bearer(make_token(Role.OPERATOR))
    operate(client, operator, "qa", "start")
    operate(client, operator, "qa", "advance", reason="qa looks healthy")
    operate(client, operator, "staging", "start")
    operate(client, operator, "staging", "pause", reason="waiting for the image team")

    evaluate_alert_rules(
        sessionmaker(engine, expire_on_commit=False),
        environments=settings.environments,
        clock=clock,
        notifications=app.state.notification_config,
        metrics=app.state.metrics,
        window_size=settings.telemetry_window,
    )
    evaluator = bearer(make_token(Role.EVALUATE, environment="qa"))
    for user in ("user-1", "user-2"):
        response = client.post(
            f"/ofrep/v1/evaluate/flags/{FLAG}", headers=evaluator, json={"context": {"targetingKey": user}}
        )
        assert response.status_code == 200, response.text
    return Scene(client, operator, images, assistant)


# --- format and access --------------------------------------------------------------------------------------------


def test_metrics_answers_without_a_token_in_the_prometheus_text_format_by_default(client: Client) -> None:
    response = scrape(client)

    # One charset parameter: a repeated one makes the media type invalid (RFC 9110 section 5.6.6).
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# EOF" not in response.text
    families = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    assert families["controlplane_http_requests"] == "counter"
    assert families["controlplane_rollout_stage"] == "gauge"
    assert families["controlplane_http_request_duration_seconds"] == "histogram"


@pytest.mark.parametrize("accept", [OPENMETRICS, PROMETHEUS_ACCEPT], ids=["openmetrics", "prometheus-2.42"])
def test_metrics_answers_openmetrics_when_the_scraper_asks_for_it(scene: Scene, accept: str) -> None:
    response = scrape(scene.client, accept)

    assert response.headers["content-type"].startswith(OPENMETRICS)
    assert response.text.endswith("# EOF\n")
    # The strict OpenMetrics parser reads all of it; counters are families without `_total`.
    families = {family.name: family for family in openmetrics_families(response.text)}
    assert families["http_request_events"].type == "counter"
    assert families["http_request_duration_seconds"].type == "histogram"
    assert families["controlplane_rollout_stage"].type == "gauge"
    counted = sum(
        sample.value for sample in families["http_request_events"].samples if sample.name == "http_request_events_total"
    )
    assert counted == 7


def test_metrics_is_public_even_with_a_bad_token(client: Client) -> None:
    response = client.get("/metrics", headers=bearer("cp_not-a-real-token"))

    assert response.status_code == 200


# --- event metrics ------------------------------------------------------------------------------------------------


def test_event_counters_count_exactly_the_events_ingested_once(scene: Scene) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)

    upload_ok = {"pipeline": IMAGES, "environment": "qa", "variant": "on", "route": "upload_reference_image"}
    assert metrics.value("http_request_events_total", **upload_ok, status_class="2xx") == 3
    assert metrics.value("http_request_events_total", **upload_ok | {"variant": "off"}, status_class="5xx") == 1
    # An undeclared route is counted under the label's `otherwise` value, with the events sent as `other`.
    assert metrics.value("http_request_events_total", pipeline=IMAGES, environment="production", route="other") == 2
    assert metrics.value("http_request_events_total", pipeline=ASSISTANT, route="reply") == 1
    # The retried batch and the refused one added nothing.
    assert metrics.total("http_request_events_total") == 7
    assert metrics.value("vision_analysis_events_total", outcome="error", environment="qa") == 1
    assert metrics.value("preflight_reference_images_events_total", outcome="ignored", variant="off") == 1
    assert (
        metrics.value(
            "reference_image_upload_events_total",
            outcome="rejected",
            content_type="other",
            rejection_reason="too_large",
        )
        == 1
    )
    assert metrics.value("image_assets_generation_events_total", reference_images_present="true") == 1
    assert metrics.total("ai_run_events_total") == 3
    assert metrics.value("ai_run_events_total", outcome="error", mode="COPILOTO", queue="other") == 1


def test_event_histograms_have_cumulative_buckets_a_sum_and_a_count(scene: Scene) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)
    series = {"pipeline": IMAGES, "environment": "qa", "variant": "on", "route": "upload_reference_image"}

    buckets = {
        sample.labels["le"]: sample.value for sample in metrics.all("http_request_duration_seconds_bucket", **series)
    }

    # 0.2, 0.3 and 7.0 seconds, counted cumulatively: 7.0 first fits under le="10.0".
    assert buckets["0.1"] == 0
    assert buckets["0.25"] == 1
    assert buckets["0.5"] == 2
    assert buckets["6.0"] == 2
    assert buckets["10.0"] == 3
    assert buckets["+Inf"] == 3
    ordered = [value for bound, value in sorted(buckets.items(), key=lambda item: float(item[0]))]
    assert ordered == sorted(ordered)
    assert metrics.value("http_request_duration_seconds_count", **series) == 3
    assert metrics.value("http_request_duration_seconds_sum", **series) == pytest.approx(7.5)
    # Above the last bound: only +Inf holds it.
    far = {"pipeline": IMAGES, "environment": "production", "route": "other"}
    assert metrics.value("http_request_duration_seconds_bucket", **far, le="60.0") == 1
    assert metrics.value("http_request_duration_seconds_bucket", **far, le="+Inf") == 2
    # A histogram per declared value, named with its base unit, on its own buckets.
    assert metrics.value("reference_image_upload_size_bytes_bucket", le="1e+07") == 0
    assert metrics.value("reference_image_upload_size_bytes_bucket", le="+Inf") == 1
    assert metrics.value("ai_run_latency_seconds_bucket", outcome="ok", le="1.0") == 1
    assert metrics.value("ai_run_latency_seconds_count", outcome="ok") == 2
    assert metrics.value("ai_run_latency_seconds_sum", outcome="ok") == 4.0


def test_totals_are_counters_of_the_summed_amounts(scene: Scene) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)

    assert metrics.value("ai_run_tokens_total", outcome="ok", mode="HUMANO", queue="support") == 150
    assert metrics.value("ai_run_tokens_total", outcome="error", mode="COPILOTO", queue="other") == 5
    assert metrics.total("ai_run_tokens_total") == 155


def test_every_event_metric_carries_pipeline_environment_and_variant(scene: Scene) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)
    kinds = ("http_request", "vision_analysis", "reference_image_upload", "preflight_reference_images",
             "image_assets_generation", "ai_run")  # fmt: skip

    event_samples = [sample for sample in metrics.samples if sample.name.startswith(kinds)]

    assert event_samples
    for sample in event_samples:
        assert sample.labels["pipeline"] in (IMAGES, ASSISTANT), sample
        assert sample.labels["environment"] in ("qa", "production"), sample
        assert sample.labels["variant"] in ("on", "off"), sample


# --- control-plane metrics ----------------------------------------------------------------------------------------


def test_rollout_gauges_show_each_environment_stage_percentage_and_state(scene: Scene) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)

    def state(environment: str) -> list[str]:
        return [
            sample.labels["state"]
            for sample in metrics.all("controlplane_rollout_state", flag=FLAG, environment=environment)
            if sample.value == 1
        ]

    assert metrics.value("controlplane_rollout_stage", flag=FLAG, environment="qa") == 1
    assert metrics.value("controlplane_rollout_percentage", flag=FLAG, environment="qa") == 100
    assert state("qa") == ["completed"]
    assert metrics.value("controlplane_rollout_stage", flag=FLAG, environment="staging") == 1
    assert state("staging") == ["paused"]
    assert metrics.value("controlplane_rollout_stage", flag=FLAG, environment="production") == 0
    assert metrics.value("controlplane_rollout_percentage", flag=FLAG, environment="production") == 0
    assert state("production") == ["pending"]
    # Every state is exported for every environment (0 when not current), so `sum by (state)` works.
    assert len(metrics.all("controlplane_rollout_state", flag=FLAG, environment="production")) == 5

    operate(scene.client, scene.operator, "staging", "rollback", reason="uploads failing")
    after = Scrape.of_text(scrape(scene.client).text)

    assert after.value("controlplane_rollout_stage", flag=FLAG, environment="staging") == 0
    assert after.value("controlplane_rollout_percentage", flag=FLAG, environment="staging") == 0
    assert after.value("controlplane_rollout_state", flag=FLAG, environment="staging", state="rolled_back") == 1


def test_alert_state_gauges_have_one_current_state_per_rule_and_environment(scene: Scene, settings: Settings) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)
    rules = {sample.labels["rule"] for sample in metrics.all("controlplane_alert_state", pipeline=IMAGES)}

    assert "upload-error-rate" in rules and "vision-error-streak" in rules
    for rule in rules:
        for environment in settings.environments:
            current = metrics.all("controlplane_alert_state", rule=rule, environment=environment)
            assert sum(sample.value for sample in current) == 1, (rule, environment, current)
    assert metrics.value("controlplane_alert_evaluation_duration_seconds_count") == 1


def test_process_counters_count_ingest_http_and_flag_evaluations(scene: Scene) -> None:
    metrics = Scrape.of_text(scrape(scene.client).text)

    accepted = len(scene.images_batch["events"]) + len(scene.assistant_batch["events"])
    assert metrics.value("controlplane_ingest_events_total", result="accepted") == accepted
    assert metrics.value("controlplane_ingest_events_total", result="duplicate") == len(scene.images_batch["events"])
    assert metrics.value("controlplane_ingest_batches_total", result="accepted") == 2
    assert metrics.value("controlplane_ingest_batches_total", result="duplicate") == 1
    assert metrics.value("controlplane_ingest_batches_total", result="rejected") == 1
    events_route = {"method": "POST", "route": "/api/v1/events"}
    assert metrics.value("controlplane_http_requests_total", **events_route, code="200") == 3
    assert metrics.value("controlplane_http_requests_total", **events_route, code="422") == 1
    assert metrics.value("controlplane_http_request_duration_seconds_count", **events_route) == 4
    # Route templates, never raw paths (bounded cardinality): no flag key or environment in a route label.
    routes = {sample.labels["route"] for sample in metrics.all("controlplane_http_requests_total")}
    assert not [route for route in routes if FLAG in route or "/qa/" in route], routes
    assert [route for route in routes if route.startswith(f"{API}/flags/{{")], routes
    assert metrics.value("controlplane_flag_evaluations_total", route="ofrep") == 2


def test_the_exposition_names_only_base_units_and_counters_ending_in_total(scene: Scene) -> None:
    families = list(text_string_to_metric_families(scrape(scene.client).text))

    for family in families:
        if family.type == "counter":
            assert all(sample.name.endswith(("_total", "_created")) for sample in family.samples), family.name
        for banned in ("_milliseconds", "_ms", "_kilobytes", "_minutes"):
            assert banned not in family.name, family.name


def test_promtool_check_metrics_reports_nothing_on_a_real_scrape(scene: Scene) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        missing_service("promtool (Debian package `prometheus`)")
    assert promtool is not None
    body = scrape(scene.client).content
    assert b"http_request_duration_seconds_bucket" in body and b"controlplane_alert_state" in body

    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=PROMTOOL_TIMEOUT_SECONDS, check=False
    )

    output = (checked.stdout + checked.stderr).decode()
    assert checked.returncode == 0, output
    assert output.strip() == ""


def test_an_unreadable_database_leaves_the_event_counters_scrapeable_and_says_so(scene: Scene, engine: Engine) -> None:
    moved = {"rollouts": "rollouts_away", "event_tails": "event_tails_away"}
    with engine.begin() as connection:
        for table, away in moved.items():
            connection.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {away}")
    try:
        metrics = Scrape.of_text(scrape(scene.client).text)
    finally:
        with engine.begin() as connection:
            for table, away in moved.items():
                connection.exec_driver_sql(f"ALTER TABLE {away} RENAME TO {table}")

    assert metrics.value("controlplane_state_readable") == 0
    assert metrics.total("http_request_events_total") == 7  # what Prometheus guards read is still there
    assert not [sample for sample in metrics.samples if sample.name.startswith("controlplane_rollout_")]
    assert Scrape.of_text(scrape(scene.client).text).value("controlplane_state_readable") == 1
