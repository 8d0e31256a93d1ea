"""Scheduled work of rollouts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from controlplane.clock import Clock
from controlplane.db import session_scope
from controlplane.errors import DomainError
from controlplane.rollouts import service
from controlplane.rollouts.gates import GateReader
from controlplane.rollouts.holds import RolloutHold
from controlplane.rollouts.steps import StepAnnouncer

__all__ = ["advance_baked_rollouts"]

logger = logging.getLogger(__name__)


def advance_baked_rollouts(
    factory: sessionmaker[Session],
    *,
    environments: Sequence[str],
    clock: Clock,
    gates: GateReader,
    announcer: StepAnnouncer | None,
    hold: RolloutHold | None,
) -> dict[str, int]:
    """Advance every running auto-advance stage whose bake time has passed and whose gates are clear (as ``gates``
    reads them) and that ``hold`` lets through, and tell ``announcer`` of each step and of each stage held past its
    progress deadline (once); one transaction per rollout. ``announcer`` and ``hold`` are required, as for an
    operator's operation (``service.operate_rollout``)."""
    counts = {"checked": 0, "advanced": 0, "held": 0, "deadlines": 0, "conflicts": 0, "errors": 0}
    with session_scope(factory) as session:
        targets = service.running_rollout_targets(session)
    for target in targets:
        counts["checked"] += 1
        try:
            with session_scope(factory) as session:
                result = service.tick_rollout(
                    session,
                    target=target,
                    environments=environments,
                    now=clock(),
                    gates=gates,
                    announcer=announcer,
                    hold=hold,
                )
        except (StaleDataError, DomainError) as error:
            # An operator acted on this rollout meanwhile; the next tick sees the new state.
            counts["conflicts"] += 1
            logger.info("rollout tick skipped %s in %s: %s", target.flag, target.environment, error)
            continue
        except Exception:
            # One broken rollout must not stop the others from advancing; it is retried on the next tick.
            counts["errors"] += 1
            logger.exception("rollout tick failed for %s in %s", target.flag, target.environment)
            continue
        if result.held is not None:
            # Not logged: it holds on every tick while the incident lasts; the deadline step tells it once.
            counts["held"] += 1
        if result.deadline_told:
            counts["deadlines"] += 1
            logger.warning("rollout of %s in %s held past its progress deadline", target.flag, target.environment)
        status = result.advanced
        if status is not None:
            counts["advanced"] += 1
            logger.info(
                "rollout auto-advanced %s in %s to %s at %g%%",
                target.flag,
                target.environment,
                status.state,
                status.percentage,
            )
    return counts
