"""The control plane's own dashboards, over every pipeline at once: ``rollout-overview`` (stage, traffic share and
state of every flag's rollout per environment, firing guards, rollbacks as annotations) and
``control-plane-health`` (ingest, alert evaluation, notifications, scheduled jobs, bucket cleanup and HTTP).

Process metric names come from ``ControlPlaneMetrics``; the state gauges of ``api.metrics.StateMetrics`` are
created at scrape time, so their names are written in ``panels`` (tests/integration/test_dashboard_queries.py
proves every name exists on /metrics).
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.definitions.schemas import PipelineDefinition
from controlplane.metrics import ControlPlaneMetrics
from controlplane.render.panels import (
    ALERT_STATE,
    CLEANUP_DEADLINE,
    ENVIRONMENT,
    FIRING,
    ROLLOUT_PERCENTAGE,
    ROLLOUT_STAGE,
    ROLLOUT_STATE,
    Board,
    metric_family,
    stat,
    state_timeline,
    timeseries,
)
from controlplane.render.promql_text import matcher, per_minute, quantile, selector, sum_rate
from controlplane.rollouts.stages import RolloutState

__all__ = ["control_plane_health", "rollout_overview"]

_SERVER_ERROR = 'code=~"5.."'


#: A rollout series' legend: the segment after the environment for a plan run per segment (empty otherwise).
SERIES_LEGEND = "{{flag}} in {{environment}} {{segment}}"


def rollout_overview(definitions: Sequence[PipelineDefinition]) -> Board:
    """Where every flag's rollout is: stage, traffic share and state over time, firing guards, rollbacks."""
    pipelines = ", ".join(sorted(definition.name for definition in definitions))
    board = (
        Board(
            "controlplane-rollout-overview",
            "Rollout overview",
            f"Stage, traffic share and state of every flag's rollout per environment ({pipelines}), with the guards "
            "that fire and rollbacks as annotations.",
            ["rollouts"],
        )
        .environment(f"label_values({ROLLOUT_STATE}, environment)")
        .variable("flag", "Flag", f"label_values({ROLLOUT_STATE}{{{ENVIRONMENT}}}, flag)")
        .rollbacks()
    )
    scope = (ENVIRONMENT, 'flag=~"$flag"')
    states = list(RolloutState)
    state_code = " + ".join(
        f"{index} * max by (flag, environment, segment) "
        f"({selector(ROLLOUT_STATE, matcher('state', [state.value]), *scope)})"
        for index, state in enumerate(states)
    )
    colours = {"pending": "text", "running": "blue", "paused": "yellow", "completed": "green", "rolled_back": "red"}
    timeline = state_timeline(
        "Rollout state",
        "Each flag's rollout state per environment over time: "
        + ", ".join(state.value for state in states)
        + ". From controlplane_rollout_state (one series per state, 1 = current), coded as numbers and mapped "
        "back to names.",
        state_code,
        SERIES_LEGEND,
        {index: (state.value, colours.get(state.value, "text")) for index, state in enumerate(states)},
    )
    board.row("Rollouts").add(
        timeline,
        timeseries(
            "Rollout stage",
            "The stage each flag's rollout is at per environment (1-based; 0 when not serving: pending or rolled "
            "back). From controlplane_rollout_stage.",
            "none",
            [(f"max by (flag, environment, segment) ({selector(ROLLOUT_STAGE, *scope)})", SERIES_LEGEND)],
            stepped=True,
        ),
        timeseries(
            "Traffic on the rollout variant",
            "Share of traffic each environment serves the rollout variant, 0-100% (0 when disabled or rolled back). "
            "From controlplane_rollout_percentage.",
            "percent",
            [(f"max by (flag, environment, segment) ({selector(ROLLOUT_PERCENTAGE, *scope)})", SERIES_LEGEND)],
            stepped=True,
            maximum=100,
        ),
    )
    firing = selector(ALERT_STATE, FIRING, ENVIRONMENT)
    board.row("Guards").add(
        stat(
            "Alert rules firing now",
            "How many alert rules fire now in the selected environments (guards among them roll their flag back "
            "when the plan says auto_rollback). From controlplane_alert_state.",
            "none",
            # Every replica exports the same database state: one series per rule before summing, not one per replica.
            [(f"sum(max by (pipeline, rule, environment) ({firing}))", "firing")],
            red_from=1,
        ),
        timeseries(
            "Firing alert rules",
            "Alert rules while they fire (1), per pipeline and environment. From controlplane_alert_state; rollbacks "
            "show as red annotations.",
            "none",
            [(f"max by (pipeline, rule, environment) ({firing}) > 0", "{{rule}} ({{pipeline}}) in {{environment}}")],
            width=18,
            stepped=True,
            maximum=1,
        ),
    )
    return board


