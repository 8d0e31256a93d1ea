"""Evaluating every rule over the windows: plan (measure and step each alert, reading only) then apply (write the
states and transitions that changed, and enqueue the notifications they cause).

Rules with ``source: prometheus`` are measured from Prometheus before planning (``alerting.prometheus``), with no
database session open; the plan reads those measurements like the windows. Rules with ``confidence`` also read
the windows they have not folded yet one by one, and carry their sequential statistic in the stored state
(``alerting.rules.assess``), so a new leader continues where the last one stopped. Rules with ``per_subject_cap``
read their summed and unfolded windows capped (``alerting.subjects``): each subject counted at most that many times.

What a firing guard does to a rollout is not decided here: the plan lists the alerts that fired and breached
(``EvaluationPlan.breaching``), and the guarding workflow (``controlplane.guarding.evaluation``) rolls rollouts back
and hands its own notifications to ``apply_evaluation``, so one evaluation commits in one transaction and each
receiver hears of it in one message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from controlplane.alerting.models import AlertStateRow, AlertTransition
from controlplane.alerting.prometheus import QueryReadings, read_prometheus_rules
from controlplane.alerting.queries import (
    StoredStates,
    fetch_populations,
    fetch_series,
    fetch_subjects,
    fetch_tails,
    fetch_windows,
    rule_tail,
    state_fingerprint,
    stored_states,
    subject_reads,
)
from controlplane.alerting.rules import AlertStatus, Measurement, assess, measure, step, unfolded_since
from controlplane.alerting.subjects import capped
from controlplane.catalog.models import PipelineCatalog
from controlplane.catalog.rules import WINDOW_SIZE, AlertState, Rule, RuleSource, rule_from_json
from controlplane.catalog.service import load_rules
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.messages import AlertEvent
from controlplane.notifications.models import Notification
from controlplane.notifications.service import enqueue_notifications

__all__ = [
    "Evaluation",
    "EvaluationCache",
    "EvaluationPlan",
    "alert_event",
    "apply_evaluation",
    "current_rules",
    "describe_measurement",
    "plan_evaluation",
    "remember",
]


@dataclass(slots=True)
class EvaluationCache:
    """What one evaluator (the leader's job) keeps between ticks, each part checked against the database.

    Parsed rules are reused while their pipeline's catalog row is unchanged; alert states are reused while the
    table's (row count, newest change) is what this evaluator last wrote. Anything else reloads.
    """

    rules: dict[str, tuple[datetime, list[Rule]]] = field(default_factory=dict)
    states: StoredStates | None = None
    fingerprint: tuple[int, datetime | None] | None = None


def current_rules(session: Session, cache: EvaluationCache | None = None) -> list[Rule]:
    """Every applied rule, parsed again only for pipelines whose catalog changed since ``cache`` last saw them."""
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


@dataclass(slots=True)
class Evaluation:
    """What one evaluation did."""

    rules: int = 0
    alerts: int = 0
    transitions: int = 0
    firing: int = 0
    notifications: list[Notification] = field(default_factory=list)


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
        "evidence": status.evidence.to_json() if status.evidence is not None else None,
        # Rows are written only when something in them changes, so a quiet tick over thousands of alerts writes
        # nothing; `evaluated_at` is therefore when the alert last changed.
        "evaluated_at": now,
    }


def describe_measurement(rule: Rule, measurement: Measurement, environment: str) -> str:
    """One sentence: what ``rule`` measured in ``environment`` against its condition (for messages and audits)."""
    value = "no value" if measurement.value is None else f"{measurement.value:.6g}"
    return (
        f"{rule.name} in {environment}: measured {value} ({measurement.detail}; {measurement.samples} samples) "
        f"against {rule.condition()}"
    )


def alert_event(
    rule: Rule, kind: str, environment: str, measurement: Measurement, now: datetime, *, flag: str | None = None
) -> AlertEvent:
    """What on-call hears when ``rule`` fires (``trigger``), resolves, or rolls ``flag`` back (``rollback``)."""
    value = "no value" if measurement.value is None else f"{measurement.value:.4g}"
    triggered = (
        f"{rule.name} in {environment}: sample ratio mismatch, its cohort comparison is not to be trusted"
        if measurement.mismatch
        else f"{rule.name} firing in {environment}: {value} {rule.op.value} {rule.threshold}"
    )
    headline = {
        "trigger": triggered,
        "resolve": f"{rule.name} resolved in {environment}: {value}",
        "rollback": f"{rule.flag or 'flag'} rolled back in {environment} by {rule.name}: {value} "
        f"{rule.op.value} {rule.threshold}",
    }[kind]
    return AlertEvent(
        kind=kind,
        rule=rule.name,
        pipeline=rule.pipeline,
        environment=environment,
        severity=rule.notified_severity.value,  # info for a shadow rule: watched, not trusted yet
        summary=headline,
        description=describe_measurement(rule, measurement, environment),
        at=now,
        flag=rule.flag if flag is None else flag,
        value=measurement.value,
        threshold=rule.threshold,
        op=rule.op.value,
        window_seconds=rule.window.total_seconds(),
        runbook_url=rule.runbook_url,
        details={"samples": measurement.samples, "detail": measurement.detail},
    )


@dataclass(slots=True)
class EvaluationPlan:
    """What one evaluation decided, before anything is written: computed without the write lock.

    ``breaching`` lists the alerts firing with a breaching measurement this tick (what guards act on).
    """

    outcome: Evaluation
    inserts: list[dict[str, Any]]
    updates: list[dict[str, Any]]
    transitions: list[dict[str, Any]]
    events: list[AlertEvent]
    breaching: list[tuple[Rule, str, Measurement]]
    stored: StoredStates
    fingerprint: tuple[int, datetime | None] | None

    @property
    def quiet(self) -> bool:
        """Nothing to write, nobody to tell, nothing breaching: applying it would change nothing but the cache."""
        return not (self.inserts or self.updates or self.transitions or self.events or self.breaching)


def remember(plan: EvaluationPlan, cache: EvaluationCache | None, *, now: datetime) -> None:
    """Keep in ``cache`` the states the table holds once ``plan`` is applied (or needs no applying)."""
    if cache is not None and plan.fingerprint is not None:
        # What the table holds once this transaction commits; a failed commit shows as a mismatch next tick.
        written = bool(plan.inserts or plan.updates)
        cache.states = plan.stored
        cache.fingerprint = (plan.fingerprint[0] + len(plan.inserts), now if written else plan.fingerprint[1])


def plan_evaluation(
    session: Session,
    *,
    environments: Sequence[str],
    now: datetime,
    window_size: timedelta = WINDOW_SIZE,
    cache: EvaluationCache | None = None,
    readings: QueryReadings | None = None,
    only: Callable[[Rule], bool] | None = None,
) -> EvaluationPlan:
    """Read the windows, tails and states, and measure and step every alert; writes nothing (a reader is enough).

    ``only`` keeps the rules to evaluate (None: every rule); the others' stored states are left as they are.

    Prometheus rules take their measurements from ``readings`` (taken beforehand by ``read_prometheus_rules``);
    without readings there is no Prometheus to ask, and they lack data saying so.
    Only the leader's evaluator writes alert states, so what it read here is still true when the plan is applied.
    """
    rules = current_rules(session, cache)
    if only is not None:
        rules = [rule for rule in rules if only(rule)]
    if readings is None:
        readings = read_prometheus_rules(rules, environments, now, None)
    outcome = Evaluation(rules=len(rules))
    series = fetch_series(session, rules, now, window_size)
    tails = fetch_tails(session, rules)
    fingerprint = state_fingerprint(session) if cache is not None else None
    if cache is not None and cache.states is not None and cache.fingerprint == fingerprint:
        stored = dict(cache.states)  # a copy: a tick that fails half-way must not leave the cache half-updated
    else:
        stored = stored_states(session)
    windows_of = fetch_windows(session, _unfolded(rules, environments, stored, now, window_size), now)
    subjects_of = fetch_subjects(session, subject_reads(rules, now, window_size), now)
    populations = fetch_populations(session, rules, environments)
    plan = EvaluationPlan(
        outcome=outcome,
        inserts=[],
        updates=[],
        transitions=[],
        events=[],
        breaching=[],
        stored=stored,
        fingerprint=fingerprint,
    )
    nothing: dict[str, Measurement] = {}
    for rule in rules:
        for environment in rule.environments or environments:
            outcome.alerts += 1
            previous = _stored_status(plan.stored, rule, environment)
            if rule.source is RuleSource.PROMETHEUS:
                measurement = readings.measurement(rule, environment)
                status = step(rule, previous, measurement, now)
            elif rule.confidence is not None:
                # Even without data: a rate's exposure without events is evidence too.
                summed, unfolded = capped(
                    rule,
                    series.get((rule.window, rule.pipeline, rule.event, environment), ()),
                    windows_of.get((rule.pipeline, rule.event, environment), ()),
                    subjects_of.get((rule.pipeline, rule.event, environment), ()),
                    now,
                    window_size=window_size,
                )
                measurement, status = assess(
                    rule,
                    previous,
                    summed,
                    (),
                    now,
                    window_size=window_size,
                    windows=unfolded,
                    population=populations.get((rule.name, environment)),
                )
            else:
                windows = capped(
                    rule,
                    series.get((rule.window, rule.pipeline, rule.event, environment), ()),
                    (),
                    subjects_of.get((rule.pipeline, rule.event, environment), ()),
                    now,
                    window_size=window_size,
                )[0]
                recent = rule_tail(tails, rule, environment)
                if windows or recent:
                    measurement, status = assess(rule, previous, windows, recent, now, window_size=window_size)
                else:
                    # No data in this environment: the same measurement for every such environment of the rule.
                    measurement = nothing.get(rule.name) or nothing.setdefault(
                        rule.name, measure(rule, (), (), now, window_size=window_size)
                    )
                    status = step(rule, previous, measurement, now)
            _note_alert(plan, rule, environment, measurement, status, now)
    return plan


def _unfolded(
    rules: Sequence[Rule], environments: Sequence[str], stored: StoredStates, now: datetime, window_size: timedelta
) -> dict[tuple[str, str], datetime]:
    """Per (pipeline, event), the oldest window a sequential alert on it has yet to fold (see ``fetch_windows``)."""
    starts: dict[tuple[str, str], datetime] = {}
    for rule in rules:
        if rule.confidence is None or rule.source is not RuleSource.EVENTS:
            continue
        for environment in rule.environments or environments:
            start = unfolded_since(rule, _stored_status(stored, rule, environment), now, window_size)
            key = (rule.pipeline, rule.event)
            starts[key] = min(starts.get(key, start), start)
    return starts


def _stored_status(stored: StoredStates, rule: Rule, environment: str) -> AlertStatus | None:
    """The alert's stored status; a rule name that moved to another pipeline starts afresh."""
    found = stored.get((rule.name, environment))
    return found[1] if found is not None and found[0] == rule.pipeline else None


#: States on-call is told of when entered, and told again when left.
_TOLD = (AlertState.FIRING, AlertState.SAMPLE_RATIO_MISMATCH)


def _note_alert(
    plan: EvaluationPlan, rule: Rule, environment: str, measurement: Measurement, status: AlertStatus, now: datetime
) -> None:
    """Note what to write and whom to tell about one alert, stepped to ``status`` from its stored one."""
    found = plan.stored.get((rule.name, environment))
    previous = _stored_status(plan.stored, rule, environment)
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
        plan.events.append(alert_event(rule, "trigger", environment, measurement, now))
    elif status.state is AlertState.SAMPLE_RATIO_MISMATCH and before is not AlertState.SAMPLE_RATIO_MISMATCH:
        # Told like a trigger: an SRE must know that the comparison guarding the flag cannot be trusted.
        plan.events.append(alert_event(rule, "trigger", environment, measurement, now))
    elif before in _TOLD and status.state not in _TOLD:
        plan.events.append(alert_event(rule, "resolve", environment, measurement, now))


def apply_evaluation(
    session: Session,
    plan: EvaluationPlan,
    *,
    now: datetime,
    notifications: NotificationConfig,
    cache: EvaluationCache | None = None,
    also_notify: Sequence[AlertEvent] = (),
) -> Evaluation:
    """Write a plan: states, transitions, and the notifications of its triggers and resolves.

    ``also_notify`` are events the caller caused in the same transaction (the rollbacks guards made): they go out
    with the plan's, so a grouped receiver gets one message per evaluation.
    """
    outcome = plan.outcome
    if plan.inserts:
        session.execute(insert(AlertStateRow), plan.inserts)
    if plan.updates:
        session.execute(update(AlertStateRow), plan.updates)
    if plan.transitions:
        session.execute(insert(AlertTransition), plan.transitions)
    remember(plan, cache, now=now)
    events = [*plan.events, *also_notify]
    if events:
        outcome.notifications = enqueue_notifications(session, notifications, events, now=now)
    return outcome
