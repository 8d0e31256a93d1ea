"""Gate decisions for a rollout stage: a pure function of the stage's guard readings and its sample count.

A stage may be left (advanced, by hand or by the tick) only when every guard was measured and is inactive.
Firing, pending (a breach in progress), insufficient data, a sample ratio mismatch (a cohort guard's cohorts are not
the sizes the split makes) and never evaluated all hold the stage, each with its reason; so do too few samples
served the rollout variant since the stage began.

Rollouts do not read guards themselves: whoever calls them hands over a ``GateReader`` (the control plane's reads
alert states and telemetry, ``controlplane.guarding.readings``), so this domain needs nothing from alerting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

from controlplane.catalog.rules import AlertState
from controlplane.rollouts.stages import Stage

__all__ = ["GateReader", "GateVerdict", "GuardReading", "judge_gates"]


@dataclass(frozen=True, slots=True)
class GuardReading:
    """A guard's latest state in the stage's environment; ``state`` None when it has never been evaluated."""

    rule: str
    state: AlertState | None
    condition: str
    value: float | None = None
    samples: int = 0
    detail: str = ""
    shadow: bool = False  # a rule only watched (`mode: shadow`): shown, but it never holds a stage nor blocks a start


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """Whether the stage may be left, and every reason it may not."""

    clear: bool
    reasons: tuple[str, ...]

    @property
    def summary(self) -> str:
        """One sentence for status, refusals and the audit log."""
        if self.clear:
            return "guards clear"
        return "; ".join(self.reasons)


def _reading(guard: GuardReading) -> str | None:
    if guard.state is AlertState.INACTIVE:
        return None
    if guard.state is None:
        return f"guard `{guard.rule}` has not been evaluated yet ({guard.condition})"
    measured = "no value" if guard.value is None else f"value {guard.value:.6g}"
    what = {
        AlertState.FIRING: "is firing",
        AlertState.PENDING: "is pending (breached, waiting out its `for`)",
        AlertState.INSUFFICIENT_DATA: "lacks data",
        AlertState.SAMPLE_RATIO_MISMATCH: "shows a sample ratio mismatch (its cohorts are not the rollout's split)",
    }[guard.state]
    return f"guard `{guard.rule}` {what}: {measured}, {guard.samples} samples; {guard.condition} [{guard.detail}]"


def judge_gates(guards: Sequence[GuardReading], *, samples: int | None, min_samples: int) -> GateVerdict:
    """Decide whether a stage may be left: every guard inactive, and at least ``min_samples`` samples."""
    reasons = [reason for guard in guards if not guard.shadow and (reason := _reading(guard)) is not None]
    if min_samples and (samples or 0) < min_samples:
        reasons.append(
            f"the stage has {samples or 0} events served the rollout variant since it began; it needs {min_samples}"
        )
    return GateVerdict(clear=not reasons, reasons=tuple(reasons))


@runtime_checkable  # Litestar checks injected values against the handler's annotation
class GateReader(Protocol):
    """What rollouts ask about their guards: each guard's latest reading, and whether a stage may be left."""

    def readings(self, session: Session, guards: Sequence[str], environment: str) -> list[GuardReading]:
        """The latest state of each named guard in ``environment`` (None state: never evaluated or unknown)."""
        ...

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
        """Whether ``stage`` of the rollout of ``flag`` in ``environment`` may be left, with every reason not;
        ``segment`` (attribute, value) counts only that segment's events towards the stage's samples."""
        ...
