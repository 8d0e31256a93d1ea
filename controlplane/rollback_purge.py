"""A rollback that finishes the job: the purge of the bad window asked for with it, as one incident.

    rollout rollback FLAG --purge-uploads-since T
      1. CleanupPurger.check    the purge could be queued (a bucket of the flag's pipeline, a sane window): else 4xx
                                and nothing changed
      2. operate_rollout        the rollback, its audit record's ``after`` naming the incident and T (committed)
      3. CleanupPurger.request  one purge of [T, now) per bucket of the pipeline's cleanup policies, each audited
                                as ``cleanup.purge`` with the same incident id (committed), then started here

A workflow, as rollouts and cleanup are domains that must not import each other: rollouts hand the purge to the
``RollbackPurger`` they are given, this module is the control plane's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from litestar.datastructures import State
from litestar.di import Provide
from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.cleanup.models import CleanupPolicyRow
from controlplane.cleanup.runs import check_purge, request_purge
from controlplane.cleanup.schemas import PurgeRequest
from controlplane.errors import InvalidInput
from controlplane.flags import service as flag_service
from controlplane.rollouts.purges import PurgeTarget, RollbackPurger, purge_reason

__all__ = ["CleanupPurger", "dependencies", "purge_targets"]


def purge_targets(session: Session, pipeline: str) -> list[tuple[str, str]]:
    """The (bucket, prefix) pairs a rollback of ``pipeline``'s flag purges: each bucket its cleanup policies name,
    under the prefix they share (none when they differ, so nothing uploaded to the bucket is missed)."""
    prefixes: dict[str, set[str]] = {}
    for bucket, prefix in session.execute(
        select(CleanupPolicyRow.bucket, CleanupPolicyRow.prefix).where(CleanupPolicyRow.pipeline == pipeline)
    ):
        prefixes.setdefault(bucket, set()).add(prefix or "")
    return [(bucket, next(iter(found)) if len(found) == 1 else "") for bucket, found in sorted(prefixes.items())]


class CleanupPurger:
    """Purges through bucket cleanup: the buckets of the flag's pipeline, ``[since, now)``, audited as an incident."""

    def __init__(self, max_window: timedelta, submit: Callable[[int], object] | None = None) -> None:
        self._max_window = max_window
        self._submit = submit

    def _requests(self, session: Session, flag: str, since: datetime, now: datetime, reason: str) -> list[PurgeRequest]:
        pipeline = flag_service.get_flag(session, flag).pipeline
        targets = purge_targets(session, pipeline) if pipeline else []
        if not targets:
            raise InvalidInput(
                "no-bucket-to-purge",
                f"flag `{flag}` belongs to no pipeline with a cleanup policy, so there is no bucket to purge; "
                "roll back without `purge_uploads_since`",
                field="purge_uploads_since",
            )
        return [
            PurgeRequest(bucket=bucket, start=since, end=now, reason=reason, prefix=prefix)
            for bucket, prefix in targets
        ]

    def check(self, session: Session, *, flag: str, since: datetime, now: datetime) -> list[PurgeTarget]:
        """Refuse a purge that could not be queued, before anything changes; otherwise the buckets and prefixes it
        would purge."""
        if since >= now:
            # Said in the rollback's words: the purge's own check would speak of a `from` and `to` never given.
            raise InvalidInput(
                "purge-window-empty",
                f"`purge_uploads_since` {since.isoformat()} is not before the rollback ({now.isoformat()}): "
                "there is no window to purge",
                field="purge_uploads_since",
            )
        if now - since > self._max_window:
            raise InvalidInput(
                "purge-window-too-wide",
                f"`purge_uploads_since` {since.isoformat()} is {now - since} before the rollback, more than the "
                f"{self._max_window.days} days one purge may delete; roll back with a later time and purge older "
                "uploads with `controlplane cleanup purge`",
                field="purge_uploads_since",
            )
        requests = self._requests(session, flag, since, now, "check")
        for request in requests:
            check_purge(session, body=request, now=now, max_window=self._max_window)
        return [(request.bucket, request.prefix or "") for request in requests]

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
        """Queue the purges, each audited with the incident and the rollback it follows."""
        why = purge_reason(incident, flag=flag, environment=environment, reason=reason)
        return [
            request_purge(
                session, body=request, actor=actor, now=now, max_window=self._max_window, incident=incident
            ).id
            for request in self._requests(session, flag, since, now, why)
        ]

    def start(self, runs: Sequence[int]) -> None:
        """Run them in this replica now (without an executor, the leader's tick starts them)."""
        if self._submit is not None:
            for run in runs:
                self._submit(run)


def provide_purger(state: State) -> RollbackPurger:
    """The purger over the app's settings and cleanup executor."""
    executor = getattr(state, "cleanup_executor", None)
    return CleanupPurger(
        timedelta(days=state.settings.cleanup_purge_max_days), executor.submit if executor is not None else None
    )


dependencies = {"purger": Provide(provide_purger, sync_to_thread=False)}
