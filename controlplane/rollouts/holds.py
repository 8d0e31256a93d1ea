"""What may hold an operator's operation on a rollout back, decided outside this domain.

Rollouts do not know why an operation should wait (an incident override in force is decided by the incidents
workflow, over flags): whoever calls ``operate_rollout`` hands over a ``RolloutHold`` that refuses, or None where
nothing may hold it (the incident actions' own pause and resume, an automatic rollback already weighed above).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

from controlplane.rollouts.operations import Operation, RolloutTarget

__all__ = ["RolloutHold"]


# Runtime-checkable: Litestar checks an injected dependency against its declared type.
@runtime_checkable
class RolloutHold(Protocol):
    """Asked before an operation changes anything: raises a ``DomainError`` (a 4xx) to refuse it."""

    def check(self, session: Session, target: RolloutTarget, operation: Operation) -> None:
        """Refuse ``operation`` on the rollout of ``target`` by raising; return to let it through."""
        ...
