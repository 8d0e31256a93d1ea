"""The one list of scheduled jobs, and the leader election that lets exactly one replica run them.

Every replica runs an APScheduler BackgroundScheduler with the same jobs. A lease in the database
(`leader_leases`) elects the leader, and a job does work only in the replica that holds it.

The timing keeps the promise that fail-over takes at most ``leader_lease_seconds`` (L): the lease is written to
last L/2, and every replica tries to take or renew it every L/6. A leader that dies stops renewing: its lease runs
out at most L/2 later, and a follower takes it within L/6 more (2L/3 at worst), then runs every leader-only job at
once rather than at its next interval. A leader that cannot renew (its database hangs, it was paused) stops acting
L/12 before its lease runs out, so no two replicas run a job as leader at the same time (with clocks within L/12).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.orm import Session, sessionmaker

from controlplane.alerting.prometheus import prometheus_source
from controlplane.announcements import NotificationAnnouncer
from controlplane.cleanup.jobs import StorageFor, gcs_storage_for, run_cleanups
from controlplane.clock import Clock
from controlplane.db import session_scope
from controlplane.guarding.jobs import GuardEvaluator
from controlplane.guarding.readings import AlertGateReader
from controlplane.incidents.hold import IncidentHold
from controlplane.metrics import ControlPlaneMetrics
from controlplane.notifications.config import NotificationConfig
from controlplane.notifications.jobs import deliver_due_notifications
from controlplane.retention import expire_telemetry
from controlplane.rollouts.jobs import advance_baked_rollouts
from controlplane.scheduling.failures import FailureStreak
from controlplane.scheduling.lease import release_lease, try_acquire_lease
from controlplane.settings import Settings

__all__ = ["LEASE_NAME", "JobSpec", "Leadership", "Scheduler", "build_evaluator", "build_jobs"]

LEASE_NAME = "scheduler"
logger = logging.getLogger(__name__)


class Leadership:
    """This replica's view of the lease: leader only while its last renewal is younger than the TTL, less a margin
    (``margin``: it stops acting that long before the lease can pass to another replica)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        holder: str,
        ttl: timedelta,
        clock: Clock,
        margin: timedelta = timedelta(0),
    ) -> None:
        self._factory = factory
        self.holder = holder
        self._ttl = ttl
        self._margin = margin
        self._clock = clock
        self._held_until: datetime | None = None
        self._lock = threading.Lock()
        #: Called (in the renewing thread) when this replica becomes the leader: the scheduler runs its jobs now.
        self.on_elected: Callable[[], None] | None = None
        self._renewals = FailureStreak(logger, "leader lease renewal (acting as follower meanwhile)")

    @classmethod
    def for_settings(cls, factory: sessionmaker[Session], settings: Settings, clock: Clock) -> Leadership:
        """The lease timing that keeps fail-over within ``leader_lease_seconds`` (see the module docstring)."""
        promised = timedelta(seconds=settings.leader_lease_seconds)
        return cls(factory, holder=settings.replica_id, ttl=promised / 2, clock=clock, margin=promised / 12)

    def renew(self) -> bool:
        """Take or renew the lease; return whether this replica leads now."""
        now = self._clock()
        try:
            with session_scope(self._factory) as session:
                held = try_acquire_lease(session, name=LEASE_NAME, holder=self.holder, now=now, ttl=self._ttl)
        except Exception as error:
            self._renewals.failed(error)
            held = False
        else:
            self._renewals.succeeded()
        with self._lock:
            was_leader = self._held_until is not None and self._held_until > now
            self._held_until = now + self._ttl - self._margin if held else None
        if held != was_leader:
            logger.info("replica %s is now %s", self.holder, "the leader" if held else "a follower")
            if held and self.on_elected is not None:
                self.on_elected()
        return held

    def is_leader(self) -> bool:
        """True while the lease this replica last took has not run out, less the margin (and it is not stepping
        down)."""
        with self._lock:
            return self._held_until is not None and self._held_until > self._clock()

    def step_down(self) -> None:
        """Stop acting as the leader at once (jobs in flight see it between steps); the lease is released later."""
        with self._lock:
            self._held_until = None

    def release(self) -> None:
        """Hand the lease back at shutdown."""
        with self._lock:
            self._held_until = None
        with session_scope(self._factory) as session:
            release_lease(session, name=LEASE_NAME, holder=self.holder, now=self._clock())


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A scheduled job: an id, how often, and whether it needs the lease."""

    id: str
    run: Callable[[], Any]
    every: timedelta
    leader_only: bool = True


def build_evaluator(
    settings: Settings,
    factory: sessionmaker[Session],
    clock: Clock,
    *,
    metrics: ControlPlaneMetrics | None = None,
    notifications: NotificationConfig | None = None,
    rolled_back: Callable[[], None] | None = None,
) -> GuardEvaluator:
    """The leader's one alert evaluator, shared by the tick and the evaluations ingest triggers."""
    config = notifications or NotificationConfig()
    return GuardEvaluator(
        factory,
        environments=settings.environments,
        clock=clock,
        notifications=lambda: config,
        metrics=metrics,
        window_size=settings.telemetry_window,
        prometheus=prometheus_source(settings.prometheus_url, settings.prometheus_query_timeout_seconds),
        rolled_back=rolled_back,
    )


