"""The dashboards query what exists: every PromQL expression of dashboards/ parses with the real promtool, and every
metric a dashboard (or a rule in alerts/*.rules.yml) reads is on /metrics of a running control plane after demo
traffic: definitions applied, events of every type, outcome and variant ingested over HTTP, a rollout through a
stage and a rollback, a flag evaluated, and every scheduled job run once (alert evaluation and notification
delivery among them).

Metric names are read out of PromQL by controlplane.render.promql_names (tested in tests/unit/test_promql_names.py).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from controlplane.api.roles import Role
from controlplane.catalog.events import EventType
from controlplane.cleanup import runs as cleanup_runs
from controlplane.cleanup.schemas import RunRequest
from controlplane.cleanup.selection import EXPIRY_METADATA_KEY
from controlplane.db import session_scope
from controlplane.definitions.loader import load_definition
from controlplane.render.dashboard_queries import dashboard_queries
from controlplane.render.promql_names import metric_names, vector_selectors
from controlplane.scheduler import Leadership, build_jobs
from controlplane.settings import Settings
from tests.conftest import REPO_ROOT, FakeClock, bearer, missing_service, without_gates
from tests.fake_bucket import FakeBucket
from tests.receivers import ScriptedReceiver, scripted_receiver

API = "/api/v1"
FLAG = "enable-reference-images"
PROMTOOL_TIMEOUT_SECONDS = 60
#: What Grafana's built-in interval variables become for promtool.
BUILT_IN_INTERVALS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)")
#: Series Prometheus makes itself from alerting rules; no exporter has them.
PROMETHEUS_OWN = frozenset({"ALERTS", "ALERTS_FOR_STATE"})


# --- what the dashboards and rule files query -----------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A PromQL expression of a dashboard or rule file, with Grafana variables still in it, and where it is."""

    where: str
    expr: str
    variables: dict[str, str]  # Grafana variable -> the value promtool sees


def committed_dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((REPO_ROOT / "dashboards").glob("*.json"))
    }


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """A value for each variable: its text for textboxes and constants, `.*` (every value) for the selectors."""
    values = dict(BUILT_IN_INTERVALS)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] in ("textbox", "constant"):
            values[variable["name"]] = str(variable["query"])
        elif variable["type"] in ("query", "custom"):
            values[variable["name"]] = ".*"
    return values


def dashboard_expressions() -> list[Query]:
    found = []
    for name, dashboard in committed_dashboards().items():
        values = variable_values(dashboard)
        found += [Query(f"{name}: {query.where}", query.expr, values) for query in dashboard_queries(dashboard)]
    return found


def rule_file_expressions() -> list[Query]:
    """The `expr` of every rule in alerts/*.rules.yml (generated beside the dashboards; none yet is fine)."""
    found = []
    for path in sorted((REPO_ROOT / "alerts").glob("*.rules.yml")):
        for group in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("groups") or ():
            for rule in group.get("rules") or ():
                name = rule.get("alert") or rule.get("record")
                found.append(Query(f"{path.name}: {group['name']}: {name}", str(rule["expr"]), {}))
    return found


