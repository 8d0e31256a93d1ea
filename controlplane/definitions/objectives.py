"""Checks of a definition's `slo:` section, turning each objective as written into an ``Objective``.

Called by the loader, which owns file positions: every refusal names the field path it is about.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import timedelta
from decimal import Decimal

from controlplane.catalog.events import EventType
from controlplane.catalog.objectives import BURN_RATE_ALERTS, Objective
from controlplane.definitions.document import FieldPath, Refuse
from controlplane.definitions.rules import check_selector
from controlplane.definitions.schemas import SloSpec

__all__ = ["MAX_PERIOD", "check_objectives"]

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
#: The slowest burn-rate window: a period no longer than it would be spent before that alert could say so.
_LONGEST_WINDOW = max(alert.long_window for alert in BURN_RATE_ALERTS)
#: Prometheus keeps 15 days by default; a year is already more history than most servers hold.
MAX_PERIOD = timedelta(days=365)


def check_objectives(
    pipeline: str,
    specs: Sequence[SloSpec],
    events: Sequence[EventType],
    refuse: Refuse,
    parse_duration: Callable[[str | int], timedelta],
) -> tuple[Objective, ...]:
    """Check a definition's objectives against its events: a known event, selectors it admits, a reachable budget."""
    by_event = {event.name: event for event in events}
    first: dict[str, int] = {}
    objectives: list[Objective] = []
    for index, spec in enumerate(specs):
        at: FieldPath = ("slo", index)
        if not _NAME.fullmatch(spec.name):
            # It becomes an alert name in CamelCase, which must start with a letter.
            raise refuse((*at, "name"), f"objective name `{spec.name}` must be lowercase words joined by dashes")
        if spec.name in first:
            raise refuse((*at, "name"), f"objective `{spec.name}` is already declared at slo[{first[spec.name]}]")
        first[spec.name] = index
        event = by_event.get(spec.event)
        if event is None:
            declared = ", ".join(f"`{name}`" for name in by_event) or "none"
            raise refuse((*at, "event"), f"unknown event `{spec.event}`; this definition declares {declared}")
        where = check_selector(spec.where, event, None, (*at, "where"), refuse)
        if not spec.bad:
            raise refuse((*at, "bad"), "an objective needs `bad`: which events spend the error budget")
        bad = check_selector(spec.bad, event, None, (*at, "bad"), refuse)
        for key, counted in bad.matches.items():
            scope = where.matches.get(key)
            if scope is not None and not counted & scope:
                raise refuse((*at, "bad", key), f"`bad` selects no `{key}` that `where` admits: nothing is ever bad")
        objective = _objective(spec.objective, (*at, "objective"), refuse)
        try:
            period = parse_duration(spec.period)
        except ValueError as exc:
            raise refuse((*at, "period"), str(exc).replace("bake", "period")) from exc
        if not _LONGEST_WINDOW < period <= MAX_PERIOD:
            raise refuse(
                (*at, "period"),
                f"period must be longer than {_LONGEST_WINDOW.days}d (the slowest burn-rate window) "
                f"and at most {MAX_PERIOD.days}d",
            )
        objectives.append(
            Objective(
                name=spec.name,
                pipeline=pipeline,
                event=event.name,
                flag=event.flag,
                objective=objective,
                period=period,
                bad=bad,
                where=where,
                description=spec.description,
                runbook_url=spec.runbook_url,
            )
        )
    return tuple(objectives)


def _objective(written: float, at: FieldPath, refuse: Refuse) -> str:
    """The objective as the decimal it was written as, refused unless every burn-rate alert can fire."""
    if isinstance(written, bool) or not math.isfinite(written) or not 0 < written < 1:
        raise refuse(at, "objective is the share of good events, above 0 and below 1: write 99.5% as 0.995")
    text = repr(float(written))
    budget = 1 - Decimal(text)
    fastest = max(alert.burn_rate for alert in BURN_RATE_ALERTS)
    if fastest * budget >= 1:
        # A bad share above 100% is impossible, so the fastest page could never fire.
        lowest = 1 - 1 / fastest
        raise refuse(
            at,
            f"objective {text} leaves a budget of {budget:%}, which a {fastest}x burn could never exceed: "
            f"the fast page needs an objective above {lowest:.4f}",
        )
    return text