def build_jobs(
    settings: Settings,
    factory: sessionmaker[Session],
    leadership: Leadership,
    clock: Clock,
    *,
    metrics: ControlPlaneMetrics | None = None,
    notifications: NotificationConfig | None = None,
    http: httpx.Client | None = None,
    storage_for: StorageFor | None = None,
    evaluator: GuardEvaluator | None = None,
) -> list[JobSpec]:
    """Every scheduled job of the control plane. Add new jobs here and nowhere else.

    ``evaluator`` runs the alert tick (default: one of its own); pass the one ingest triggers too.
    """
    config = notifications or NotificationConfig()
    client = http or httpx.Client(timeout=5.0)
    evaluate = evaluator or build_evaluator(settings, factory, clock, metrics=metrics, notifications=config)
    gates = AlertGateReader()
    announcer = NotificationAnnouncer(lambda: config, metrics)
    storage = storage_for or gcs_storage_for(settings.gcs_project)
    return [
        JobSpec(
            "renew_leader_lease",
            leadership.renew,
            timedelta(seconds=settings.leader_lease_seconds / 6),
            leader_only=False,
        ),
        JobSpec(
            "advance_baked_rollouts",
            lambda: advance_baked_rollouts(
                factory,
                environments=settings.environments,
                clock=clock,
                gates=gates,
                announcer=announcer,
                hold=IncidentHold(),
            ),
            timedelta(seconds=settings.rollout_tick_seconds),
        ),
        JobSpec("evaluate_alert_rules", evaluate, timedelta(seconds=settings.alert_evaluation_seconds)),
        JobSpec(
            "deliver_notifications",
            lambda: deliver_due_notifications(
                factory,
                config,
                clock=clock,
                client=client,
                metrics=metrics,
                max_attempts=settings.notification_max_attempts,
            ),
            timedelta(seconds=settings.notification_delivery_seconds),
        ),
        JobSpec(
            "expire_telemetry",
            lambda: expire_telemetry(
                factory,
                clock=clock,
                window_retention=settings.telemetry_retention,
                max_event_age=settings.event_max_age,
                alert_history_retention=settings.alert_history_retention,
            ),
            timedelta(seconds=settings.retention_job_seconds),
        ),
        JobSpec(
            "run_cleanups",
            lambda: run_cleanups(
                factory,
                replica=settings.replica_id,
                clock=clock,
                storage_for=storage,
                stale_after=timedelta(seconds=settings.cleanup_stale_seconds),
                metrics=metrics,
                # Between pages: a replica that stops leading hands its run back for the new leader to resume.
                should_stop=lambda: not leadership.is_leader(),
                notifications=lambda: config,
            ),
            timedelta(seconds=settings.cleanup_tick_seconds),
        ),
    ]


class Scheduler:
    """APScheduler in the background, running the job list; leader-only jobs skip in followers."""

    def __init__(self, jobs: list[JobSpec], leadership: Leadership, metrics: ControlPlaneMetrics | None = None) -> None:
        self._jobs = jobs
        self._leadership = leadership
        self._metrics = metrics
        self._scheduler = BackgroundScheduler(timezone="UTC")

    def _guarded(self, job: JobSpec) -> Callable[[], Any]:
        failures = FailureStreak(logger, f"job {job.id}")

        def run() -> Any:
            if job.leader_only and not self._leadership.is_leader():
                if self._metrics is not None:
                    self._metrics.job_runs.labels(job.id, "skipped").inc()
                return None
            try:
                result = job.run() if self._metrics is None else self._metrics.timed_job(job.id, job.run)
            except Exception as error:
                # Logged here, once per streak (counted in controlplane_scheduler_job_runs_total), not by APScheduler
                # on every run: a job failing each second through an outage would write a traceback a second.
                failures.failed(error)
                return None
            failures.succeeded()
            # A run that changed something says so itself, at INFO (a stage advanced, a rollback, a deletion).
            logger.debug("job %s finished: %s", job.id, result)
            return result

        return run

    def start(self) -> None:
        """Elect, then schedule every job (max one instance each, missed runs coalesced)."""
        self._leadership.on_elected = self._run_leader_jobs_now
        self._leadership.renew()
        for job in self._jobs:
            self._scheduler.add_job(
                self._guarded(job),
                "interval",
                seconds=job.every.total_seconds(),
                id=job.id,
                name=job.id,
                max_instances=1,
                coalesce=True,
                replace_existing=True,
            )
        self._scheduler.start()

    def _run_leader_jobs_now(self) -> None:
        """A new leader runs each leader-only job now, not at its next interval: fail-over ends with the lease."""
        if not self._scheduler.running:
            return  # the first election, at start: the jobs are about to be scheduled
        now = datetime.now(UTC)
        for job in self._jobs:
            if job.leader_only:
                with contextlib.suppress(JobLookupError):
                    self._scheduler.modify_job(job.id, next_run_time=now)

    def shutdown(self) -> None:
        """Stop the jobs and hand back the lease."""
        # First, so long jobs (a cleanup run) stop after their current step instead of holding shutdown up.
        self._leadership.step_down()
        self._scheduler.shutdown(wait=True)
        try:
            self._leadership.release()
        except Exception:
            logger.exception("could not release the leader lease; it expires on its own")