def substitute(query: Query) -> str:
    """The expression with Grafana variables replaced, as Prometheus would receive it from Grafana."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in query.variables, f"{query.where}: unknown variable ${name} in {query.expr}"
        return query.variables[name]

    return _VARIABLE.sub(value, query.expr)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        missing_service("promtool (Debian package `prometheus`)")
    assert found is not None
    return found


def check_as_recording_rules(expressions: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    """``promtool check rules`` on a file recording each expression: promtool parses every one with Prometheus'
    own PromQL parser."""
    rules = [{"record": f"dashboard:query_{index}:check", "expr": expr} for index, expr in enumerate(expressions)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
    return subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_SECONDS,
        check=False,
    )


# --- (a) every expression parses ------------------------------------------------------------------------------------


def test_every_dashboard_expression_parses_with_promtool(tmp_path: Path) -> None:
    queries = dashboard_expressions()
    assert len(queries) > 50

    checked = check_as_recording_rules([substitute(query) for query in queries], tmp_path / "dashboards.rules.yml")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(queries)} rules found" in checked.stdout


def test_promtool_refuses_an_expression_that_does_not_parse(tmp_path: Path) -> None:
    # The check above is only worth something if a broken expression fails it.
    broken = 'sum(rate(http_request_events_total{environment=~".*"}[1m])'

    checked = check_as_recording_rules(["up", broken], tmp_path / "broken.rules.yml")

    assert checked.returncode != 0
    output = checked.stdout + checked.stderr
    assert '"dashboard:query_1:check": could not parse expression' in output, output
    assert "dashboard:query_0:check" not in output, output


# --- (b) every metric read exists after demo traffic ----------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[ScriptedReceiver]:
    with scripted_receiver() as running:
        yield running


@pytest.fixture
def settings(database_url: str, tmp_path: Path, receiver: ScriptedReceiver) -> Settings:
    """Every alert goes to a webhook on the scripted receiver, so a delivery is counted."""
    notifications = tmp_path / "notifications.yaml"
    notifications.write_text(
        f"receivers:\n  hook: {{type: webhook, url: '{receiver.url}/hook'}}\nroutes:\n  - receivers: [hook]\n"
    )
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        replica_id="dashboard-queries",
        notifications_file=notifications,
    )


def catalog_events(event: EventType, at: datetime, environment: str) -> list[dict[str, Any]]:
    """One event per outcome x variant x combination of label values: every series of the event's metrics."""
    label_names = sorted(event.labels)
    events = []
    for outcome, variant, values in itertools.product(
        event.outcomes or (None,),
        event.variants,
        itertools.product(*(event.labels[name].values for name in label_names)),
    ):
        sent: dict[str, Any] = {
            "type": event.name,
            "time": at.isoformat(),
            "environment": environment,
            "variant": variant,
            "labels": dict(zip(label_names, values, strict=True)),
        }
        if outcome is not None:
            sent["outcome"] = outcome
        if event.value is not None:
            sent["value"] = event.value.buckets[len(event.value.buckets) // 2]
        if event.totals:
            sent["totals"] = dict.fromkeys(event.totals, 120.0)
        events.append(sent)
    return events


def upload_requests(count: int, at: datetime, environment: str) -> list[dict[str, Any]]:
    """Healthy upload requests: with the catalog's errors, enough samples for the upload error-rate rule to fire."""
    return [
        {
            "type": "http_request",
            "time": at.isoformat(),
            "environment": environment,
            "variant": "on",
            "labels": {"route": "upload_reference_image", "status_class": "2xx"},
            "value": 0.3,
        }
        for _ in range(count)
    ]


def operate(http: httpx.Client, headers: dict[str, str], environment: str, operation: str, reason: str) -> None:
    path = f"{API}/flags/{FLAG}/environments/{environment}/rollout"
    revision = http.get(path, headers=headers).json()["revision"]
    response = http.post(f"{path}/{operation}", headers=headers, json={"expected_revision": revision, "reason": reason})
    assert response.status_code == 200, response.text


@dataclass(frozen=True)
class Exported:
    """The samples of one /metrics scrape: for each sample name, the label names it was seen with."""

    labels: dict[str, set[str]]


@pytest.fixture
def exported(
    live_server: str,
    app: Litestar,
    engine: Engine,
    settings: Settings,
    clock: FakeClock,
    make_token: Callable[..., str],
    receiver: ScriptedReceiver,
) -> Exported:
    """A running control plane after demo traffic, scraped once."""
    admin = bearer(make_token(Role.ADMIN, name="admin"))
    ingest = bearer(make_token(Role.INGEST, name="pipeline"))
    operator = bearer(make_token(Role.OPERATOR, name="sre"))
    evaluator = bearer(make_token(Role.EVALUATE, name="app", environment="qa"))
    with httpx.Client(base_url=live_server, timeout=30) as http:
        for path in sorted((REPO_ROOT / "definitions").glob("*.yaml")):
            content = without_gates(path.read_text(encoding="utf-8"))
            response = http.post(
                f"{API}/definitions/apply", headers=admin, json={"content": content, "source": path.name}
            )
            assert response.status_code == 200, response.text

            definition = load_definition(path, environments=settings.environments)
            events = [sent for event in definition.events for sent in catalog_events(event, clock(), "qa")]
            if definition.name == "reference-images":
                events += upload_requests(60, clock(), "qa")
            batch = {"batch_id": f"demo-{uuid.uuid4().hex}", "pipeline": definition.name, "events": events}
            response = http.post(f"{API}/events", headers=ingest, json=batch)
            assert response.status_code == 200, response.text
            assert response.json()["accepted"] == len(events)

        operate(http, operator, "qa", "start", "QA canary")
        operate(http, operator, "qa", "advance", "qa looks healthy")
        operate(http, operator, "staging", "start", "on to staging")
        operate(http, operator, "staging", "rollback", "uploads failing")
        response = http.post(
            f"/ofrep/v1/evaluate/flags/{FLAG}", headers=evaluator, json={"context": {"targetingKey": "user-1"}}
        )
        assert response.status_code == 200, response.text

        # Every scheduled job once, in the scheduler's own order and through its metrics wrapper (what
        # Scheduler runs in the leader); the alert tick fires the upload error-rate rule, delivery sends it, and the
        # cleanup tick runs a queued cleanup of a bucket holding one expired reference image.
        clock.advance(timedelta(seconds=1))
        factory = sessionmaker(engine, expire_on_commit=False)
        with session_scope(factory) as session:
            cleanup_runs.request_run(
                session, name="expired-reference-images", body=RunRequest(), actor="sre", now=clock()
            )
        bucket = FakeBucket()
        bucket.add(
            "reference-images/expired.png",
            metadata={EXPIRY_METADATA_KEY: (clock() - timedelta(days=2)).isoformat()},
        )
        leadership = Leadership(factory, holder=settings.replica_id, ttl=timedelta(seconds=30), clock=clock)
        metrics = app.state.metrics
        with httpx.Client(timeout=5) as delivery:
            jobs = build_jobs(
                settings,
                factory,
                leadership,
                clock,
                metrics=metrics,
                notifications=app.state.notification_config(),
                http=delivery,
                storage_for=lambda name: bucket,
            )
            for job in jobs:
                metrics.timed_job(job.id, job.run)
        assert receiver.bodies("/hook"), "no notification was delivered"
        assert bucket.objects == {}, "the cleanup run did not delete the expired image"

        scraped = http.get("/metrics")
        assert scraped.status_code == 200, scraped.text
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return Exported(labels)


def test_every_metric_a_dashboard_or_rule_reads_is_exported_after_demo_traffic(exported: Exported) -> None:
    queries = dashboard_expressions() + rule_file_expressions()
    read: dict[str, list[str]] = {}
    for query in queries:
        for name in metric_names(query.expr):
            if ":" in name or name in PROMETHEUS_OWN:  # recording-rule outputs and Prometheus' own series
                continue
            read.setdefault(name, []).append(query.where)

    missing = {name: where for name, where in read.items() if name not in exported.labels}

    assert len(read) > 20
    assert not missing, "read but never exported:\n" + "\n".join(
        f"  {name}: {', '.join(where[:3])}" for name, where in sorted(missing.items())
    )


def test_every_dashboard_query_of_a_metric_with_an_environment_label_filters_on_it(exported: Exported) -> None:
    checked = 0
    for query in dashboard_expressions():
        if "variable 'environment'" in query.where:
            continue  # the variable lists the label's values
        for selector in vector_selectors(query.expr):
            if "environment" in exported.labels.get(selector.metric, set()):
                matcher = selector.matcher("environment")
                assert matcher is not None and (matcher.op, matcher.value) == ("=~", "$environment"), (
                    f"{query.where}: {selector.metric} in {query.expr}"
                )
                checked += 1
    assert checked > 50
