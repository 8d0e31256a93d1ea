"""Whether a rollout decides what a flag serves: flags ask, the rollouts domain answers (flags sit below rollouts,
so the answer is handed in, as ``rollout_serving`` of the flag routes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

__all__ = ["RolloutServing"]


@runtime_checkable  # Litestar checks injected parameters against their type
class RolloutServing(Protocol):
    """Where a running, paused or completed rollout owns a flag's percentage, variant and cohort."""

    def environments(self, session: Session, flag_id: int, environments: Sequence[str]) -> list[str]:
        """The environments where a rollout of the flag serves its variant."""
        ...

    def in_environment(self, session: Session, *, key: str, environment: str) -> bool:
        """True while a rollout of the flag serves in ``environment``."""
        ...
