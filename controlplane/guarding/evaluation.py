"""One evaluation tick with its guards: alerting plans (measure and step every alert), guarding rolls back the
guarded rollouts whose guard breaches, and alerting applies the plan with the rollbacks' notifications.

Everything one tick writes (states, transitions, rollbacks and the notifications they cause) commits in one
transaction (the notifications are an outbox drained by the delivery job), so nothing is half-done after a crash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from controlplane.alerting.evaluation import (
    Evaluation,
    EvaluationCache,
    EvaluationPlan,
    apply_evaluation,
    current_rules,
    plan_evaluation,
    remember,
)
from controlplane.alerting.prometheus import PrometheusSource, read_prometheus_rules
from controlplane.catalog.rules import WINDOW_SIZE
from controlplane.guarding.readings import AlertGateReader
from controlplane.guarding.rollback import HeldRollback, RollbackDone, roll_back_breaching
from controlplane.notifications.config import NotificationConfig
from controlplane.rollouts.service import GuardedRollout, guarded_rollouts

__all__ = ["GuardedEvaluation", "apply_guarded_evaluation", "evaluate_alerts", "settle_quiet_plan"]


@dataclass(slots=True)
class GuardedEvaluation(Evaluation):
    """What one evaluation tick did: alerting's counts and notifications, the rollbacks its guards made and those
    incident overrides held back."""

    rollbacks: list[RollbackDone] = field(default_factory=list)
    held: list[HeldRollback] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def apply_guarded_evaluation(
    session: Session,
    plan: EvaluationPlan,
    guarded: Sequence[GuardedRollout],
    *,
    environments: Sequence[str],
    now: datetime,
    notifications: NotificationConfig,
    cache: EvaluationCache | None = None,
) -> GuardedEvaluation:
    """Roll back the ``guarded`` rollouts (read with the plan) that the plan's breaching alerts guard, then write the
    plan; every notification of the tick goes out together."""
    rollbacks = roll_back_breaching(
        session, plan.breaching, guarded, environments=environments, now=now, gates=AlertGateReader()
    )
    evaluation = apply_evaluation(
        session, plan, now=now, notifications=notifications, cache=cache, also_notify=rollbacks.events
    )
    return _guarded(evaluation, rollbacks=rollbacks.done, held=rollbacks.held, errors=rollbacks.errors)


def settle_quiet_plan(
    plan: EvaluationPlan, *, now: datetime, cache: EvaluationCache | None = None
) -> GuardedEvaluation:
    """What applying a quiet plan (``plan.quiet``: nothing to write, tell or roll back) comes to, without a
    transaction: the cache remembers the states, and the plan's counts are the evaluation's."""
    remember(plan, cache, now=now)
    return _guarded(plan.outcome)


def _guarded(
    evaluation: Evaluation,
    *,
    rollbacks: list[RollbackDone] | None = None,
    held: list[HeldRollback] | None = None,
    errors: list[str] | None = None,
) -> GuardedEvaluation:
    counted = {item.name: getattr(evaluation, item.name) for item in fields(Evaluation)}
    return GuardedEvaluation(**counted, rollbacks=rollbacks or [], held=held or [], errors=errors or [])


def evaluate_alerts(
    session: Session,
    *,
    environments: Sequence[str],
    now: datetime,
    notifications: NotificationConfig,
    window_size: timedelta = WINDOW_SIZE,
    cache: EvaluationCache | None = None,
    prometheus: PrometheusSource | None = None,
) -> GuardedEvaluation:
    """Plan and apply one evaluation in one session (the job plans with a reader, then writes briefly; it also
    queries Prometheus with no session open, where this asks it inside the session)."""
    readings = read_prometheus_rules(current_rules(session, cache), environments, now, prometheus)
    plan = plan_evaluation(
        session, environments=environments, now=now, window_size=window_size, cache=cache, readings=readings
    )
    return apply_guarded_evaluation(
        session,
        plan,
        guarded_rollouts(session),
        environments=environments,
        now=now,
        notifications=notifications,
        cache=cache,
    )
