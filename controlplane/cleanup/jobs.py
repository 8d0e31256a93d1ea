"""Executing cleanup runs: claim a run, run it page by page against its bucket, persist progress, record the end.

``run_cleanups`` is the leader's scheduled job (queue due slots, then work through queued and stalled runs);
``execute_run`` is one run, also used by the replica that accepted an operator's request, so it starts at once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from controlplane.cleanup import claims, runs, service
from controlplane.cleanup.claims import ClaimedRun
from controlplane.cleanup.runner import CleanupReport, RetryPolicy, run_cleanup
from controlplane.cleanup.schemas import RunStatus
from controlplane.cleanup.storage import GcsStorage, Storage
from controlplane.clock import Clock
from controlplane.db import session_scope
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.service import enqueue_notifications

__all__ = ["CleanupExecutor", "StorageFor", "execute_run", "gcs_storage_for", "new_runner_id", "run_cleanups"]

logger = logging.getLogger(__name__)

#: Builds the storage seam for a bucket.
StorageFor = Callable[[str], Storage]


class _RunLost(Exception):
    """Another runner took the run over (this one was presumed dead): stop without writing anything more."""


def gcs_storage_for(project: str) -> StorageFor:
    """Storage over the real google-cloud-storage client; the client is made on first use and shared."""
    clients: dict[str, Any] = {}

    def storage_for(bucket: str) -> Storage:
        if "client" not in clients:
            with warnings.catch_warnings():
                # google-api-core asks for grpcio-status at import; the storage client speaks HTTP only.
                warnings.simplefilter("ignore", ImportWarning)
                from google.cloud import storage

            clients["client"] = storage.Client(project=project or None)
        return GcsStorage(clients["client"], bucket)

    return storage_for


def new_runner_id(replica: str) -> str:
    """A runner's name: the replica and a short random part, unique per execution."""
    return f"{replica}/{uuid.uuid4().hex[:8]}"


def execute_run(
    factory: sessionmaker[Session],
    claimed: ClaimedRun,
    *,
    runner: str,
    storage_for: StorageFor,
    clock: Clock,
    metrics: ControlPlaneMetrics | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
) -> CleanupReport | None:
    """Run a claimed run to its end (or until ``should_stop``, handing it back queued); None when it was lost."""
    before = claimed.progress

    def persist(report: CleanupReport) -> None:
        with session_scope(factory) as session:
            if not claims.save_progress(session, run_id=claimed.id, runner=runner, report=report, now=clock()):
                raise _RunLost

    error = ""
    report = before
    try:
        storage = storage_for(claimed.bucket)
        report = run_cleanup(
            storage,
            claimed.selection,
            prefix=claimed.prefix,
            clock=clock,
            sleep=sleep,
            dry_run=claimed.dry_run,
            continue_from=before,
            on_page_done=persist,
            should_stop=should_stop,
            retry=retry,
        )
    except _RunLost:
        logger.warning("cleanup run %s was taken over by another runner; %s stops", claimed.id, runner)
        return None
    except Exception as exc:  # the run is recorded as failed with the reason; the job itself goes on
        error = f"{type(exc).__name__}: {exc}"
        # One line with what an operator needs. The storage client's errors (credentials, permissions, a missing
        # bucket) say it in their message; anything else is a bug here, and its traceback is for whoever fixes it.
        outside = type(exc).__module__.startswith("google.")
        logger.error(
            "cleanup run %s (%s, bucket %s) failed: %s",
            claimed.id,
            claimed.policy or "purge",
            claimed.bucket,
            error,
            exc_info=None if outside else exc,
        )
    with session_scope(factory) as session:
        if report.stopped and not error:
            claims.release_run(session, run_id=claimed.id, runner=runner, report=report, now=clock())
            logger.info("cleanup run %s handed back after %d pages; it resumes elsewhere", claimed.id, report.pages)
            return report
        finished = claims.finish_run(session, run_id=claimed.id, runner=runner, report=report, error=error, now=clock())
    if finished is None:
        return None
    if metrics is not None:
        _count(metrics, claimed, before, report, finished.status.value)
    # A scheduled run that found nothing to do is routine; one that deleted, skipped or failed anything is news
    # (a run that raised was told above, with why).
    eventful = report.deleted or report.failed or report.skipped or finished.status.value != RunStatus.SUCCEEDED.value
    logger.log(
        logging.INFO if eventful and (report.deleted or not error) else logging.DEBUG,
        "cleanup run %s (%s) %s: scanned %d, matched %d, deleted %d, skipped %d, failed %d",
        claimed.id,
        claimed.policy or "purge",
        finished.status.value,
        report.scanned,
        report.matched,
        report.deleted,
        sum(report.skipped.values()),
        report.failed,
    )
    return report


