"""Scheduled work of guarding: the rule evaluation tick, with the automatic rollbacks its guards make."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.evaluation import EvaluationCache, current_rules, plan_evaluation
from controlplane.alerting.prometheus import PrometheusSource, read_prometheus_rules
from controlplane.catalog.rules import Rule
from controlplane.clock import Clock
from controlplane.db import reader_factory, session_scope
from controlplane.guarding.debounce import EVERY_RULE, Reads, concerning
from controlplane.guarding.evaluation import GuardedEvaluation, apply_guarded_evaluation, settle_quiet_plan
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.service import count_silenced
from controlplane.rollouts.service import guarded_rollouts

__all__ = ["GuardEvaluator", "evaluate_alert_rules"]

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
    only: Callable[[Rule], bool] | None = None,
) -> GuardedEvaluation:
    """Evaluate every rule (or those ``only`` keeps) once, in one transaction; rollbacks and notifications commit
    with the states.

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
    if only is not None:
        rules = [rule for rule in rules if only(rule)]
        if not rules:
            return GuardedEvaluation()  # a batch no rule reads: nothing to measure, no write transaction
    # Prometheus is asked with no session open: a slow answer holds no connection and no snapshot, and waits at
    # most the queries' budget.
    readings = read_prometheus_rules(rules, environments, now, prometheus)
    with session_scope(reader) as reading:
        plan = plan_evaluation(
            reading,
            environments=environments,
            now=now,
            window_size=window_size,
            cache=cache,
            readings=readings,
            only=only,
        )
        guarded = guarded_rollouts(reading)
    if plan.quiet:
        # No alert changed and none breaches: no write transaction, so a quiet tick, or a triggered run whose batch
        # moved nothing, never waits for (nor holds up) the write lock ingest and operators take.
        evaluation = settle_quiet_plan(plan, now=now, cache=cache)
    else:
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
    for held in evaluation.held:
        if held.first:
            logger.warning(
                "guard %s fired for %s in %s: rollback held by incident %s",
                held.rule,
                held.flag,
                held.environment,
                held.incident,
            )
    for error in evaluation.errors:
        logger.error("alert evaluation: %s", error)
    return evaluation


class GuardEvaluator:
    """The leader's one evaluator: the tick and the triggered evaluations run through it one at a time, sharing its
    cache, so no two evaluations read the same stored states and both write a transition (or notify) for them.

    ``rolled_back`` is told after an evaluation that rolled something back has committed (the configuration feed:
    this replica serves, and streams, the off variant at once instead of at its next poll).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        environments: Sequence[str],
        clock: Clock,
        notifications: Callable[[], NotificationConfig],
        window_size: timedelta,
        metrics: ControlPlaneMetrics | None = None,
        prometheus: PrometheusSource | None = None,
        rolled_back: Callable[[], None] | None = None,
    ) -> None:
        self._factory = factory
        self._environments = environments
        self._clock = clock
        self._notifications = notifications
        self._window_size = window_size
        self._metrics = metrics
        self._prometheus = prometheus
        self.rolled_back = rolled_back
        self.cache = EvaluationCache()
        self._lock = threading.Lock()

    def __call__(self, reads: Reads | None = EVERY_RULE) -> GuardedEvaluation:
        """Evaluate the rules that read ``reads`` (every rule by default: the tick), after any evaluation in flight."""
        with self._lock:
            evaluation = evaluate_alert_rules(
                self._factory,
                environments=self._environments,
                clock=self._clock,
                notifications=self._notifications,
                metrics=self._metrics,
                window_size=self._window_size,
                cache=self.cache,
                prometheus=self._prometheus,
                only=concerning(reads),
            )
        if evaluation.rollbacks and self.rolled_back is not None:
            self.rolled_back()
        return evaluation
