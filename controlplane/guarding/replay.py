"""Replaying one alert rule over stored traffic (`guards replay`): a backtest of a guard before it is trusted.

The rule is stepped through ``alerting.rules.assess`` at ``start``, ``start + interval``, ... up to ``end``, on what
the live evaluator reads from the stored telemetry windows (``alerting.queries``): a sequential rule the windows one
by one (``fetch_windows``, read once over [start - window, end]), its statistic starting fresh at ``start``; a plain
ratio, rate or cohort rule the same windows' counts summed over its window at each time (a running sum: one read,
not one per evaluation); a mean rule, which needs the windows' values too, ``fetch_series`` at each time, read again
only when a window boundary is crossed. A rule with ``per_subject_cap`` reads its window's series one per window,
capped at each time as the evaluator caps them (``alerting.subjects``, the subjects' counts read once with the
windows). Pure replay: no alert state is written and nobody is notified.

What a replay cannot see as the live evaluator did: a window is replayed as finally stored, so an evaluation inside
the open window sees all its events where the live one saw the part ingested by then; streak rules read the event
tail (only its newest events are kept) and Prometheus rules Prometheus's answers, so those are refused.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from controlplane.alerting.queries import fetch_series, fetch_subjects, fetch_windows
from controlplane.alerting.rules import AlertStatus, Measurement, Series, assess, window_cutoff
from controlplane.alerting.subjects import cap_windows
from controlplane.catalog.rules import AlertState, Rule, RuleKind, RuleSource
from controlplane.catalog.service import load_rules
from controlplane.definitions.document import DefinitionError
from controlplane.definitions.loader import parse_definition
from controlplane.errors import InvalidInput, NotFound
from controlplane.flags.service import require_environment
from controlplane.guarding.schemas import ReplayEvaluation, ReplayReport, ReplayRequest, ReplayTransition

__all__ = [
    "MAX_EVALUATIONS",
    "ReplayStep",
    "evaluation_times",
    "replay_guard",
    "replay_rule",
    "rule_from_definition",
]

#: The most evaluations one replay may run (55 hours at the default 10 s): each may read the database once.
MAX_EVALUATIONS = 20_000

#: What a transition into each state is called in a replay's report.
_CHANGES = {
    AlertState.FIRING: "fired",
    AlertState.PENDING: "pending",
    AlertState.INSUFFICIENT_DATA: "insufficient",
    AlertState.SAMPLE_RATIO_MISMATCH: "mismatch",
    AlertState.INACTIVE: "cleared",
}


@dataclass(frozen=True, slots=True)
class ReplayStep:
    """One evaluation of a replay: when, what was measured, and the alert's status after it."""

    at: datetime
    measurement: Measurement
    status: AlertStatus


def evaluation_times(start: datetime, end: datetime, interval: timedelta) -> list[datetime]:
    """``start``, ``start + interval``, ... up to ``end``; refused when ``start`` is not before ``end`` or when there
    would be more than ``MAX_EVALUATIONS``."""
    for name, value in (("from", start), ("to", end)):
        if value.tzinfo is None:
            raise InvalidInput("invalid-replay", f"`{name}` needs a time zone, e.g. Z for UTC", field=name)
    if start >= end:
        raise InvalidInput("invalid-replay", f"`from` ({start.isoformat()}) must be before `to`", field="to")
    count = (end - start) // interval + 1
    if count > MAX_EVALUATIONS:
        raise InvalidInput(
            "replay-too-long",
            f"replaying {start.isoformat()} to {end.isoformat()} every {interval.total_seconds():g}s is {count} "
            f"evaluations; at most {MAX_EVALUATIONS} are run: shorten the period or lengthen the interval",
            evaluations=count,
            limit=MAX_EVALUATIONS,
        )
    return [(start + index * interval).astimezone(UTC) for index in range(count)]


def rule_from_definition(text: str, *, source: str, name: str, environments: Sequence[str]) -> Rule:
    """The rule called ``name`` in a definition file's text, checked as `definitions apply` checks it."""
    try:
        definition = parse_definition(text, source=source, environments=environments)
    except DefinitionError as error:
        raise InvalidInput(
            "invalid-definition", str(error), source=source, line=error.line, field=error.path
        ) from error
    for rule in definition.rules:
        if rule.name == name:
            return rule
    declared = ", ".join(rule.name for rule in definition.rules) or "none"
    raise NotFound("rule-not-found", f"{source} declares no rule `{name}`; it declares {declared}", rule=name)


