"""`GET /metrics`: Prometheus text or OpenMetrics, as the scraper asks; rollout and alert state read at scrape time."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import anyio.to_thread
from litestar import Request, Response, get
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.models import AlertStateRow
from controlplane.alerting.queries import TailKey, fetch_tails, rule_tail
from controlplane.alerting.rules import TailEvent, measure
from controlplane.api.dependencies import ProcessMetrics
from controlplane.catalog.models import PipelineCatalog
from controlplane.catalog.rules import AlertState, Rule, RuleKind
from controlplane.catalog.service import load_rules
from controlplane.cleanup.service import policy_health
from controlplane.clock import Clock
from controlplane.db import UNAVAILABLE, DatabaseTimeout, read_within, session_scope
from controlplane.flags import service as flag_service
from controlplane.flags.models import Flag, FlagEnvironment
from controlplane.rollouts.models import Rollout, RolloutPlan
from controlplane.rollouts.stages import RolloutState, stages_from_json
from controlplane.rollouts.status import plan_segmentation

__all__ = ["STREAK_GAUGE", "StateMetrics", "StreakMetrics", "metrics"]

logger = logging.getLogger(__name__)

#: The gauge Prometheus streak alerts read (controlplane.render.promql).
STREAK_GAUGE = "controlplane_event_streak"


class StateMetrics(Collector):
    """Gauges of what the database holds now (the same on every replica): rollouts, incident actions in force and
    alert states."""

    def __init__(self, reader: sessionmaker[Session]) -> None:
        self._reader = reader

    def describe(self) -> list[Metric]:
        """Nothing up front: reading the database at registration would be a side effect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Read rollouts and alerts in one read-only transaction; when the database cannot be read, say so in
        ``controlplane_state_readable`` rather than fail the scrape (the process counters stay scrapeable)."""
        readable = GaugeMetricFamily(
            "controlplane_state_readable",
            "1 when this scrape read rollout and alert state from the database; 0 when it could not (those series "
            "are then absent).",
        )
        try:
            # Within the scrape's database budget: a frozen database must not hold the scrape past it.
            families = read_within(self._read)
        except (SQLAlchemyError, DatabaseTimeout) as error:
            # A traceback only for what is not the database being away: a scrape every 15 s of an outage needs none.
            logger.warning(
                "/metrics could not read rollout and alert state (%s)",
                type(error).__name__,
                exc_info=not isinstance(error, UNAVAILABLE),
            )
            readable.add_metric([], 0.0)
            yield readable
            return
        readable.add_metric([], 1.0)
        yield from (*families, readable)

    def _read(self) -> tuple[Metric, ...]:
        stage = GaugeMetricFamily(
            "controlplane_rollout_stage",
            "Current rollout stage (1-based; 0 when not serving).",
            labels=["flag", "environment", "segment"],
        )
        percentage = GaugeMetricFamily(
            "controlplane_rollout_percentage",
            "Share of traffic the environment (or the segment) serves the rollout variant (0-100).",
            labels=["flag", "environment", "segment"],
        )
        state = GaugeMetricFamily(
            "controlplane_rollout_state",
            "Rollout state, one series per state (1 = current).",
            labels=["flag", "environment", "segment", "state"],
        )
        alert = GaugeMetricFamily(
            "controlplane_alert_state",
            "Alert state per rule and environment, one series per state (1 = current).",
            labels=["rule", "pipeline", "environment", "state"],
        )
        value = GaugeMetricFamily(
            "controlplane_alert_value",
            "Latest measured value of each alert rule (absent when unmeasurable).",
            labels=["rule", "pipeline", "environment"],
        )
        last_success = GaugeMetricFamily(
            "controlplane_cleanup_last_success_timestamp_seconds",
            "When each scheduled cleanup policy last finished a successful run (absent before its first).",
            labels=["policy", "bucket"],
        )
        incident = GaugeMetricFamily(
            "controlplane_flag_incident_active",
            "1 while an incident action (`controlplane flags set-variant`) serves one variant to everyone in the "
            "environment, overriding its rules and rollout; 0 otherwise.",
            labels=["flag", "environment"],
        )
        deadline = GaugeMetricFamily(
            "controlplane_cleanup_success_deadline_timestamp_seconds",
            "When a scheduled cleanup policy's next success is due at the latest (its schedule's allowance after the "
            "last success, or after the policy was created).",
            labels=["policy", "bucket"],
        )
        with session_scope(self._reader) as session:
            for health in policy_health(session):
                labels = [health.name, health.bucket]
                deadline.add_metric(labels, health.deadline.timestamp())
                if health.last_success_at is not None:
                    last_success.add_metric(labels, health.last_success_at.timestamp())
            # One series per environment (segment ""), or per segment of a plan run per segment (segment
            # "queue=support"): a per-segment environment serves no one percentage of its own.
            newest = (
                select(func.max(Rollout.id).label("id"))
                .group_by(Rollout.flag_id, Rollout.environment, Rollout.segment)
                .subquery()
            )
            rollouts = {
                (key, row.environment, row.segment): row
                for key, row in session.execute(
                    select(Flag.key, Rollout)
                    .join(Flag, Flag.id == Rollout.flag_id)
                    .join(newest, newest.c.id == Rollout.id)
                )
            }
            segmented = {
                (plan.flag_id, plan.environment): segmentation
                for plan in session.scalars(select(RolloutPlan).where(RolloutPlan.segment_attribute.is_not(None)))
                if (segmentation := plan_segmentation(plan)) is not None
            }
            environments = session.execute(
                select(Flag.key, FlagEnvironment).join(Flag, Flag.id == FlagEnvironment.flag_id).order_by(Flag.key)
            ).all()
            overridden = flag_service.active_incidents(session)
            for key, environment in environments:
                labels = [key, environment.environment]
                incident.add_metric(labels, 1.0 if (key, environment.environment) in overridden else 0.0)
                rollout = environment.rollout or {}
                segmentation = segmented.get((environment.flag_id, environment.environment))
                parts: list[tuple[str, str | None, float]]
                if segmentation is None:
                    parts = [("", None, float(rollout.get("percentage", 0.0)))]
                else:
                    served = (rollout.get("segments") or {}).get("percentages") or {}
                    parts = [
                        (f"{segmentation.attribute}={value}", value, float(served.get(value, 0.0)))
                        for value in segmentation.values
                    ]
                for segment, segment_value, share in parts:
                    labels = [key, environment.environment, segment]
                    row = rollouts.get((key, environment.environment, segment_value))
                    current = RolloutState(row.state) if row else RolloutState.PENDING
                    serving = current in (RolloutState.RUNNING, RolloutState.PAUSED, RolloutState.COMPLETED)
                    stage.add_metric(labels, row.stage_index + 1 if row and serving else 0)
                    percentage.add_metric(labels, share if environment.enabled else 0.0)
                    for option in RolloutState:
                        state.add_metric([*labels, option.value], 1.0 if option is current else 0.0)
                    if row is not None:
                        stages_from_json(row.stages)  # a row that cannot be read fails the scrape loudly
            # Only rules still declared: a rule removed from its definition leaves a state row behind, which would
            # otherwise be exported (and alerted on) for ever.
            declared = {
                (catalog.pipeline, rule["name"])
                for catalog in session.scalars(select(PipelineCatalog))
                for rule in catalog.rules
            }
            for alert_row in session.scalars(
                select(AlertStateRow).order_by(AlertStateRow.rule, AlertStateRow.environment)
            ):
                if (alert_row.pipeline, alert_row.rule) not in declared:
                    continue
                labels = [alert_row.rule, alert_row.pipeline, alert_row.environment]
                for alert_option in AlertState:
                    alert.add_metric(
                        [*labels, alert_option.value], 1.0 if alert_row.state == alert_option.value else 0.0
                    )
                if alert_row.value is not None:
                    value.add_metric(labels, alert_row.value)
        return (stage, percentage, state, incident, alert, value, last_success, deadline)


class StreakMetrics(Collector):
    """The trailing run of a streak rule's outcome per environment, worked out at scrape time from the event tails
    in the database, by the rule itself (``measure``: its window, `where` and min_samples): the same on every
    replica, and the same number the control plane's own evaluation compares with the threshold."""

    def __init__(self, reader: sessionmaker[Session], environments: Sequence[str], clock: Clock) -> None:
        self._reader = reader
        self._environments = tuple(environments)
        self._clock = clock

    def describe(self) -> list[Metric]:
        """Nothing up front: reading the database at registration would be a side effect."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One series per streak rule and environment it is measured in; none while too few events are known."""
        family = GaugeMetricFamily(
            STREAK_GAUGE,
            "Consecutive newest events with a streak rule's outcome, per rule and environment (absent while there "
            "are fewer events than the rule's min_samples).",
            labels=["rule", "pipeline", "event", "environment", "outcome"],
        )
        try:
            rules, tails = read_within(self._read)
        except (SQLAlchemyError, DatabaseTimeout) as error:  # StateMetrics reports it unreadable; the scrape goes on
            logger.warning(
                "/metrics could not read the event tails of streak rules (%s)",
                type(error).__name__,
                exc_info=not isinstance(error, UNAVAILABLE),
            )
            yield family
            return
        now = self._clock()
        for rule in rules:
            for environment in rule.environments or self._environments:
                measured = measure(rule, (), rule_tail(tails, rule, environment), now)
                if measured.sufficient and measured.value is not None:
                    family.add_metric([rule.name, rule.pipeline, rule.event, environment, rule.outcome], measured.value)
        yield family

    def _read(self) -> tuple[list[Rule], dict[TailKey, list[TailEvent]]]:
        with session_scope(self._reader) as session:
            rules = [rule for rule in load_rules(session) if rule.kind is RuleKind.STREAK]
            return rules, fetch_tails(session, rules)


@get("/metrics", opt={"public": True}, include_in_schema=False)
async def metrics(request: Request[Any, Any, Any], metrics: ProcessMetrics) -> Response[bytes]:
    """Every metric of this replica, encoded as the scraper's Accept header asks (OpenMetrics or text 0.0.4)."""
    registry: CollectorRegistry = metrics.registry
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = await anyio.to_thread.run_sync(encoder, registry)
    # As a header, not media_type: Litestar appends `; charset=utf-8` to any text/* media type, and the text
    # format's type already carries one (a repeated parameter is an invalid media type).
    return Response(body, headers={"Content-Type": content_type}, status_code=200)
