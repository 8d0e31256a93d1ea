"""The control plane's own process metrics, on one explicit registry per app (no global state).

Event metrics (one family per catalog event) and state gauges read from the database at scrape time are
collectors registered on the same registry by ``telemetry.metrics`` and ``exporter.metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from controlplane_client.observed import ASGIApp, ObservedRequests, Scope

__all__ = ["ControlPlaneMetrics", "HttpMetricsMiddleware"]

_DURATIONS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ControlPlaneMetrics:
    """Counters and histograms of what this process did: ingest, evaluation, notifications, jobs, HTTP."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ingest_events = Counter(
            "controlplane_ingest_events", "Events received by ingest, by result.", ["result"], registry=r
        )
        self.ingest_batches = Counter(
            "controlplane_ingest_batches", "Event batches received by ingest, by result.", ["result"], registry=r
        )
        self.evaluations = Counter(
            "controlplane_flag_evaluations",
            "Flag evaluations answered by this replica, by route (ofrep, ofrep_bulk).",
            ["route"],
            registry=r,
        )
        # Bound once: the single-flag OFREP route is the hottest path there is.
        self.ofrep_evaluations = self.evaluations.labels("ofrep")
        self.notifications = Counter(
            "controlplane_notifications",
            "Notification deliveries by receiver and result (sent, failed, retried, silenced).",
            ["receiver", "result"],
            registry=r,
        )
        self.rollbacks = Counter(
            "controlplane_rollbacks",
            "Rollbacks performed, by flag, environment and trigger (operator, guard, alertmanager).",
            ["flag", "environment", "trigger"],
            registry=r,
        )
        self.job_runs = Counter(
            "controlplane_scheduler_job_runs", "Scheduled job runs by job and result.", ["job", "result"], registry=r
        )
        self.job_duration = Histogram(
            "controlplane_scheduler_job_duration_seconds",
            "Duration of scheduled job runs.",
            ["job"],
            buckets=_DURATIONS,
            registry=r,
        )
        self.alert_evaluation_duration = Histogram(
            "controlplane_alert_evaluation_duration_seconds",
            "Duration of one evaluation of every alert rule.",
            buckets=_DURATIONS,
            registry=r,
        )
        self.cleanup_objects = Counter(
            "controlplane_cleanup_objects",
            "Objects a cleanup run acted on, by policy (empty for a purge), kind and outcome (deleted, already_gone, "
            "skipped, failed); dry runs not counted.",
            ["policy", "kind", "outcome"],
            registry=r,
        )
        self.cleanup_runs = Counter(
            "controlplane_cleanup_runs",
            "Cleanup runs finished by this replica, by policy, kind and status (succeeded, failed).",
            ["policy", "kind", "status"],
            registry=r,
        )
        self.cleanup_run_duration = Histogram(
            "controlplane_cleanup_run_duration_seconds",
            "Duration of finished cleanup runs (a resumed run's earlier attempts included).",
            ["policy", "kind"],
            buckets=(0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0),
            registry=r,
        )
        self.configuration_refreshed = Gauge(
            "controlplane_configuration_refreshed_timestamp_seconds",
            "When this replica last read the flags' configuration from the database; while it cannot (an outage), it "
            "serves the last one read and this stops moving.",
            registry=r,
        )
        self.http_requests = Counter(
            "controlplane_http_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "code"],
            registry=r,
        )
        self.http_duration = Histogram(
            "controlplane_http_request_duration_seconds",
            "HTTP request duration, by method and route template.",
            ["method", "route"],
            buckets=_DURATIONS,
            registry=r,
        )

    def timed_job(self, job: str, run: Callable[[], Any]) -> Any:
        """Run a scheduled job, counting the run and timing it."""
        started = time.perf_counter()
        try:
            result = run()
        except Exception:
            self.job_runs.labels(job, "error").inc()
            raise
        finally:
            self.job_duration.labels(job).observe(time.perf_counter() - started)
        self.job_runs.labels(job, "ok").inc()
        return result


class HttpMetricsMiddleware(ObservedRequests):
    """Count and time HTTP requests by route template (never the raw path: bounded cardinality).

    Litestar's own Prometheus plugin writes to the process-global registry; this one writes to the app's.
    """

    def __init__(self, app: ASGIApp, metrics: ControlPlaneMetrics) -> None:
        super().__init__(app)
        self._metrics = metrics

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count the request and time it."""
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "GET")
        self._metrics.http_requests.labels(method, route, str(status)).inc()
        self._metrics.http_duration.labels(method, route).observe(seconds)
