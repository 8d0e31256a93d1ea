"""Scheduled work of guarding: the rule evaluation tick, with the automatic rollbacks its guards make."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.evaluation import EvaluationCache, current_rules, plan_evaluation
from controlplane.alerting.prometheus import PrometheusSource, read_prometheus_rules
from controlplane.clock import Clock
from controlplane.db import reader_factory, session_scope
from controlplane.guarding.evaluation import GuardedEvaluation, apply_guarded_evaluation
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.service import count_silenced
from controlplane.rollouts.service import guarded_rollouts

__all__ = ["evaluate_alert_rules"]

logger = logging.getLogger(__name__)


def evaluate_alert_rules(
    factory: sessionmaker[Session],
    *,
    environments: Sequence[str],
    clock: Clock,
    notifications: Callable[[], NotificationConfig],
    metrics: ControlPlaneMetrics | None = None,
    window_size: timedelta,
    cache: EvaluationCache | None = None,
    prometheus: PrometheusSource | None = None,
) -> GuardedEvaluation:
    """Evaluate every rule once, in one transaction; rollbacks and notifications commit with the states.

    ``prometheus`` answers the queries of ``source: prometheus`` rules (None: not configured, so they lack data).
    """
    started = time.perf_counter()
    now = clock()
    bind = factory.kw.get("bind")
    # Reading and measuring take no write lock (on SQLite and PostgreSQL alike): ingest and operators are held up
    # only for the writes themselves.
    reader = reader_factory(bind) if isinstance(bind, Engine) else factory
    with session_scope(reader) as reading:
        rules = current_rules(reading, cache)
    # Prometheus is asked with no session open: a slow answer holds no connection and no snapshot, and waits at
    # most the queries' budget.
    readings = read_prometheus_rules(rules, environments, now, prometheus)
    with session_scope(reader) as reading:
        plan = plan_evaluation(
            reading, environments=environments, now=now, window_size=window_size, cache=cache, readings=readings
        )
        guarded = guarded_rollouts(reading)
    with session_scope(factory) as session:
        evaluation = apply_guarded_evaluation(
            session,
            plan,
            guarded,
            environments=environments,
            now=now,
            notifications=notifications(),
            cache=cache,
        )
    if metrics is not None:
        metrics.alert_evaluation_duration.observe(time.perf_counter() - started)
        count_silenced(metrics, evaluation.notifications)
        for rollback in evaluation.rollbacks:
            metrics.rollbacks.labels(rollback.flag, rollback.environment, rollback.trigger).inc()
    for rollback in evaluation.rollbacks:
        logger.warning("guard %s rolled back %s in %s", rollback.rule, rollback.flag, rollback.environment)
    for error in evaluation.errors:
        logger.error("alert evaluation: %s", error)
    return evaluation
