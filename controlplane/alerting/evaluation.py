"""Use cases of alerting: evaluate every rule over the windows, record state changes, roll guarded flags back.

Rules with ``source: prometheus`` are measured from Prometheus before planning (``alerting.prometheus``), with no
database session open; the plan reads those measurements like the windows.

One evaluation runs in one transaction: states, transitions, rollbacks and the notifications they cause commit
together (the notifications are an outbox drained by the delivery job), so nothing is half-done after a crash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, insert, literal_column, select, tuple_, update
from sqlalchemy.orm import Session

from controlplane.alerting.models import AlertStateRow, AlertTransition
from controlplane.alerting.prometheus import PrometheusSource, QueryReadings, read_prometheus_rules
from controlplane.alerting.rules import (
    AlertState,
    AlertStatus,
    Measurement,
    Series,
    TailEvent,
    measure,
    step,
    window_cutoff,
)
from controlplane.alerting.schemas import AlertmanagerAlert, AlertmanagerPayload, WebhookOutcome
from controlplane.catalog.models import PipelineCatalog
from controlplane.catalog.rules import WINDOW_SIZE, Rule, RuleKind, RuleSource, rule_from_json
from controlplane.catalog.service import load_rules
from controlplane.errors import DomainError
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.messages import AlertEvent
from controlplane.notifications.models import Notification
from controlplane.notifications.service import enqueue_notifications
from controlplane.rollouts import service as rollout_service
from controlplane.rollouts.schemas import RolloutOperation
from controlplane.rollouts.service import Operation, RolloutTarget
from controlplane.rollouts.stages import RolloutState
from controlplane.telemetry.models import EventTail, TelemetryWindow

__all__ = [
    "SYSTEM_ACTOR",
    "Evaluation",
    "EvaluationCache",
    "EvaluationPlan",
    "RollbackDone",
    "apply_evaluation",
    "current_rules",
    "delete_old_transitions",
    "evaluate_alerts",
    "handle_alertmanager",
    "list_alert_states",
    "list_transitions",
    "plan_evaluation",
]

#: The audit actor of what the control plane does by itself.
SYSTEM_ACTOR = "controlplane"


@dataclass(frozen=True, slots=True)
class RollbackDone:
    """A rollback the evaluation (or a webhook) performed."""

    flag: str
    environment: str
    rule: str
    trigger: str


@dataclass(slots=True)
class EvaluationCache:
    """What one evaluator (the leader's job) keeps between ticks, each part checked against the database.

    Parsed rules are reused while their pipeline's catalog row is unchanged; alert states are reused while the
    table's (row count, newest change) is what this evaluator last wrote. Anything else reloads.
    """

    rules: dict[str, tuple[datetime, list[Rule]]] = field(default_factory=dict)
    states: dict[tuple[str, str], tuple[str, AlertStatus]] | None = None
    fingerprint: tuple[int, datetime | None] | None = None


def _rules(session: Session, cache: EvaluationCache | None) -> list[Rule]:
    if cache is None:
        return load_rules(session)
    rows = session.execute(select(PipelineCatalog.pipeline, PipelineCatalog.updated_at))
    current: dict[str, datetime] = {pipeline: updated_at for pipeline, updated_at in rows}  # noqa: C416 - Row pairs
    for pipeline in list(cache.rules):
        if pipeline not in current:
            del cache.rules[pipeline]
    for pipeline, updated_at in current.items():
        known = cache.rules.get(pipeline)
        if known is None or known[0] != updated_at:
            row = session.get(PipelineCatalog, pipeline)
            assert row is not None
            cache.rules[pipeline] = (updated_at, [rule_from_json(pipeline, item) for item in row.rules])
    return [rule for pipeline in sorted(cache.rules) for rule in cache.rules[pipeline][1]]


def current_rules(session: Session, cache: EvaluationCache | None = None) -> list[Rule]:
    """Every applied rule, parsed again only for pipelines whose catalog changed since ``cache`` last saw them."""
    return _rules(session, cache)


def _fingerprint(session: Session) -> tuple[int, datetime | None]:
    count, newest = session.execute(select(func.count(), func.max(AlertStateRow.evaluated_at))).one()
    return int(count), newest


@dataclass(slots=True)
class Evaluation:
    """What one evaluation did."""

    rules: int = 0
    alerts: int = 0
    transitions: int = 0
    firing: int = 0
    rollbacks: list[RollbackDone] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _fetch_series(
    session: Session, rules: Sequence[Rule], now: datetime, window_size: timedelta
) -> dict[tuple[timedelta, str, str, str], list[Series]]:
    """Sum windows per series in SQL: (window, pipeline, event, environment) -> series summed over that window.

    One query per event type reads its longest rule window once (an index range scan), summing rows into bands
    between the shorter windows' cutoffs; each window's totals are then the sum of the bands inside it.
    """
    windows: dict[tuple[str, str], set[timedelta]] = defaultdict(set)
    for rule in rules:
        if rule.source is RuleSource.EVENTS and rule.kind is not RuleKind.STREAK:
            windows[(rule.pipeline, rule.event)].add(rule.window)
    found: dict[tuple[timedelta, str, str, str], list[Series]] = {}
    labels_cache: dict[str, Mapping[str, str]] = {}
    w = TelemetryWindow
    for (pipeline, event), lengths in sorted(windows.items()):
        ordered = sorted(lengths)  # shortest first: band 0 is inside every window
        cutoffs = [window_cutoff(now, length, window_size) for length in ordered]
        group: list[Any] = [w.environment, w.variant, w.outcome, w.labels_key]
        if len(cutoffs) > 1:
            band: Any = case(
                *((w.window_start >= cutoff, index) for index, cutoff in enumerate(cutoffs[:-1])),
                else_=len(cutoffs) - 1,
            )
            group.append(band)
        else:
            band = literal_column("0")
        rows = session.execute(
            select(
                w.environment,
                w.variant,
                w.outcome,
                w.labels_key,
                band,
                func.sum(w.count),
                func.sum(w.value_count),
                func.sum(w.value_sum),
            )
            .where(w.pipeline == pipeline, w.event == event, w.window_start >= cutoffs[-1], w.window_start <= now)
            .group_by(*group)
        )
        # (environment, variant, outcome, labels_key) -> per band [count, value_count, value_sum]
        banded: dict[tuple[str, str, str, str], list[list[float]]] = {}
        for environment, variant, outcome, key, index, count, value_count, value_sum in rows:
            sums = banded.setdefault((environment, variant, outcome, key), [[0, 0, 0.0] for _ in ordered])
            sums[int(index)] = [int(count or 0), int(value_count or 0), float(value_sum or 0.0)]
        for (environment, variant, outcome, key), sums in banded.items():
            labels = labels_cache.get(key)
            if labels is None:
                labels = labels_cache[key] = json.loads(key)
            count = value_count = 0
            value_sum = 0.0
            for position, length in enumerate(ordered):
                count += int(sums[position][0])
                value_count += int(sums[position][1])
                value_sum += sums[position][2]
                if not count:
                    continue
                found.setdefault((length, pipeline, event, environment), []).append(
                    Series(
                        start=cutoffs[position],
                        outcome=outcome,
                        variant=variant,
                        labels=labels,
                        count=count,
                        value_count=value_count,
                        value_sum=value_sum,
                    )
                )
    return found


def _fetch_tails(session: Session, rules: Sequence[Rule]) -> dict[tuple[str, str, str], list[TailEvent]]:
    pairs = sorted({(rule.pipeline, rule.event) for rule in rules if rule.kind is RuleKind.STREAK})
    if not pairs:
        return {}
    tails: dict[tuple[str, str, str], list[TailEvent]] = {}
    for row in session.scalars(select(EventTail).where(tuple_(EventTail.pipeline, EventTail.event).in_(pairs))):
        tails[(row.pipeline, row.event, row.environment)] = [
            TailEvent(at=datetime.fromisoformat(at), outcome=outcome, variant=variant, labels=labels)
            for at, outcome, variant, labels in row.events
        ]
    return tails


_STATE_COLUMNS = (
    AlertStateRow.rule,
    AlertStateRow.environment,
    AlertStateRow.pipeline,
    AlertStateRow.state,
    AlertStateRow.since,
    AlertStateRow.active_since,
    AlertStateRow.keep_firing_since,
    AlertStateRow.last_breach_at,
    AlertStateRow.value,
    AlertStateRow.samples,
    AlertStateRow.detail,
)


def _stored_states(session: Session) -> dict[tuple[str, str], tuple[str, AlertStatus]]:
    """Every stored alert state as (pipeline, status), read as plain rows (thousands per tick: no ORM objects)."""
    stored = {}
    for rule, environment, pipeline, state, since, active, keep, breach, value, samples, detail in session.execute(
        select(*_STATE_COLUMNS)
    ):
        stored[(rule, environment)] = (
            pipeline,
            AlertStatus(
                state=AlertState(state),
                since=since,
                active_since=active,
                keep_firing_since=keep,
                last_breach_at=breach,
                value=value,
                samples=samples,
                detail=detail,
            ),
        )
    return stored


def _state_values(rule: Rule, environment: str, status: AlertStatus, now: datetime) -> dict[str, Any]:
    return {
        "rule": rule.name,
        "environment": environment,
        "pipeline": rule.pipeline,
        "state": status.state.value,
        "since": status.since,
        "active_since": status.active_since,
        "keep_firing_since": status.keep_firing_since,
        "last_breach_at": status.last_breach_at,
        "value": status.value,
        "samples": status.samples,
        "detail": status.detail,
        # Rows are written only when something in them changes, so a quiet tick over thousands of alerts writes
        # nothing; `evaluated_at` is therefore when the alert last changed.
        "evaluated_at": now,
    }


def _words(rule: Rule, measurement: Measurement, environment: str) -> str:
    value = "no value" if measurement.value is None else f"{measurement.value:.6g}"
    return (
        f"{rule.name} in {environment}: measured {value} ({measurement.detail}; {measurement.samples} samples) "
        f"against {rule.condition()}"
    )


def _event(
    rule: Rule, kind: str, environment: str, measurement: Measurement, now: datetime, **details: Any
) -> AlertEvent:
    value = "no value" if measurement.value is None else f"{measurement.value:.4g}"
    headline = {
        "trigger": f"{rule.name} firing in {environment}: {value} {rule.op.value} {rule.threshold}",
        "resolve": f"{rule.name} resolved in {environment}: {value}",
        "rollback": f"{rule.flag or 'flag'} rolled back in {environment} by {rule.name}: {value} "
        f"{rule.op.value} {rule.threshold}",
    }[kind]
    return AlertEvent(
        kind=kind,
        rule=rule.name,
        pipeline=rule.pipeline,
        environment=environment,
        severity=rule.severity.value,
        summary=headline,
        description=_words(rule, measurement, environment),
        at=now,
        flag=details.pop("flag", rule.flag),
        value=measurement.value,
        threshold=rule.threshold,
        op=rule.op.value,
        window_seconds=rule.window.total_seconds(),
        runbook_url=rule.runbook_url,
        details={"samples": measurement.samples, "detail": measurement.detail, **details},
    )


@dataclass(slots=True)
class EvaluationPlan:
    """What one evaluation decided, before anything is written: computed without the write lock."""

    outcome: Evaluation
    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    transitions: list[dict[str, Any]]
    events: list[AlertEvent]
    breaching: list[tuple[Rule, str, Measurement]]
    guarded: list[rollout_service.GuardedRollout]
    stored: dict[tuple[str, str], tuple[str, AlertStatus]]
    fingerprint: tuple[int, datetime | None] | None


def plan_evaluation(
    session: Session,
    *,
    environments: Sequence[str],
    now: datetime,
    window_size: timedelta = WINDOW_SIZE,
    cache: EvaluationCache | None = None,
    readings: QueryReadings | None = None,
) -> EvaluationPlan:
    """Read the windows, tails and states, and measure and step every alert; writes nothing (a reader is enough).

    Prometheus rules take their measurements from ``readings`` (taken beforehand by ``read_prometheus_rules``);
    without readings there is no Prometheus to ask, and they lack data saying so.
    Only the leader's evaluator writes alert states, so what it read here is still true when the plan is applied.
    """
    rules = _rules(session, cache)
    if readings is None:
        readings = read_prometheus_rules(rules, environments, now, None)
    outcome = Evaluation(rules=len(rules))
    series = _fetch_series(session, rules, now, window_size)
    tails = _fetch_tails(session, rules)
    fingerprint = _fingerprint(session) if cache is not None else None
    if cache is not None and cache.states is not None and cache.fingerprint == fingerprint:
        stored = dict(cache.states)  # a copy: a tick that fails half-way must not leave the cache half-updated
    else:
        stored = _stored_states(session)
    plan = EvaluationPlan(
        outcome=outcome,
        inserts=[],
        updates=[],
        transitions=[],
        events=[],
        breaching=[],
        guarded=rollout_service.guarded_rollouts(session),
        stored=stored,
        fingerprint=fingerprint,
    )
    nothing: dict[str, Measurement] = {}
    for rule in rules:
        for environment in rule.environments or environments:
            outcome.alerts += 1
            if rule.source is RuleSource.PROMETHEUS:
                _step_alert(plan, rule, environment, readings.measurement(rule, environment), now)
                continue
            windows = series.get((rule.window, rule.pipeline, rule.event, environment), ())
            recent = tails.get((rule.pipeline, rule.event, environment), ())
            if windows or recent:
                measurement = measure(rule, windows, recent, now, window_size=window_size)
            else:
                # No data in this environment: the same measurement for every such environment of the rule.
                measurement = nothing.get(rule.name) or nothing.setdefault(
                    rule.name, measure(rule, (), (), now, window_size=window_size)
                )
            _step_alert(plan, rule, environment, measurement, now)
    return plan


def _step_alert(plan: EvaluationPlan, rule: Rule, environment: str, measurement: Measurement, now: datetime) -> None:
    """Step one alert and note what to write and whom to tell."""
    found = plan.stored.get((rule.name, environment))
    # A rule name that moved to another pipeline starts afresh.
    previous = found[1] if found is not None and found[0] == rule.pipeline else None
    status = step(rule, previous, measurement, now)
    if found is None:
        plan.inserts.append(_state_values(rule, environment, status, now))
    elif status != previous:
        plan.updates.append(_state_values(rule, environment, status, now))
    if found is None or status != previous:
        plan.stored[(rule.name, environment)] = (rule.pipeline, status)
    before = previous.state if previous is not None else AlertState.INACTIVE
    if status.state is AlertState.FIRING:
        plan.outcome.firing += 1
        if measurement.breached:
            plan.breaching.append((rule, environment, measurement))
    if status.state is before and previous is not None:
        return
    plan.outcome.transitions += 1
    plan.transitions.append(
        {
            "rule": rule.name,
            "pipeline": rule.pipeline,
            "environment": environment,
            "from_state": previous.state.value if previous is not None else "new",
            "to_state": status.state.value,
            "at": now,
            "value": measurement.value,
            "op": rule.op.value,
            "threshold": rule.threshold,
            "window_seconds": rule.window.total_seconds(),
            "samples": measurement.samples,
            "condition": rule.condition(),
            "detail": measurement.detail,
        }
    )
    if status.state is AlertState.FIRING and before is not AlertState.FIRING:
        plan.events.append(_event(rule, "trigger", environment, measurement, now))
    elif before is AlertState.FIRING and status.state is not AlertState.FIRING:
        plan.events.append(_event(rule, "resolve", environment, measurement, now))


def apply_evaluation(
    session: Session,
    plan: EvaluationPlan,
    *,
    environments: Sequence[str],
    now: datetime,
    notifications: NotificationConfig,
    cache: EvaluationCache | None = None,
) -> Evaluation:
    """Write a plan: states, transitions, rollbacks of guarded rollouts, and the notifications they cause."""
    outcome, events = plan.outcome, list(plan.events)
    if plan.inserts:
        session.execute(insert(AlertStateRow), plan.inserts)
    if plan.updates:
        session.execute(update(AlertStateRow), plan.updates)
    if plan.transitions:
        session.execute(insert(AlertTransition), plan.transitions)
    if cache is not None and plan.fingerprint is not None:
        # What the table holds once this transaction commits; a failed commit shows as a mismatch next tick.
        written = bool(plan.inserts or plan.updates)
        cache.states = plan.stored
        cache.fingerprint = (plan.fingerprint[0] + len(plan.inserts), now if written else plan.fingerprint[1])
    handled: set[tuple[str, str]] = set()
    for rule, environment, measurement in plan.breaching:
        for rollout in plan.guarded:
            if rollout.environment != environment or rule.name not in rollout.guards or not rollout.auto_rollback:
                continue
            if (rollout.flag, environment) in handled:
                continue
            handled.add((rollout.flag, environment))
            # The rollout may have changed since the plan was read: the operators' path re-reads and refuses.
            done = _roll_back(session, rule, rollout.flag, environment, measurement, now, environments, outcome)
            if done:
                events.append(_event(rule, "rollback", environment, measurement, now, flag=rollout.flag))
    if events:
        outcome.notifications = enqueue_notifications(session, notifications, events, now=now)
    return outcome


def evaluate_alerts(
    session: Session,
    *,
    environments: Sequence[str],
    now: datetime,
    notifications: NotificationConfig,
    window_size: timedelta = WINDOW_SIZE,
    cache: EvaluationCache | None = None,
    prometheus: PrometheusSource | None = None,
) -> Evaluation:
    """Plan and apply one evaluation in one session (the job plans with a reader, then writes briefly; it also
    queries Prometheus with no session open, where this asks it inside the session)."""
    readings = read_prometheus_rules(_rules(session, cache), environments, now, prometheus)
    plan = plan_evaluation(
        session, environments=environments, now=now, window_size=window_size, cache=cache, readings=readings
    )
    return apply_evaluation(session, plan, environments=environments, now=now, notifications=notifications, cache=cache)


def _roll_back(
    session: Session,
    rule: Rule,
    flag: str,
    environment: str,
    measurement: Measurement,
    now: datetime,
    environments: Sequence[str],
    outcome: Evaluation,
) -> bool:
    """Roll one guarded rollout back through the operators' own path; a refusal is reported, never raised."""
    reason = f"automatic rollback: guard {_words(rule, measurement, environment)}"
    error = _roll_back_as(session, flag, environment, reason, SYSTEM_ACTOR, environments, now)
    if error is not None:
        outcome.errors.append(f"rollback of {flag} in {environment} refused: {error}")
        return False
    outcome.rollbacks.append(RollbackDone(flag=flag, environment=environment, rule=rule.name, trigger="guard"))
    return True


def _roll_back_as(
    session: Session,
    flag: str,
    environment: str,
    reason: str,
    actor: str,
    environments: Sequence[str],
    now: datetime,
) -> DomainError | None:
    """Roll a rollout back through the operators' own path, in a savepoint; the refusal, or None when done."""
    try:
        with session.begin_nested():
            rollout_service.operate_rollout(
                session,
                target=RolloutTarget(flag, environment),
                operation=Operation.ROLLBACK,
                body=RolloutOperation(reason=reason[:2000]),
                actor=actor,
                environments=environments,
                now=now,
            )
    except DomainError as error:
        return error
    return None


def list_alert_states(session: Session, *, state: str | None = None) -> list[AlertStateRow]:
    """Every alert's current state, firing first."""
    query = select(AlertStateRow).order_by(AlertStateRow.rule, AlertStateRow.environment)
    if state is not None:
        query = query.where(AlertStateRow.state == state)
    rows = list(session.scalars(query))
    order = {AlertState.FIRING.value: 0, AlertState.PENDING.value: 1, AlertState.INSUFFICIENT_DATA.value: 2}
    return sorted(rows, key=lambda row: order.get(row.state, 3))


def delete_old_transitions(session: Session, *, before: datetime) -> int:
    """Delete alert transitions older than ``before``, except each alert's newest one (how it came to its current
    state stays readable however long it has been in it). The audit log is never touched here."""
    newest = (
        select(func.max(AlertTransition.id))
        .group_by(AlertTransition.rule, AlertTransition.pipeline, AlertTransition.environment)
        .scalar_subquery()
    )
    result = session.execute(
        delete(AlertTransition).where(AlertTransition.at < before, AlertTransition.id.not_in(newest))
    )
    return int(getattr(result, "rowcount", 0) or 0)


def list_transitions(
    session: Session, *, rule: str | None, environment: str | None, limit: int
) -> list[AlertTransition]:
    """State changes, newest first."""
    query = select(AlertTransition).order_by(AlertTransition.id.desc()).limit(limit)
    if rule is not None:
        query = query.where(AlertTransition.rule == rule)
    if environment is not None:
        query = query.where(AlertTransition.environment == environment)
    return list(session.scalars(query))


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
) -> tuple[list[WebhookOutcome], list[RollbackDone]]:
    """Roll back the rollouts that firing Alertmanager alerts name by their `flag` and `environment` labels.

    Idempotent: Alertmanager re-sends whole groups, and a rollout already rolled back is left as it is.
    """
    outcomes: list[WebhookOutcome] = []
    done: list[RollbackDone] = []
    events: list[AlertEvent] = []
    for alert in payload.alerts:
        name = alert.labels.get("alertname", "")
        flag, environment = alert.labels.get("flag"), alert.labels.get("environment")

        def said(action: str, detail: str = "", alert: AlertmanagerAlert = alert) -> WebhookOutcome:
            return WebhookOutcome(
                fingerprint=alert.fingerprint,
                alertname=alert.labels.get("alertname", ""),
                action=action,
                flag=alert.labels.get("flag"),
                environment=alert.labels.get("environment"),
                detail=detail,
            )

        if alert.status != "firing":
            outcomes.append(said("ignored_resolved"))
            continue
        if not flag or not environment:
            outcomes.append(said("ignored_unlabelled", "the alert has no `flag` and `environment` labels"))
            continue
        try:
            status = rollout_service.rollout_status(
                session, target=RolloutTarget(flag, environment), environments=environments, now=now
            )
        except DomainError as error:
            outcomes.append(said("refused", str(error)))
            continue
        if status.state is RolloutState.ROLLED_BACK:
            outcomes.append(said("already_rolled_back"))
            continue
        if status.state not in (RolloutState.RUNNING, RolloutState.PAUSED):
            outcomes.append(
                said(
                    "no_rollout",
                    f"the rollout is {status.state.value}: only a running or paused rollout is rolled back by an alert",
                )
            )
            continue
        rule = alert.labels.get("rule")
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
                    )
                )
                continue
        words = alert.annotations.get("description") or alert.annotations.get("summary") or ""
        reason = (
            f"Alertmanager alert {name} firing since {alert.startsAt} (fingerprint {alert.fingerprint}, "
            f"group {payload.groupKey}): {words} {alert.generatorURL}".strip()
        )
        refusal = _roll_back_as(session, flag, environment, reason, actor, environments, now)
        if refusal is not None:
            outcomes.append(said("refused", str(refusal)))
            continue
        outcomes.append(said("rolled_back", reason))
        done.append(RollbackDone(flag=flag, environment=environment, rule=name, trigger="alertmanager"))
        events.append(
            AlertEvent(
                kind="rollback",
                rule=name or "alertmanager",
                pipeline=alert.labels.get("pipeline", "alertmanager"),
                environment=environment,
                severity=_ALERTMANAGER_SEVERITY.get(alert.labels.get("severity", "page"), "page"),
                summary=f"{flag} rolled back in {environment} by Alertmanager alert {name}",
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