def control_plane_health(definitions: Sequence[PipelineDefinition]) -> Board:
    """The control plane itself: ingest, alert evaluation, notifications, scheduled jobs, HTTP."""
    del definitions  # the control plane's own metrics do not depend on the pipelines
    metrics = ControlPlaneMetrics()  # a private registry: read for its metric names only
    ingest_events = f"{metric_family(metrics.ingest_events)}_total"
    ingest_batches = f"{metric_family(metrics.ingest_batches)}_total"
    evaluation = metric_family(metrics.alert_evaluation_duration)
    notifications = f"{metric_family(metrics.notifications)}_total"
    job_runs = f"{metric_family(metrics.job_runs)}_total"
    job_duration = metric_family(metrics.job_duration)
    requests = f"{metric_family(metrics.http_requests)}_total"
    duration = metric_family(metrics.http_duration)
    flag_evaluations = f"{metric_family(metrics.evaluations)}_total"
    cleanup_objects = f"{metric_family(metrics.cleanup_objects)}_total"
    cleanup_runs = f"{metric_family(metrics.cleanup_runs)}_total"
    board = Board(
        "controlplane-health",
        "Control plane health",
        "The control plane's own work: event ingest, alert evaluation, notifications, scheduled jobs, bucket cleanup "
        "and HTTP.",
        ["health"],
    )
    board.environment(f"label_values({ALERT_STATE}, environment)").rollbacks()
    board.row("Ingest").add(
        timeseries(
            "Events ingested by result",
            f"Events received by POST /api/v1/events per second, by result (accepted, duplicate, rejected). "
            f"Counter {ingest_events}.",
            "ops",
            [(sum_rate(ingest_events, ["result"]), "{{result}}")],
        ),
        timeseries(
            "Batches ingested by result",
            f"Event batches received per second, by result; a duplicate is a retried batch_id, acknowledged again "
            f"and counted once. Counter {ingest_batches}.",
            "ops",
            [(sum_rate(ingest_batches, ["result"]), "{{result}}")],
        ),
    )
    board.row("Alerting and notifications").add(
        timeseries(
            "Alert evaluation duration",
            f"Time one evaluation of every alert rule takes (the scheduler runs it every few seconds): p50, p95 "
            f"(estimated from bucket bounds) and mean. Histogram {evaluation}.",
            "s",
            [
                (quantile(0.5, f"{evaluation}_bucket"), "p50"),
                (quantile(0.95, f"{evaluation}_bucket"), "p95"),
                (f"{sum_rate(f'{evaluation}_sum')} / {sum_rate(f'{evaluation}_count')}", "mean"),
            ],
            width=8,
        ),
        timeseries(
            "Notifications by receiver and result",
            f"Notification deliveries per minute by receiver and result (sent, failed, retried, silenced); failed "
            f"ones are retried. Counter {notifications}.",
            "opm",
            [(per_minute(notifications, ["receiver", "result"]), "{{receiver}} {{result}}")],
            width=8,
        ),
        timeseries(
            "Firing alert rules by environment",
            "How many alert rules fire, per pipeline and environment. From controlplane_alert_state.",
            "none",
            [
                (
                    "sum by (pipeline, environment) "
                    f"(max by (pipeline, rule, environment) ({selector(ALERT_STATE, FIRING, ENVIRONMENT)}))",
                    "{{pipeline}} in {{environment}}",
                )
            ],
            width=8,
            stepped=True,
        ),
    )
    board.row("Scheduled jobs").add(
        timeseries(
            "Job runs by job and result",
            f"Scheduled job runs per minute by job and result (ok, error; skipped in replicas that do not hold "
            f"the leader lease). Counter {job_runs}.",
            "opm",
            [(per_minute(job_runs, ["job", "result"]), "{{job}} {{result}}")],
        ),
        timeseries(
            "Job duration p95 by job",
            f"95th percentile of each scheduled job's run time (estimated from bucket bounds). Histogram "
            f"{job_duration}.",
            "s",
            [(quantile(0.95, f"{job_duration}_bucket", ["job"]), "{{job}}")],
        ),
    )
    board.row("Bucket cleanup").add(
        timeseries(
            "Time left to each cleanup policy's success deadline",
            f"How long each scheduled cleanup policy may still go without a successful run; below zero it is "
            f"overdue and CleanupNotSucceeding fires. From {CLEANUP_DEADLINE} (read from the database, the same on "
            "every replica).",
            "s",
            [(f"min by (policy, bucket) ({CLEANUP_DEADLINE}) - time()", "{{policy}} ({{bucket}})")],
            width=8,
            line=0.0,
            minimum=None,
        ),
        timeseries(
            "Cleanup objects by outcome",
            f"Objects cleanup runs acted on per minute, by policy (empty for a purge) and outcome (deleted, "
            f"already_gone, skipped, failed); dry runs are not counted. Counter {cleanup_objects}.",
            "opm",
            [(per_minute(cleanup_objects, ["policy", "outcome"]), "{{policy}} {{outcome}}")],
            width=8,
        ),
        timeseries(
            "Cleanup runs by status",
            f"Cleanup runs finished per minute by policy, kind and status (succeeded, failed). Counter {cleanup_runs}.",
            "opm",
            [(per_minute(cleanup_runs, ["policy", "kind", "status"]), "{{policy}} {{kind}} {{status}}")],
            width=8,
        ),
    )
    board.row("HTTP").add(
        timeseries(
            "HTTP requests by route and status",
            f"Requests answered per second, by route template and status code. Counter {requests}.",
            "reqps",
            [(sum_rate(requests, ["route", "code"]), "{{code}} {{route}}")],
        ),
        timeseries(
            "HTTP request duration p95 by route",
            f"95th percentile of request duration per route template (estimated from bucket bounds). Histogram "
            f"{duration}.",
            "s",
            [(quantile(0.95, f"{duration}_bucket", ["route"]), "{{route}}")],
        ),
        timeseries(
            "HTTP 5xx share",
            f"Share of requests answered with a 5xx status. Counter {requests}.",
            "percentunit",
            [(f"{sum_rate(selector(requests, _SERVER_ERROR))} / {sum_rate(requests)}", "5xx")],
        ),
        timeseries(
            "Flag evaluations",
            f"Flag evaluations answered per second by route (ofrep, ofrep_bulk). Counter {flag_evaluations}.",
            "reqps",
            [(sum_rate(flag_evaluations, ["route"]), "{{route}}")],
        ),
    )
    return board
