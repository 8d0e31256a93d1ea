"""Service-level objectives: the share of an event's selected events that must not be bad over a period, and the
multi-window, multi-burn-rate alerts that watch its error budget (Google SRE Workbook, ch. 5, table 5-8).

    error budget = 1 - objective                      (99.5% -> 0.5% of events may be bad)
    burn rate    = bad share over a window / budget    (1x spends the budget in exactly the period)
    alert        = burn rate over the long window AND over the short window (1/12 of it) above the table's rate

Prometheus evaluates these from the rendered rule files; the control plane's own evaluator does not, because a
3-day window needs more history than its aggregation windows keep (at most a day).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

from controlplane.catalog.rules import Selector, Severity

__all__ = ["BURN_RATE_ALERTS", "BurnRateAlert", "Objective"]


@dataclass(frozen=True, slots=True)
class BurnRateAlert:
    """One row of the burn-rate table: both windows must burn faster than ``burn_rate`` for the alert to fire."""

    severity: Severity
    long_window: timedelta
    short_window: timedelta
    burn_rate: Decimal


#: SRE Workbook table 5-8 (tuned for a 30-day period): 2% of the budget in 1h or 5% in 6h pages; 10% in 3d is a ticket.
BURN_RATE_ALERTS = (
    BurnRateAlert(Severity.PAGE, timedelta(hours=1), timedelta(minutes=5), Decimal("14.4")),
    BurnRateAlert(Severity.PAGE, timedelta(hours=6), timedelta(minutes=30), Decimal("6")),
    BurnRateAlert(Severity.TICKET, timedelta(days=3), timedelta(hours=6), Decimal("1")),
)


@dataclass(frozen=True, slots=True)
class Objective:
    """A checked service-level objective of one pipeline (built by ``definitions.objectives``)."""

    name: str
    pipeline: str
    event: str
    flag: str  # the flag whose variant the event carries: alerts name it, so a rollback can mute them
    objective: str  # the decimal as written, e.g. "0.995"
    period: timedelta
    bad: Selector  # which of the selected events spend the budget
    where: Selector = field(default_factory=Selector)
    description: str = ""
    runbook_url: str = ""

    @property
    def budget(self) -> Decimal:
        """The share of events that may be bad over the period: ``1 - objective``, exactly."""
        return 1 - Decimal(self.objective)
