"""The Alertmanager webhook (`operator`): a firing alert labelled with a flag and an environment rolls that rollout
back through the operators' own path, once; each alert of the notification is answered with what was done. An alert
whose `rule` label names a shadow rule (``mode: shadow``) rolls nothing back; one naming a flag an incident override
holds in that environment is held back as the control plane's own guards are (``guarding.rollback``).

Where the plan of that environment runs per segment (``per:``), the alert must name the segment: its `rule` label is a
guard the definitions loader scoped to one segment (the stored rule's ``segment`` says which flag, environment and
segment), or it carries a label of the plan's attribute (``queue="sales"``, a hand-written rule grouped by it). Only
that segment is rolled back; an alert naming none is refused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import partial

from litestar import Controller, post
from litestar.params import JSONBody
from sqlalchemy.orm import Session

from controlplane.api.dependencies import Now, ProcessMetrics, ProcessSettings, Work
from controlplane.api.roles import Role
from controlplane.auth.dependencies import TokenPrincipal
from controlplane.catalog.rules import Rule
from controlplane.catalog.service import load_rules
from controlplane.errors import DomainError, InvalidInput
from controlplane.flags import service as flag_service
from controlplane.flags.incidents import undo_command
from controlplane.flags.models import FlagIncident
from controlplane.guarding.rollback import RollbackDone, hold_for_incident, roll_back_as
from controlplane.guarding.schemas import AlertmanagerAlert, AlertmanagerPayload, WebhookOutcome
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.dependencies import CurrentNotificationConfig
from controlplane.notifications.messages import AlertEvent
from controlplane.notifications.service import enqueue_notifications
from controlplane.rollouts.controller import Gates
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.operations import RolloutTarget
from controlplane.rollouts.schemas import RolloutStatus
from controlplane.rollouts.segments import SegmentRef
from controlplane.rollouts.stages import RolloutState
from controlplane.rollouts.status import rollout_status

__all__ = ["AlertmanagerController", "handle_alertmanager"]

#: Alertmanager's usual severity labels onto ours, so routes by severity catch them.
_ALERTMANAGER_SEVERITY = {"critical": "page", "page": "page", "warning": "ticket", "ticket": "ticket", "info": "info"}


def handle_alertmanager(
    session: Session,
    *,
    payload: AlertmanagerPayload,
    actor: str,
    environments: Sequence[str],
    now: datetime,
    notifications: NotificationConfig,
    gates: GateReader,
) -> tuple[list[WebhookOutcome], list[RollbackDone]]:
    """Roll back the rollouts that firing Alertmanager alerts name by their `flag` and `environment` labels.

    Idempotent: Alertmanager re-sends whole groups, and a rollout already rolled back is left as it is.
    """
    outcomes: list[WebhookOutcome] = []
    done: list[RollbackDone] = []
    events: list[AlertEvent] = []
    rules: dict[str, Rule] | None = None  # the stored rules by name, read once at the first alert naming a rule
    overrides: dict[tuple[str, str], FlagIncident] | None = None  # incidents in force, read once when needed
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "")
        flag, environment = alert.labels.get("flag"), alert.labels.get("environment")

        def said(
            action: str, detail: str = "", alert: AlertmanagerAlert = alert, segment: SegmentRef | None = None
        ) -> WebhookOutcome:
            return WebhookOutcome(
                fingerprint=alert.fingerprint,
                alertname=alert.labels.get("alertname", ""),
                action=action,
                flag=alert.labels.get("flag"),
                environment=alert.labels.get("environment"),
                detail=detail,
                segment=None if segment is None else str(segment),
            )

        segment: SegmentRef | None = None  # the segment of a plan run per segment the alert is about
        if alert.status != "firing":
            outcomes.append(said("ignored_resolved"))
            continue
        if not flag or not environment:
            outcomes.append(said("ignored_unlabelled", "the alert has no `flag` and `environment` labels"))
            continue
        rule = alert.labels.get("rule")
        stored: Rule | None = None
        if rule:
            if rules is None:
                rules = {item.name: item for item in load_rules(session)}
            stored = rules.get(rule)
            if stored is not None and stored.shadow:
                outcomes.append(said("shadow_guard", f"rule `{rule}` is in shadow mode: watched, never rolls back"))
                continue
            if stored is not None and stored.confidence is not None:
                # Prometheus compares the plain value, which noise crosses: rolling back on it would undo the test.
                outcomes.append(
                    said(
                        "sequential_guard",
                        f"rule `{rule}` is decided {stored.sequential_condition()} by the control plane, which rolls "
                        "back when its test shows the breach; Prometheus's alert compares the plain value and does not",
                    )
                )
                continue
        scope = stored.segment if rule and stored is not None else None
        if scope is not None and (scope.flag, scope.environment) != (flag, environment):
            outcomes.append(
                said(
                    "refused",
                    f"rule `{rule}` guards `{scope.flag}` in {scope.environment} (segment {scope}), not `{flag}` in "
                    f"{environment}",
                )
            )
            continue
        segment = None if scope is None else SegmentRef(scope.attribute, scope.value)
        try:
            status = rollout_status(
                session, target=RolloutTarget(flag, environment), environments=environments, now=now, gates=gates
            )
            if status.segments and segment is None:
                segment = _labelled_segment(status, alert.labels)
            if segment is not None:
                # A plan run per segment: the alert's segment is the rollout it is about.
                status = rollout_status(
                    session,
                    target=RolloutTarget(flag, environment, segment),
                    environments=environments,
                    now=now,
                    gates=gates,
                )
        except DomainError as error:
            outcomes.append(said("refused", str(error), segment=segment))
            continue
        if status.segments and segment is None:
            attribute = _segment_attribute(status)
            outcomes.append(
                said(
                    "refused",
                    f"the rollout of `{flag}` in {environment} runs per `{attribute}` and the alert names no segment: "
                    f"neither its `rule` is a guard scoped to one nor does it carry a `{attribute}` label",
                )
            )
            continue
        if status.state is RolloutState.ROLLED_BACK:
            outcomes.append(said("already_rolled_back", segment=segment))
            continue
        if status.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
            outcomes.append(
                said(
                    "no_rollout",
                    f"the rollout is {status.state.value}: only a running or paused rollout is rolled back by an alert",
                    segment=segment,
                )
            )
            continue
        if alert.labels.get("guard") == "true" and rule:
            # A rendered guard alert is marked per environment, not per stage: act only while its rule guards the
            # stage the rollout is at, as the control plane's own evaluation does.
            stage_guards = [guard.rule for guard in status.guards]
            if rule not in stage_guards:
                outcomes.append(
                    said(
                        "not_a_stage_guard",
                        f"rule `{rule}` does not guard stage {status.stage_index + 1} of this rollout "
                        f"(its guards: {', '.join(stage_guards) or 'none'})",
                        segment=segment,
                    )
                )
                continue
        words = alert.annotations.get("description") or alert.annotations.get("summary") or ""
        reason = (
            f"Alertmanager alert {name} firing since {alert.startsAt} (fingerprint {alert.fingerprint}, "
            f"group {payload.groupKey}): {words} {alert.generatorURL}".strip()
        )
        if overrides is None:
            overrides = flag_service.active_incidents(session)
        incident = overrides.get((flag, environment))
        if incident is not None:
            held = hold_for_incident(
                session,
                incident,
                environment,
                rule=name or "alertmanager",
                trigger="alertmanager",
                why=reason,
                pipeline=alert.labels.get("pipeline", "alertmanager"),
                severity=_ALERTMANAGER_SEVERITY.get(alert.labels.get("severity", "page"), "page"),
                now=now,
            )
            if held is not None:
                events.append(held)
            outcomes.append(
                said(
                    "held_by_incident",
                    f"incident {incident.id} serves `{incident.variant}` to everyone here; the rollback waits for "
                    f"its undo ({undo_command(incident.id)})",
                )
            )
            continue
        refusal = roll_back_as(session, flag, environment, reason, actor, environments, now, gates, segment)
        if refusal is not None:
            outcomes.append(said("refused", str(refusal), segment=segment))
            continue
        outcomes.append(said("rolled_back", reason, segment=segment))
        done.append(
            RollbackDone(
                flag=flag,
                environment=environment,
                rule=name,
                trigger="alertmanager",
                segment=None if segment is None else str(segment),
            )
        )
        events.append(
            AlertEvent(
                kind="rollback",
                rule=name or "alertmanager",
                pipeline=alert.labels.get("pipeline", "alertmanager"),
                environment=environment,
                severity=_ALERTMANAGER_SEVERITY.get(alert.labels.get("severity", "page"), "page"),
                summary=f"{flag} rolled back in {RolloutTarget(flag, environment, segment)} by Alertmanager alert "
                f"{name}",
                description=reason,
                at=now,
                flag=flag,
                runbook_url=alert.annotations.get("runbook_url", ""),
                details={"fingerprint": alert.fingerprint, "labels": dict(alert.labels)},
            )
        )
    if events:
        enqueue_notifications(session, notifications, events, now=now)
    return outcomes, done


def _segment_attribute(status: RolloutStatus) -> str:
    """The attribute a plan run per segment is run per, from its status's segments (``queue=support``)."""
    return status.segments[0].segment.partition("=")[0]


