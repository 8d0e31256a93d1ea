"""create_app(settings) -> Litestar: routes under /api/v1, one guard, problem details, the scheduler in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from controlplane.alerting.controller import AlertController
from controlplane.announcements import dependencies as announcement_dependencies
from controlplane.api.cors import EvaluationCORS
from controlplane.api.dependencies import dependencies
from controlplane.api.health import healthz, readyz
from controlplane.api.openapi import RouteDocumentation, openapi_config
from controlplane.api.options import answer_options
from controlplane.api.problems import exception_handlers
from controlplane.api.rate_limits import RateLimiter
from controlplane.api.unit_of_work import UnitOfWork
from controlplane.audit.controller import AuditController
from controlplane.auth.controller import TokenController
from controlplane.auth.dependencies import dependencies as auth_dependencies
from controlplane.auth.guards import (
    REQUEST_LIMIT,
    PrincipalCache,
    address_identity,
    authorize,
    rate_limit_identity,
)
from controlplane.auth.stream_credentials import CredentialRedaction, StreamCredentials
from controlplane.cleanup.controller import CleanupController
from controlplane.cleanup.jobs import CleanupExecutor, StorageFor, gcs_storage_for
from controlplane.clock import Clock, system_clock
from controlplane.db import create_db_engine, reader_factory, session_scope
from controlplane.definitions.controller import DefinitionController
from controlplane.evaluation.controller import EvaluationController, OfrepController, limit_evaluation
from controlplane.evaluation.feed import ConfigurationFeed
from controlplane.exporter.metrics import StateMetrics, StreakMetrics, metrics
from controlplane.flags import service as flag_service
from controlplane.flags.controller import FlagController
from controlplane.guarding.controller import GuardController
from controlplane.guarding.dependencies import dependencies as gate_dependencies
from controlplane.guarding.dependencies import provide_gates
from controlplane.guarding.trigger import EvaluationTrigger, LeaderListener, guard_action, leader_notifier
from controlplane.guarding.webhook import AlertmanagerController
from controlplane.incidents.controller import IncidentController, SetVariantController
from controlplane.incidents.hold import dependencies as hold_dependencies
from controlplane.metrics import ControlPlaneMetrics, HttpMetricsMiddleware
from controlplane.migrate import is_at_head
from controlplane.notifications.config import load_notification_config
from controlplane.notifications.controller import NotificationController, SilenceController
from controlplane.notifications.dependencies import dependencies as notification_dependencies
from controlplane.rollback_purge import dependencies as rollback_purge_dependencies
from controlplane.rollouts.controller import RolloutController
from controlplane.rollouts.dependencies import dependencies as rollout_dependencies
from controlplane.scheduler import Leadership, Scheduler, build_evaluator, build_jobs
from controlplane.settings import Settings
from controlplane.telemetry.cache import CatalogCache
from controlplane.telemetry.controller import EventController
from controlplane.telemetry.metrics import EventMetrics
from controlplane.telemetry.writer import BatchWriter
from controlplane.ui.controller import make_live_pages, ui_router
from controlplane.ui.pages import TEMPLATES

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"
PUBLIC_PATHS = ["/healthz", "/readyz", "/schema", "/metrics"]
# Evaluation and ingest have their own per-second limits per token; management limits do not apply.
EVALUATION_PATHS = ["/ofrep", "/evaluation", f"{API_PREFIX}/events"]
# What browsers on CONTROLPLANE_CORS_ALLOWED_ORIGINS may call from their origin: OFREP and the stream, nothing else.
CORS_PATHS = ["/ofrep/", "/evaluation/"]
logger = logging.getLogger(__name__)
#: The stream URL carries a credential (OFREP eventStreams): uvicorn's access log would write it out whole.
CREDENTIAL_REDACTION = CredentialRedaction()


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    clock: Clock = system_clock,
    run_scheduler: bool | None = None,
    freeze_heap: bool = False,
    storage_for: StorageFor | None = None,
) -> Litestar:
    """Build the control plane's ASGI application.

    ``storage_for`` gives cleanup its bucket access (default: the google-cloud-storage client, made on first use).
    ``freeze_heap`` (for a serving process, not for tests that build many apps) moves everything alive after
    start-up out of the garbage collector's reach.
    """
    settings = settings or Settings.from_env()
    logging.getLogger("uvicorn.access").addFilter(CREDENTIAL_REDACTION)  # once: the same filter is not added twice
    engine = engine or create_db_engine(
        settings.database_url, connect_timeout=settings.database_connect_timeout_seconds
    )
    factory = sessionmaker(engine, expire_on_commit=False)
    reader = reader_factory(engine)
    catalog_cache = CatalogCache(reader, ttl=settings.catalog_cache_seconds)
    notification_config = load_notification_config(settings.notifications_file)
    process_metrics = ControlPlaneMetrics()
    feed = ConfigurationFeed(
        reader,
        engine,
        settings.environments,
        poll_seconds=settings.configuration_poll_seconds,
        refreshed=process_metrics.configuration_refreshed.set_to_current_time,
    )
    event_metrics = EventMetrics(catalog_cache.catalog_or_last)
    process_metrics.registry.register(event_metrics)
    process_metrics.registry.register(StateMetrics(reader))
    process_metrics.registry.register(StreakMetrics(reader, settings.environments, clock))
    with_scheduler = settings.scheduler_enabled if run_scheduler is None else run_scheduler
    storage_for = storage_for or gcs_storage_for(settings.gcs_project)
    cleanup_executor = CleanupExecutor(
        factory,
        replica=settings.replica_id,
        storage_for=storage_for,
        clock=clock,
        stale_after=timedelta(seconds=settings.cleanup_stale_seconds),
        metrics=process_metrics,
    )

    async def after_commit() -> None:
        # A replica's own commit reaches its evaluation at once (the feed) and its open pages at once (live pages).
        await feed.catch_up()
        live_pages.wake()

    # Ingest's commits trigger the evaluation of the rules they concern (the leader evaluates; see guarding.trigger).
    trigger = EvaluationTrigger(min_gap=settings.alert_trigger_min_seconds) if settings.alert_trigger_enabled else None
    on_postgresql = engine.dialect.name == "postgresql"
    listener = LeaderListener(engine, trigger) if trigger is not None and on_postgresql else None

    unit_of_work = UnitOfWork(factory, reader, after_commit=after_commit, deadline=settings.database_timeout_seconds)
    live_pages = make_live_pages(unit_of_work, settings, clock, provide_gates())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        watcher: asyncio.Task[None] | None = None
        ready = is_at_head(engine)
        if ready:
            with session_scope(factory) as session:
                # Settings may name environments added since flags were created: give every flag its rows now,
                # so reads never have to write.
                flag_service.ensure_every_flag_has_environments(session, settings.environments)
            feed.refresh()
            watcher = asyncio.create_task(feed.run(), name="configuration-feed")
        else:
            logger.error("the database schema is not at the newest migration: run `controlplane db upgrade`")
        scheduler: Scheduler | None = None
        if with_scheduler and ready:
            leadership = Leadership.for_settings(factory, settings, clock)
            # A rollback this replica commits is served (and streamed) at once, not at the feed's next poll.
            evaluator = build_evaluator(
                settings,
                factory,
                clock,
                metrics=process_metrics,
                notifications=notification_config,
                rolled_back=feed.wake,
            )
            jobs = build_jobs(
                settings,
                factory,
                leadership,
                clock,
                metrics=process_metrics,
                notifications=notification_config,
                storage_for=storage_for,
                evaluator=evaluator,
            )
            scheduler = Scheduler(jobs, leadership, process_metrics)
            scheduler.start()
            if trigger is not None:
                tell = leader_notifier(engine) if on_postgresql else None
                trigger.start(guard_action(evaluator, leadership.is_leader, tell))
                if listener is not None:
                    listener.start(leadership.is_leader)
        elif trigger is not None and ready and on_postgresql:
            # A replica without a scheduler never leads: it tells the leader.
            trigger.start(guard_action(None, lambda: False, leader_notifier(engine)))
        if freeze_heap:
            # Ingest allocates thousands of objects per batch, so the collector runs often; without this every
            # full collection walks the whole start-up heap (modules, mappers, routes) again. Measured: server CPU
            # per 1,000-event batch ~8.2 ms frozen against ~9.2 ms not (bench/README.md).
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            cleanup_executor.shutdown()
            if listener is not None:
                listener.stop()
            if trigger is not None:
                trigger.stop()
            if scheduler is not None:
                scheduler.shutdown()
            if watcher is not None:
                feed.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(watcher), timeout=30)
                except TimeoutError:  # a refresh stuck on the database: give up on it rather than hang shutdown
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher

    api = Router(
        path=API_PREFIX,
        route_handlers=[
            FlagController,
            RolloutController,
            SetVariantController,
            IncidentController,
            AuditController,
            TokenController,
            DefinitionController,
            EventController,
            AlertController,
            AlertmanagerController,
            GuardController,
            SilenceController,
            NotificationController,
            CleanupController,
        ],
    )
    evaluation = Router(
        path="/",
        route_handlers=[OfrepController, EvaluationController],
        # Counted by the one guard, `authorize`, once it knows the token (see controlplane.auth.guards).
        opt={REQUEST_LIMIT: limit_evaluation},
    )
    per_token = RateLimitConfig(
        rate_limit=("minute", settings.rate_limit_per_minute),
        identifier_for_request=rate_limit_identity,
        exclude=PUBLIC_PATHS + EVALUATION_PATHS,
        store="rate_limit_token",
    )
    per_address = RateLimitConfig(
        rate_limit=("minute", settings.rate_limit_per_address_per_minute),
        identifier_for_request=address_identity,
        exclude=PUBLIC_PATHS + EVALUATION_PATHS,
        store="rate_limit_address",
    )
    return Litestar(
        route_handlers=[api, evaluation, healthz, readyz, metrics, ui_router()],
        guards=[authorize],
        before_request=answer_options,
        dependencies={
            **dependencies,
            **auth_dependencies,
            **gate_dependencies,
            **rollout_dependencies,
            **notification_dependencies,
            **announcement_dependencies,
            **hold_dependencies,
            **rollback_purge_dependencies,
        },
        exception_handlers=exception_handlers,
        middleware=[
            lambda app: HttpMetricsMiddleware(app, process_metrics),
            # Inside the metrics, so a preflight is counted like any request; before the limits, which it never uses.
            lambda app: EvaluationCORS(app, origins=settings.cors_allowed_origins, prefixes=CORS_PATHS),
            per_address.middleware,
            per_token.middleware,
        ],
        lifespan=[lifespan, lambda _app: live_pages.running()],
        template_config=TemplateConfig(instance=JinjaTemplateEngine.from_environment(TEMPLATES)),
        # The process that serves configures logging once (controlplane.logs); Litestar's default would reconfigure
        # the root logger for every app built, in its own format.
        logging_config=None,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=openapi_config(
            title="Rollout control plane",
            version="1",
            description="Flags, staged rollouts, guards and automatic rollback. Errors are RFC 9457 problem details.",
        ),
        plugins=[RouteDocumentation()],
        state=State(
            {
                "settings": settings,
                "engine": engine,
                "reader": reader,
                "unit_of_work": unit_of_work,
                "live_pages": live_pages,
                "feed": feed,
                "principals": PrincipalCache(ttl_seconds=settings.token_cache_seconds),
                "stream_credentials": StreamCredentials.from_settings(
                    settings.stream_credential_keys, settings.stream_credential_seconds
                ),
                "evaluation_limiter": RateLimiter(settings.evaluation_rate_limit_per_second),
                "ingest_limiter": RateLimiter(settings.ingest_rate_limit_per_second),
                "catalog_cache": catalog_cache,
                "batch_writer": BatchWriter(
                    factory,
                    clock=clock,
                    deadline=settings.database_timeout_seconds,
                    committed=trigger.committed if trigger is not None else None,
                ),
                "metrics": process_metrics,
                "event_metrics": event_metrics,
                "notification_config": lambda: notification_config,
                "clock": clock,
                "cleanup_executor": cleanup_executor,
                "alert_trigger": trigger,
                "alert_trigger_listener": listener,
            }
        ),
    )