def _count(
    metrics: ControlPlaneMetrics, claimed: ClaimedRun, before: CleanupReport, after: CleanupReport, status: str
) -> None:
    policy = claimed.policy or ""
    kind = claimed.kind.value
    # This execution's share only: a resumed run's earlier pages were counted by the runner that did them.
    for outcome, count in (
        ("deleted", after.deleted - before.deleted),
        ("already_gone", after.already_gone - before.already_gone),
        ("skipped", sum(after.skipped.values()) - sum(before.skipped.values())),
        ("failed", after.failed - before.failed),
    ):
        if count and not claimed.dry_run:
            metrics.cleanup_objects.labels(policy, kind, outcome).inc(count)
    metrics.cleanup_runs.labels(policy, kind, status).inc()
    metrics.cleanup_run_duration.labels(policy, kind).observe(after.duration.total_seconds())


def run_cleanups(
    factory: sessionmaker[Session],
    *,
    replica: str,
    clock: Clock,
    storage_for: StorageFor,
    stale_after: timedelta,
    metrics: ControlPlaneMetrics | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    notifications: Callable[[], NotificationConfig] | None = None,
) -> dict[str, int]:
    """The leader's cleanup tick: queue runs whose slot has come, run queued and stalled runs one by one, then
    tell on-call (through ``notifications``' routes) about policies past their success deadline, and when they
    recover."""
    with session_scope(factory) as session:
        queued = runs.enqueue_due_runs(session, now=clock())
    executed = 0
    while should_stop is None or not should_stop():
        runner = new_runner_id(replica)
        with session_scope(factory) as session:
            claimed = claims.claim_run(session, runner=runner, now=clock(), stale_after=stale_after)
        if claimed is None:
            break
        execute_run(
            factory,
            claimed,
            runner=runner,
            storage_for=storage_for,
            clock=clock,
            metrics=metrics,
            should_stop=should_stop,
            sleep=sleep,
            retry=retry,
        )
        executed += 1
    config = notifications() if notifications is not None else None
    if config is not None and config.receivers:
        with session_scope(factory) as session:
            now = clock()
            enqueue_notifications(session, config, service.cleanup_alerts(session, now=now), now=now)
    return {"queued": len(queued), "executed": executed}


class CleanupExecutor:
    """Runs operator-requested runs in this replica at once, on a small thread pool.

    At shutdown runs in flight stop after their current page and are handed back queued: the leader's tick
    resumes them where they stopped.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        replica: str,
        storage_for: StorageFor,
        clock: Clock,
        stale_after: timedelta,
        metrics: ControlPlaneMetrics | None = None,
        workers: int = 2,
    ) -> None:
        self._factory = factory
        self._replica = replica
        self._storage_for = storage_for
        self._clock = clock
        self._stale_after = stale_after
        self._metrics = metrics
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cleanup")

    def submit(self, run_id: int) -> Future[CleanupReport | None]:
        """Start run ``run_id`` in the background (if no other runner took it first)."""
        return self._pool.submit(self._run, run_id)

    def _run(self, run_id: int) -> CleanupReport | None:
        runner = new_runner_id(self._replica)
        try:
            with session_scope(self._factory) as session:
                claimed = claims.claim_run(
                    session, runner=runner, now=self._clock(), stale_after=self._stale_after, run_id=run_id
                )
            if claimed is None:
                return None
            return execute_run(
                self._factory,
                claimed,
                runner=runner,
                storage_for=self._storage_for,
                clock=self._clock,
                metrics=self._metrics,
                should_stop=self._stopping.is_set,
            )
        except Exception:  # the run stays queued or running; the leader's tick picks it up
            logger.exception("cleanup run %s could not be executed here", run_id)
            return None

    def shutdown(self) -> None:
        """Stop runs after their current page, hand them back, and wait for the threads."""
        self._stopping.set()
        self._pool.shutdown(wait=True)
