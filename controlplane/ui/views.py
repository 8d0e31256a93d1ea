"""What the operator's pages show, read in one transaction through the services that decide it; never writes.

The rollout's state, stage, serving percentage and gate verdict come from ``rollouts.status`` with the guarding
``GateReader`` (the same answer as ``GET .../rollout``); a guard's values over its stage from ``guarding.replay`` (the
rule stepped through ``alerting.rules.assess`` on the stored windows, as the live evaluator does); the records from
``audit.service`` and ``notifications.service``. Nothing here judges a gate or a guard itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.alerting.models import AlertStateRow, AlertTransition
from controlplane.audit.models import AuditRecord
from controlplane.audit.service import list_audit_records
from controlplane.catalog.rules import Rule
from controlplane.catalog.service import load_rules
from controlplane.errors import DomainError, NotFound
from controlplane.flags import service as flag_service
from controlplane.guarding.replay import replay_guard
from controlplane.guarding.schemas import ReplayRequest
from controlplane.notifications.models import Notification
from controlplane.notifications.service import list_notifications
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.operations import RolloutTarget
from controlplane.rollouts.schemas import GuardRead, RolloutRead, RolloutStatus
from controlplane.rollouts.stages import RolloutState, duration_words
from controlplane.rollouts.status import list_rollout_history, rollout_status
from controlplane.ui.charts import GuardChart, GuardPoint, draw_guard_chart

__all__ = [
    "CHART_POINTS",
    "AuditLine",
    "FlagPage",
    "FlagRow",
    "GuardView",
    "NotificationLine",
    "Overview",
    "describe_change",
    "read_change_marker",
    "read_flag_page",
    "read_overview",
]

#: The most evaluations a guard's chart replays over its stage (each a point; the stored windows are read once).
CHART_POINTS = 60
#: Records listed on a flag's page.
RECENT = 15
#: The audit actions that begin a stage.
_STAGE_BEGINNINGS = ("rollout.start", "rollout.advance", "rollout.resume")


@dataclass(frozen=True, slots=True)
class FlagRow:
    """One flag on the overview: its rollout status per environment (None where it has no plan)."""

    key: str
    description: str
    cells: dict[str, RolloutStatus | None]


@dataclass(frozen=True, slots=True)
class Overview:
    """Every flag with a rollout plan, against every environment."""

    environments: tuple[str, ...]
    flags: list[FlagRow]
    at: datetime


@dataclass(frozen=True, slots=True)
class GuardView:
    """A guard of the current stage: its latest reading, its rule and its values over the stage."""

    read: GuardRead
    condition: str
    confidence: str | None
    window: str
    shadow: bool
    chart: GuardChart | None
    chart_note: str


@dataclass(frozen=True, slots=True)
class AuditLine:
    """One audit record about this flag in this environment."""

    id: int
    occurred_at: datetime
    actor: str
    action: str
    reason: str | None
    change: str
    #: The segment (``queue=sales``) an operation on a plan run per segment was about; None: the environment as a
    #: whole (an edit, an incident, a plan run once).
    segment: str | None = None


@dataclass(frozen=True, slots=True)
class NotificationLine:
    """One notification about a guard of this stage in this environment."""

    id: int
    created_at: datetime
    receiver: str
    kind: str
    rule: str | None
    severity: str
    status: str
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class FlagPage:
    """Everything one flag's page shows about one environment."""

    status: RolloutStatus
    description: str
    guards: list[GuardView]
    guards_since: datetime | None
    audit: list[AuditLine]
    notifications: list[NotificationLine]
    history: list[RolloutRead]
    at: datetime
    environments: tuple[str, ...] = field(default=())

    @property
    def segment_names(self) -> dict[str, str]:
        """Each segment's value -> its name as operations give it (``sales`` -> ``queue=sales``); empty for a plan
        run once, whose records and history need no segment column."""
        return {segment.value: segment.segment for segment in self.status.segments}


def read_overview(session: Session, *, environments: Sequence[str], now: datetime, gates: GateReader) -> Overview:
    """Every flag's rollout in every environment, as ``GET .../rollout`` answers it."""
    rows = []
    for flag in flag_service.list_flags(session):
        cells: dict[str, RolloutStatus | None] = {}
        for environment in environments:
            try:
                cells[environment] = rollout_status(
                    session,
                    target=RolloutTarget(flag.key, environment),
                    environments=environments,
                    now=now,
                    gates=gates,
                )
            except NotFound:
                cells[environment] = None  # no plan in this environment
        if any(cell is not None for cell in cells.values()):
            rows.append(FlagRow(flag.key, flag.description, cells))
    return Overview(tuple(environments), rows, now)