def _labelled_segment(status: RolloutStatus, labels: Mapping[str, str]) -> SegmentRef | None:
    """The segment a hand-written alert names by a label of the plan's attribute (``queue="sales"``), if any."""
    attribute = _segment_attribute(status)
    value = labels.get(attribute)
    return None if not value else SegmentRef(attribute, value)


class AlertmanagerController(Controller):
    """Alertmanager's webhook receiver: a firing alert labelled with a flag and environment rolls that flag back."""

    path = "/alertmanager"
    tags = ["alerting"]

    @post("/webhook", opt={"role": Role.OPERATOR}, status_code=200, summary="Alertmanager webhook (version 4)")
    async def webhook(
        self,
        data: JSONBody[AlertmanagerPayload],
        uow: Work,
        principal: TokenPrincipal,
        now: Now,
        settings: ProcessSettings,
        gates: Gates,
        metrics: ProcessMetrics,
        notification_config: CurrentNotificationConfig,
    ) -> list[WebhookOutcome]:
        """Answer 2xx once handled (Alertmanager retries 5xx only); each alert says what was done."""
        if data.version != "4":
            raise InvalidInput(
                "invalid-webhook", f"Alertmanager webhook version {data.version!r} is not supported; expected 4"
            )
        outcomes, done = await uow.write(
            partial(
                handle_alertmanager,
                payload=data,
                actor=principal.name,
                environments=settings.environments,
                now=now,
                notifications=notification_config,
                gates=gates,
            )
        )
        for rollback in done:
            metrics.rollbacks.labels(rollback.flag, rollback.environment, rollback.trigger).inc()
        return outcomes
