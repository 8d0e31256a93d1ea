"""What a rollback asks of whoever purges uploads: the seam between rollouts and bucket cleanup.

A rollback with ``purge_uploads_since`` also deletes what the flag's pipeline uploaded in the bad window. Rollouts
do not know buckets: the caller hands over a ``RollbackPurger`` (the control plane's is
``controlplane.rollback_purge.CleanupPurger``), checked before the rollback so a purge that cannot be asked for
changes nothing, and asked once the rollback has committed, so a purge is never queued for a rollback that did not
happen.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from sqlalchemy.orm import Session

from controlplane.errors import DomainError
from controlplane.rollouts.operations import RolloutTarget

__all__ = [
    "PurgeNotQueued",
    "PurgeTarget",
    "RollbackPurger",
    "new_incident_id",
    "purge_commands",
    "purge_not_queued",
    "purge_reason",
]

#: Where a purge deletes: a bucket, and the prefix under it ("" for the whole bucket).
PurgeTarget = tuple[str, str]


class PurgeNotQueued(DomainError):
    """The rollback is committed but queuing its purge failed: not something to retry as a whole (the rollout is
    rolled back now, so a second rollback is refused), so the answer says what was done and what is left to run."""

    status_code = 503
    title = "Rolled back; purge not queued"


def purge_reason(incident: str, *, flag: str, environment: str, reason: str) -> str:
    """The reason each purge of a rollback is audited with: the incident first, so the two records are found
    together."""
    return f"{incident}: rollback of {flag} in {environment}: {reason}"[:1000]


def purge_commands(
    targets: Sequence[PurgeTarget], *, since: datetime, until: datetime, reason: str, incident: str
) -> list[str]:
    """The ``controlplane cleanup purge`` commands that ask for the same purges by hand, one per target, recorded
    with the rollback's ``incident`` as its own purges are."""
    return [
        shlex.join(
            [
                "controlplane",
                "cleanup",
                "purge",
                "--bucket",
                bucket,
                *(["--prefix", prefix] if prefix else []),
                "--from",
                since.isoformat(),
                "--to",
                until.isoformat(),
                "--reason",
                reason,
                "--incident",
                incident,
            ]
        )
        for bucket, prefix in targets
    ]


def purge_not_queued(
    target: RolloutTarget,
    *,
    incident: str,
    state: str,
    targets: Sequence[PurgeTarget],
    since: datetime,
    until: datetime,
    reason: str,
    failure: Exception,
) -> PurgeNotQueued:
    """The refusal of a rollback of ``target`` that committed while queuing its purge failed: the rollback stands,
    the purge may have been queued all the same (a timeout, a failure after the commit), else here is how to run it."""
    commands = purge_commands(
        targets,
        since=since,
        until=until,
        reason=purge_reason(incident, flag=target.flag, environment=target.environment, reason=reason),
        incident=incident,
    )
    return PurgeNotQueued(
        "purge-not-queued",
        f"`{target.flag}` in {target} is rolled back (committed; {incident}), but queuing the purge of what its "
        f"pipeline uploaded since {since.isoformat()} failed or could not be confirmed ({type(failure).__name__}): "
        f"do not repeat the rollback; look for a `cleanup.purge` audit record whose reason begins with {incident} "
        f"(`controlplane audit list --action cleanup.purge`), and if there is none, purge by hand: "
        f"{'; '.join(commands)}",
        incident=incident,
        state=state,
        purge_commands=commands,
    )


def new_incident_id() -> str:
    """A fresh incident id: what a rollback's audit record and the purges it asked for share."""
    return f"incident-{uuid.uuid4().hex[:16]}"


@runtime_checkable  # Litestar checks injected values against the handler's annotation
class RollbackPurger(Protocol):
    """Purges the uploads of a flag's pipeline since an instant, as part of a rollback."""

    def check(self, session: Session, *, flag: str, since: datetime, now: datetime) -> Sequence[PurgeTarget]:
        """Refuse (``InvalidInput``) a purge that could not be asked for: no bucket, an empty or too wide window;
        otherwise where it would purge."""
        ...

    def request(
        self,
        session: Session,
        *,
        flag: str,
        environment: str,
        since: datetime,
        now: datetime,
        actor: str,
        reason: str,
        incident: str,
    ) -> list[int]:
        """Queue the purge of ``[since, now)`` in each bucket of the flag's pipeline (audited with ``incident``);
        return the cleanup runs' ids."""
        ...

    def start(self, runs: Sequence[int]) -> None:
        """Start the queued runs in this process (the leader's tick would otherwise start them)."""
        ...
