"""Rollout steps told through the notification routes: the ``StepAnnouncer`` rollouts are handed.

    rollouts (operate_rollout, tick_rollout) --RolloutStep--> NotificationAnnouncer --AlertEvent--> the outbox

A workflow, as rollouts and notifications are siblings that must not import each other: this module asks one for
its steps and hands them to the other. A rollback by hand is told twice: as its step (a change on the timeline) and
as a ``rollback`` page (``rollback_page``), the way a guard's automatic rollback reaches on-call, so undoing a
release by hand wakes the same people as the control plane undoing it.

Steps are written to the outbox in the operation's own transaction, so a
step is told exactly when the change it tells of is committed, and the delivery job sends it afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy.orm import Session

from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.messages import ROLLOUT_RULE, AlertEvent
from controlplane.notifications.service import count_silenced_on_commit, enqueue_notifications
from controlplane.rollouts.steps import RolloutStep, StepAnnouncer, StepKind

__all__ = ["NotificationAnnouncer", "dependencies", "rollback_page", "step_event", "step_events"]


def _step_details(step: RolloutStep) -> dict[str, Any]:
    """Who moved the rollout, why, and where it left it: what every event of a step carries."""
    return {
        "actor": step.actor,
        "reason": step.reason,
        "stage": step.stage,
        "stage_count": step.stage_count,
        "percentage": step.percentage,
        "previous_percentage": step.previous_percentage,
        "segment": step.segment,
    }


def step_event(step: RolloutStep) -> AlertEvent:
    """A rollout step as the notification routes, silences and receivers take it."""
    said = f": {step.reason}" if step.reason else ""
    return AlertEvent(
        kind=step.kind.value,
        rule=ROLLOUT_RULE,
        pipeline=step.pipeline,
        environment=step.environment,
        severity=step.severity,
        summary=step.summary,
        description=f"by {step.actor}{said}",
        at=step.at,
        flag=step.flag,
        key=step.key,
        details=_step_details(step) | {"forced": step.forced},
    )


def rollback_page(step: RolloutStep) -> AlertEvent:
    """A rollback by an operator as on-call hears a guard's rollback: a ``rollback`` alert event at ``page``."""
    said = f": {step.reason}" if step.reason else ""
    where = f" ({step.segment})" if step.segment else ""
    return AlertEvent(
        kind="rollback",
        rule=ROLLOUT_RULE,
        pipeline=step.pipeline,
        environment=step.environment,
        severity="page",
        summary=f"{step.flag} rolled back in {step.environment}{where} by {step.actor}{said}",
        description=f"rolled back by hand by {step.actor}{said}; {step.summary}",
        at=step.at,
        flag=step.flag,
        value=step.percentage,
        details=_step_details(step),
    )


def step_events(steps: Sequence[RolloutStep]) -> list[AlertEvent]:
    """What the steps tell: each as itself, and a rollback by hand also as a page."""
    events = []
    for step in steps:
        events.append(step_event(step))
        if step.kind is StepKind.ROLLED_BACK:
            events.append(rollback_page(step))
    return events


class NotificationAnnouncer:
    """Writes each rollout step to the notification outbox, routed by its severity and kind; silenced ones are
    counted in ``controlplane_notifications_total`` once the transaction commits."""

    def __init__(self, config: Callable[[], NotificationConfig], metrics: ControlPlaneMetrics | None = None) -> None:
        self._config = config
        self._metrics = metrics

    def announce(self, session: Session, steps: Sequence[RolloutStep], *, now: datetime) -> None:
        """Record the steps for every receiver their routes pick (silenced ones as silenced)."""
        created = enqueue_notifications(session, self._config(), step_events(steps), now=now)
        count_silenced_on_commit(session, self._metrics, created)


def provide_announcer(state: State) -> StepAnnouncer:
    """The announcer over the notification configuration the app loaded, counting in the app's metrics."""
    return NotificationAnnouncer(state.notification_config, state.metrics)


dependencies = {"announcer": Provide(provide_announcer, sync_to_thread=False)}
