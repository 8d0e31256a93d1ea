"""The rollouts' answer to the flag routes' question ``rollout_serving`` (``flags.serving.RolloutServing``)."""

from __future__ import annotations

from collections.abc import Sequence

from litestar.di import Provide
from sqlalchemy.orm import Session

from controlplane.flags.serving import RolloutServing
from controlplane.rollouts import service
from controlplane.rollouts.status import serving_environments

__all__ = ["ServingRollouts", "dependencies"]


class ServingRollouts:
    """Reads the newest rollout of a flag per environment."""

    def environments(self, session: Session, flag_id: int, environments: Sequence[str]) -> list[str]:
        """The environments where a rollout of the flag is running, paused or completed."""
        return serving_environments(session, flag_id, environments)

    def in_environment(self, session: Session, *, key: str, environment: str) -> bool:
        """True while a rollout of the flag is running, paused or completed in ``environment``."""
        return service.is_rollout_serving(session, key=key, environment=environment)


_SERVING = ServingRollouts()


def provide_rollout_serving() -> RolloutServing:
    """The one ``ServingRollouts`` of the process."""
    return _SERVING


dependencies = {"rollout_serving": Provide(provide_rollout_serving, sync_to_thread=False)}