def _check_replayable(rule: Rule, environment: str) -> None:
    """Refuse what cannot be replayed from stored windows, or is never evaluated in ``environment``."""
    why = ""
    if rule.source is RuleSource.PROMETHEUS:
        why = "it is measured by Prometheus, whose past answers the control plane does not keep"
    elif rule.kind is RuleKind.STREAK:
        why = "a streak reads the event tail, of which only the newest events are kept"
    elif rule.environments and environment not in rule.environments:
        why = f"it is evaluated only in {', '.join(rule.environments)}"
    if why:
        raise InvalidInput("cannot-replay", f"rule `{rule.name}` cannot be replayed in {environment}: {why}")


def replay_rule(
    session: Session, rule: Rule, environment: str, times: Sequence[datetime], window_size: timedelta
) -> list[ReplayStep]:
    """Step ``rule``'s alert in ``environment`` through ``assess`` at each of ``times`` (in order), from no status,
    on the stored windows; writes nothing."""
    if rule.per_subject_cap is not None:
        read = _capped_reader(session, rule, environment, times, window_size)
    elif rule.confidence is not None:
        read = _windows_reader(session, rule, environment, times, window_size)
    elif rule.kind is RuleKind.MEAN:
        read = _summed_reader(session, rule, environment, window_size)
    else:
        read = _sliding_reader(session, rule, environment, times, window_size)
    steps: list[ReplayStep] = []
    previous: AlertStatus | None = None
    for now in times:
        measurement, previous = assess(rule, previous, read(now), (), now, window_size=window_size)
        steps.append(ReplayStep(now, measurement, previous))
    return steps


def _summed_reader(
    session: Session, rule: Rule, environment: str, window_size: timedelta
) -> Callable[[datetime], Sequence[Series]]:
    """What a mean rule reads at each time: the series summed over its window by ``fetch_series``, values included.
    Two times between the same window boundaries read the same rows, so only a boundary crossed reads again."""
    key = (rule.window, rule.pipeline, rule.event, environment)
    last: tuple[tuple[datetime, datetime] | None, list[Series]] = (None, [])

    def read(now: datetime) -> Sequence[Series]:
        nonlocal last
        bounds = (window_cutoff(now, rule.window, window_size), window_cutoff(now, timedelta(0), window_size))
        if bounds != last[0]:
            last = (bounds, fetch_series(session, [rule], now, window_size).get(key, []))
        return last[1]

    return read


def _stored_windows(
    session: Session, rule: Rule, environment: str, times: Sequence[datetime], window_size: timedelta
) -> list[Series]:
    """The counts of every window the replay reads, one series per window, oldest first: one ``fetch_windows``."""
    since = window_cutoff(times[0], rule.window, window_size)
    found = fetch_windows(session, {(rule.pipeline, rule.event): since}, times[-1])
    return sorted(found.get((rule.pipeline, rule.event, environment), []), key=lambda item: item.start)


def _windows_reader(
    session: Session, rule: Rule, environment: str, times: Sequence[datetime], window_size: timedelta
) -> Callable[[datetime], Sequence[Series]]:
    """What a sequential rule reads at each time: its window's series one per window, which ``assess`` both folds
    and measures the plain value over."""
    windows = _stored_windows(session, rule, environment, times, window_size)
    starts = [item.start for item in windows]

    def read(now: datetime) -> Sequence[Series]:
        first = bisect_left(starts, window_cutoff(now, rule.window, window_size))
        return windows[first : bisect_right(starts, now)]

    return read