def read_flag_page(
    session: Session,
    *,
    target: RolloutTarget,
    environments: Sequence[str],
    now: datetime,
    gates: GateReader,
    window_size: timedelta,
) -> FlagPage:
    """The rollout of one flag in one environment with its guards' values, its records and its history."""
    status = rollout_status(session, target=target, environments=environments, now=now, gates=gates)
    flag = flag_service.get_flag(session, target.flag)
    rules = {rule.name: rule for rule in load_rules(session)}
    since = _stage_began(session, target, status)
    guards = [
        _guard_view(session, read, rules.get(read.rule), status, since, now, window_size) for read in status.guards
    ]
    audit = [
        AuditLine(
            id=record.id,
            occurred_at=record.occurred_at,
            actor=record.actor,
            action=record.action,
            reason=record.reason,
            change=describe_change(record.before, record.after),
            segment=_segment_of(record),
        )
        for record in list_audit_records(session, target=target.flag, environment=target.environment, limit=RECENT)
    ]
    return FlagPage(
        status=status,
        description=flag.description,
        guards=guards,
        guards_since=since,
        audit=audit,
        notifications=_notifications(session, [stage.guards for stage in status.stages], target.environment),
        history=list_rollout_history(
            session, key=target.flag, environment=target.environment, environments=environments
        )[:RECENT],
        at=now,
        environments=tuple(environments),
    )


def _segment_of(record: AuditRecord) -> str | None:
    """The segment a rollout operation's record names (in its state after, or before for one that ended it)."""
    for state in (record.after, record.before):
        if isinstance(state, dict) and isinstance(state.get("segment"), str):
            return str(state["segment"])
    return None


def _stage_began(session: Session, target: RolloutTarget, status: RolloutStatus) -> datetime | None:
    """When the stage the guards belong to began: the rollout's stage start while it runs or is paused; after a
    rollback or completion (which restart that clock), the newest start, advance or resume before it, so the chart
    shows what led there."""
    if status.state in (RolloutState.RUNNING, RolloutState.PAUSED) or status.stage_started_at is None:
        return status.stage_started_at
    began = [
        record.occurred_at
        for action in _STAGE_BEGINNINGS
        for record in list_audit_records(
            session, target=target.flag, environment=target.environment, action=action, limit=1
        )
        if record.occurred_at <= status.stage_started_at
    ]
    return max(began, default=status.stage_started_at)


def _guard_view(
    session: Session,
    read: GuardRead,
    rule: Rule | None,
    status: RolloutStatus,
    since: datetime | None,
    now: datetime,
    window_size: timedelta,
) -> GuardView:
    if rule is None:
        return GuardView(read, read.condition, None, "", False, None, "the rule is no longer applied")
    chart, note = _chart(session, rule, status.environment, since, now, window_size)
    return GuardView(
        read=read,
        condition=rule.condition(),
        confidence=rule.confidence,
        window=duration_words(rule.window),
        shadow=rule.shadow,
        chart=chart,
        chart_note=note,
    )


def _chart(
    session: Session, rule: Rule, environment: str, start: datetime | None, now: datetime, window_size: timedelta
) -> tuple[GuardChart | None, str]:
    """The guard replayed from the stage's start to now (a sequential statistic starts fresh where the stage began)."""
    if start is None:
        return None, "the rollout has not started"
    if now - start < window_size:
        return None, "the stage has only just begun"
    interval = max(window_size, (now - start) / CHART_POINTS)
    request = ReplayRequest(
        rule=rule.name,
        environment=environment,
        start=start,
        end=now,
        interval_seconds=interval.total_seconds(),
    )
    try:
        report = replay_guard(session, request, rule=rule, environments=[environment], window_size=window_size)
    except DomainError as error:  # measured by Prometheus, or a streak: only its latest reading is known
        return None, error.detail
    points = [GuardPoint(item.at, item.value, item.breached) for item in report.evaluations]
    return draw_guard_chart(points, start=start, end=now, threshold=_number(rule.threshold)), ""


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def describe_change(before: Any, after: Any) -> str:
    """What an audit record changed, as ``field: old -> new`` for the fields that differ."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ""
    changed = [
        f"{name.replace('_', ' ')}: {_word(before.get(name))} -> {_word(after.get(name))}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]
    return "; ".join(changed)


def _word(value: Any) -> str:
    """A recorded value as an operator reads it: yes/no, none, 10%-style numbers, words without underscores."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value.replace("_", " ")
    if isinstance(value, list):
        return ", ".join(_word(item) for item in value) or "none"
    return str(value)


def _notifications(session: Session, guards: Sequence[Sequence[str]], environment: str) -> list[NotificationLine]:
    """Recent notifications about any guard of the plan, in this environment, newest first."""
    rules = sorted({rule for stage in guards for rule in stage})
    found = {
        row.id: row
        for rule in rules
        for row in list_notifications(session, rule=rule, limit=RECENT)
        if row.environment in (None, environment)
    }
    return [
        NotificationLine(
            id=row.id,
            created_at=row.created_at,
            receiver=row.receiver,
            kind=row.kind,
            rule=row.rule,
            severity=row.severity,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
        )
        for row in sorted(found.values(), key=lambda row: row.id, reverse=True)[:RECENT]
    ]


def read_change_marker(session: Session) -> tuple[Any, ...]:
    """What moves whenever a page could show something new: the newest audit record (every rollout change is one),
    alert transition and notification, and the alert tick's newest evaluation (guard values). One query."""
    query = select(
        select(func.max(AuditRecord.id)).scalar_subquery(),
        select(func.max(AlertTransition.id)).scalar_subquery(),
        select(func.max(Notification.id)).scalar_subquery(),
        select(func.max(AlertStateRow.evaluated_at)).scalar_subquery(),
    )
    return tuple(session.execute(query).one())
