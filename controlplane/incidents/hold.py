"""Nothing fights an incident override in force: while one holds a flag in an environment, an operator's start,
advance or resume of that flag's rollout there is refused (``409 incident-active``) and changes nothing.

Pause and rollback stay allowed: a pause changes nothing served, and a rollback during an incident is an SRE's
explicit act (it switches the flag off there, as any rollback does); it moves the environment's revision, so the
incident's undo is then refused with ``409 changed-since`` unless forced. Not the rollback of one segment of a plan
run per segment: it would serve the segments' percentages again, and the off variant outside every segment, in place
of the incident's variant. Automatic rollbacks are weighed by guarding (``guarding.rollback``), which holds them
while the override is in force.
"""

from __future__ import annotations

from litestar.di import Provide
from sqlalchemy.orm import Session

from controlplane.errors import Conflict
from controlplane.flags import service as flag_service
from controlplane.flags.incidents import undo_command
from controlplane.rollouts.holds import RolloutHold
from controlplane.rollouts.operations import Operation, RolloutTarget

__all__ = ["HELD_OPERATIONS", "IncidentHold", "dependencies"]

#: What an incident override in force refuses: every operation that would make the environment serve the rollout.
HELD_OPERATIONS = frozenset({Operation.START, Operation.ADVANCE, Operation.RESUME})


class IncidentHold:
    """The ``RolloutHold`` of the served app: refuses ``HELD_OPERATIONS`` under an incident override in force."""

    def check(self, session: Session, target: RolloutTarget, operation: Operation) -> None:
        """Raise ``409 incident-active`` naming the incident and its undo when one holds ``target``; a rollback of
        one segment too, which would serve every other context the segments' percentages again (the off variant
        outside every segment), not the incident's variant."""
        segment_rollback = operation is Operation.ROLLBACK and target.segment is not None
        if operation not in HELD_OPERATIONS and not segment_rollback:
            return
        incident = flag_service.active_incidents(session, key=target.flag).get((target.flag, target.environment))
        if incident is None:
            return
        raise Conflict(
            "incident-active",
            f"`{target.flag}` in {target.environment} serves `{incident.variant}` to everyone by incident "
            f"{incident.id} (by {incident.actor}: {incident.reason}); a rollout {operation.value}"
            f"{f' of {target.segment}' if target.segment else ''} would fight it: undo the incident first "
            f"({undo_command(incident.id)})",
            incident=incident.id,
            undo=undo_command(incident.id),
        )


_HOLD = IncidentHold()


def provide_hold() -> RolloutHold:
    """The one ``IncidentHold`` of the process."""
    return _HOLD


dependencies = {"hold": Provide(provide_hold, sync_to_thread=False)}
