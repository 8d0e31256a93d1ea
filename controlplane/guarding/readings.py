"""Reading what rollout gates need from the database: guard states and the samples a stage has seen.

``AlertGateReader`` is the ``GateReader`` rollouts are handed (by the app, the scheduler and this workflow): it reads
the alert states alerting stored and the telemetry windows ingest wrote, and judges them with rollouts' pure
``judge_gates``. A shadow guard (``mode: shadow``) is read like any other, so status shows it (its condition says
shadow), but gate verdicts leave it out. A new metric source for guards goes here. Never commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.orm import Session

from controlplane.alerting.models import AlertStateRow
from controlplane.catalog.rules import WINDOW_SIZE, AlertState, Rule
from controlplane.catalog.service import load_catalog, load_rules
from controlplane.rollouts.gates import GateVerdict, GuardReading, judge_gates
from controlplane.rollouts.stages import Stage
from controlplane.telemetry.aggregation import labels_key, window_start
from controlplane.telemetry.models import TelemetryWindow

__all__ = ["AlertGateReader", "gate_verdict", "guard_readings", "judge_enforced", "stage_samples"]


def guard_readings(session: Session, guards: Sequence[str], environment: str) -> list[GuardReading]:
    """The latest state of each named guard in ``environment`` (None state: never evaluated or unknown rule); a
    shadow guard's condition says it is one."""
    if not guards:
        return []
    return _readings(session, guards, environment, {rule.name: rule for rule in load_rules(session)})


def _readings(
    session: Session, guards: Sequence[str], environment: str, rules: Mapping[str, Rule]
) -> list[GuardReading]:
    """The latest state of each named guard, its condition read from ``rules`` (the applied rules by name)."""
    if not guards:
        return []
    rows = {
        row.rule: row
        for row in session.scalars(
            select(AlertStateRow).where(AlertStateRow.rule.in_(guards), AlertStateRow.environment == environment)
        )
    }
    readings = []
    for name in guards:
        rule = rules.get(name)
        row = rows.get(name)
        condition = rule.condition() if rule else "no such rule is applied"
        if row is None or rule is None:
            readings.append(GuardReading(rule=name, state=None, condition=condition))
            continue
        readings.append(
            GuardReading(
                rule=name,
                state=AlertState(row.state),
                condition=condition,
                value=row.value,
                samples=row.samples,
                detail=row.detail,
                shadow=rule.shadow,
            )
        )
    return readings


def stage_samples(
    session: Session,
    *,
    flag: str,
    environment: str,
    variant: str | None,
    since: datetime | None,
    segment: tuple[str, str] | None = None,
) -> int:
    """Events served ``variant`` of ``flag`` in ``environment`` since the stage began, over every event type; with
    ``segment`` (attribute, value), only the events of the types carrying that label with that value."""
    if variant is None or since is None:
        return 0
    kinds = [
        (kind.pipeline, kind.name)
        for kind in load_catalog(session).events.values()
        if kind.flag == flag and (segment is None or segment[0] in kind.labels)
    ]
    if not kinds:
        return 0
    query = select(func.coalesce(func.sum(TelemetryWindow.count), 0)).where(
        tuple_(TelemetryWindow.pipeline, TelemetryWindow.event).in_(kinds),
        TelemetryWindow.environment == environment,
        TelemetryWindow.variant == variant,
        TelemetryWindow.window_start >= window_start(since, WINDOW_SIZE),
    )
    if segment is not None:
        # labels_key is the series' labels as canonical JSON (telemetry.aggregation.labels_key): this pair, once.
        pair = labels_key({segment[0]: segment[1]})[1:-1]
        query = query.where(TelemetryWindow.labels_key.contains(pair, autoescape=True))
    return int(session.scalar(query) or 0)


def gate_verdict(
    session: Session,
    *,
    flag: str,
    environment: str,
    stage: Stage,
    stage_started_at: datetime | None,
    variant: str | None,
    segment: tuple[str, str] | None = None,
) -> GateVerdict:
    """Whether the current stage of a rollout may be left, with every reason it may not. Shadow guards are left
    out: they are watched, not trusted to hold a stage. ``segment``: only that segment's samples count."""
    rules = {rule.name: rule for rule in load_rules(session)} if stage.guards else {}
    readings = _readings(session, stage.guards, environment, rules)
    samples = (
        stage_samples(
            session, flag=flag, environment=environment, variant=variant, since=stage_started_at, segment=segment
        )
        if stage.min_samples
        else None
    )
    return judge_enforced(readings, rules, samples=samples, min_samples=stage.min_samples)


def judge_enforced(
    readings: Sequence[GuardReading], rules: Mapping[str, Rule], *, samples: int | None, min_samples: int
) -> GateVerdict:
    """Rollouts' ``judge_gates`` over the enforced guards' readings: a shadow rule never holds a stage (a guard
    naming no applied rule still does)."""
    enforced = [reading for reading in readings if reading.rule not in rules or not rules[reading.rule].shadow]
    return judge_gates(enforced, samples=samples, min_samples=min_samples)


class AlertGateReader:
    """Rollouts' ``GateReader``: guards read from stored alert states, samples from the telemetry windows."""

    def readings(self, session: Session, guards: Sequence[str], environment: str) -> list[GuardReading]:
        """The latest state of each named guard in ``environment``."""
        return guard_readings(session, guards, environment)

    def verdict(
        self,
        session: Session,
        *,
        flag: str,
        environment: str,
        stage: Stage,
        stage_started_at: datetime | None,
        variant: str | None,
        segment: tuple[str, str] | None = None,
    ) -> GateVerdict:
        """Whether the current stage of a rollout may be left, with every reason it may not."""
        return gate_verdict(
            session,
            flag=flag,
            environment=environment,
            stage=stage,
            stage_started_at=stage_started_at,
            variant=variant,
            segment=segment,
        )