def _capped_reader(
    session: Session, rule: Rule, environment: str, times: Sequence[datetime], window_size: timedelta
) -> Callable[[datetime], Sequence[Series]]:
    """What a rule with a per-subject cap reads at each time: its window's series one per window, less what the cap
    drops at that time, which ``assess`` folds (a sequential rule) or sums over the window (a plain one)."""
    assert rule.per_subject_cap is not None
    windows = _stored_windows(session, rule, environment, times, window_size)
    reads = {(rule.pipeline, rule.event): (window_cutoff(times[0], rule.window, window_size), rule.per_subject_cap)}
    subjects = sorted(
        fetch_subjects(session, reads, times[-1]).get((rule.pipeline, rule.event, environment), []),
        key=lambda item: item.start,
    )
    starts, subject_starts = [item.start for item in windows], [item.start for item in subjects]

    def read(now: datetime) -> Sequence[Series]:
        cutoff = window_cutoff(now, rule.window, window_size)
        current = windows[bisect_left(starts, cutoff) : bisect_right(starts, now)]
        counted = subjects[bisect_left(subject_starts, cutoff) : bisect_right(subject_starts, now)]
        return cap_windows(rule, current, counted, now, window_size=window_size)

    return read


def _sliding_reader(
    session: Session, rule: Rule, environment: str, times: Sequence[datetime], window_size: timedelta
) -> Callable[[datetime], Sequence[Series]]:
    """What a plain ratio, rate or cohort rule reads at each time (``times`` in order): the counts summed over its
    window per series, as ``fetch_series`` sums them, kept as a running sum over windows read once."""
    windows = _stored_windows(session, rule, environment, times, window_size)
    totals: dict[tuple[str, str, tuple[tuple[str, str], ...]], tuple[Series, int]] = {}
    bounds = [0, 0]  # windows[bounds[0]:bounds[1]] are summed in ``totals``
    last: tuple[tuple[datetime, int, int] | None, list[Series]] = (None, [])

    def add(item: Series, sign: int) -> None:
        key = (item.variant, item.outcome, tuple(sorted(item.labels.items())))
        first, count = totals.get(key, (item, 0))
        totals[key] = (first, count + sign * item.count)

    def read(now: datetime) -> Sequence[Series]:
        nonlocal last
        cutoff = window_cutoff(now, rule.window, window_size)
        while bounds[1] < len(windows) and windows[bounds[1]].start <= now:
            add(windows[bounds[1]], 1)
            bounds[1] += 1
        while bounds[0] < bounds[1] and windows[bounds[0]].start < cutoff:
            add(windows[bounds[0]], -1)
            bounds[0] += 1
        if last[0] != (cutoff, bounds[0], bounds[1]):  # the series start at the cutoff, as fetch_series's do
            summed = [
                Series(start=cutoff, outcome=item.outcome, variant=item.variant, labels=item.labels, count=count)
                for item, count in totals.values()
                if count
            ]
            last = ((cutoff, bounds[0], bounds[1]), summed)
        return last[1]

    return read


def replay_guard(
    session: Session,
    request: ReplayRequest,
    *,
    rule: Rule | None,
    environments: Sequence[str],
    window_size: timedelta,
) -> ReplayReport:
    """Replay ``rule`` (read from the definition the request carried), or else the applied rule the request names,
    over the stored windows of the request's period; the report lists every evaluation and every transition."""
    require_environment(request.environment, environments)
    times = evaluation_times(request.start, request.end, timedelta(seconds=request.interval_seconds))
    if rule is None:
        rule = next((item for item in load_rules(session) if item.name == request.rule), None)
        if rule is None:
            raise NotFound("rule-not-found", f"no applied rule `{request.rule}`", rule=request.rule)
    _check_replayable(rule, request.environment)
    steps = replay_rule(session, rule, request.environment, times, window_size)
    transitions: list[ReplayTransition] = []
    before: AlertState | None = None
    for step in steps:
        if step.status.state is not before:
            transitions.append(
                ReplayTransition(
                    at=step.at,
                    change=_CHANGES[step.status.state],
                    from_state=before.value if before is not None else "new",
                    to_state=step.status.state.value,
                    value=step.measurement.value,
                    samples=step.measurement.samples,
                    detail=step.measurement.detail,
                )
            )
            before = step.status.state
    return ReplayReport(
        rule=rule.name,
        pipeline=rule.pipeline,
        environment=request.environment,
        condition=rule.condition(),
        source="applied" if request.definition is None else request.source,
        start=request.start,
        end=request.end,
        interval_seconds=request.interval_seconds,
        transitions=transitions,
        evaluations=[
            ReplayEvaluation(
                at=step.at,
                state=step.status.state.value,
                value=step.measurement.value,
                samples=step.measurement.samples,
                breached=step.measurement.breached,
                detail=step.measurement.detail,
            )
            for step in steps
        ],
    )
