"""`serve` and `db upgrade`: the commands that work on the database itself, and the bootstrap `serve` runs first."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from controlplane.cli.client import CommandError
from controlplane.cli.output import Subcommands, add_command, stderr
from controlplane.settings import Settings

if TYPE_CHECKING:
    from litestar import Litestar

__all__ = ["add_server_commands", "bootstrap", "local_actor", "open_engine", "worker_app", "worker_settings"]

logger = logging.getLogger("controlplane.serve")

#: What uvicorn imports in each `serve --workers` process to build its app.
WORKER_APP = f"{__name__}:worker_app"


def open_engine(settings: Settings) -> Any:
    """An engine on the database the settings name."""
    from controlplane.db import create_db_engine

    return create_db_engine(settings.database_url, connect_timeout=settings.database_connect_timeout_seconds)


def local_actor() -> str:
    """Who runs a bootstrap command, for the audit log."""
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> None:
    """Migrate the database to the newest schema."""
    from controlplane.migrate import upgrade_to_head

    upgrade_to_head(open_engine(settings))
    stderr.print(f"database at the newest migration: {settings.database_url}")


def bootstrap(settings: Settings, engine: Any) -> str | None:
    """Migrate, apply the definitions folder, and create an admin token if none is active; return that token."""
    from sqlalchemy.orm import sessionmaker

    from controlplane.api.roles import Role
    from controlplane.auth import service as auth_service
    from controlplane.auth.schemas import TokenCreate
    from controlplane.db import session_scope, utcnow
    from controlplane.definitions.document import DefinitionError
    from controlplane.definitions.loader import load_definition
    from controlplane.definitions.service import apply_definition
    from controlplane.migrate import upgrade_to_head

    upgrade_to_head(engine)
    factory = sessionmaker(engine, expire_on_commit=False)
    paths = sorted(settings.definitions_dir.glob("*.yaml")) if settings.definitions_dir.is_dir() else []
    try:
        # Every file is read before any is applied, and all are applied in one transaction: all or nothing.
        definitions = [load_definition(path, environments=settings.environments) for path in paths]
    except DefinitionError as error:
        raise CommandError(f"invalid definition, nothing applied: {error}") from error
    with session_scope(factory) as session:
        reports = [
            apply_definition(
                session, definition=definition, actor="bootstrap", environments=settings.environments, now=utcnow()
            )
            for definition in definitions
        ]
    for path, report in zip(paths, reports, strict=True):
        logger.info("definitions %s: %s", "applied changes" if report.changed else "unchanged", path)
    with session_scope(factory) as session:
        if auth_service.has_token_with_role(session, Role.ADMIN):
            return None
        # A unique name: an earlier, revoked "admin" token keeps its name in the audit log.
        name = "admin-" + utcnow().strftime("%Y%m%dT%H%M%SZ")
        created = auth_service.create_token(
            session,
            request=TokenCreate(name=name, role=Role.ADMIN),
            actor="bootstrap",
            environments=settings.environments,
            now=utcnow(),
        )
    # The token itself goes to stdout only (cmd_serve): a log line is shipped and kept, a secret must not be.
    logger.info("created admin token %s: printed once on standard output, store it now", name)
    return created.token


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    """Migrate, apply the shipped definitions, make sure an admin token exists, then serve HTTP."""
    import uvicorn

    from controlplane.api.connections import PROTOCOL_IMPORT_STRING, ConnectionLimits, RecyclingHttpToolsProtocol
    from controlplane.app import create_app
    from controlplane.notifications.config import NotificationConfigError, load_notification_config

    workers: int = args.workers
    if workers < 1:
        raise CommandError(f"--workers must be 1 or more, got {workers}")
    if workers > 1 and settings.is_sqlite:
        raise CommandError(
            f"--workers {workers} needs PostgreSQL: SQLite has one writer and serves one process "
            "(set CONTROLPLANE_DATABASE_URL to postgresql+psycopg://..., or run one worker)"
        )
    _configure_logging(settings)
    try:
        # Checked before anything else: a bad notifications file must stop the start, not silence on-call.
        load_notification_config(settings.notifications_file)
    except NotificationConfigError as error:
        raise CommandError(f"notifications file: {error}") from error
    engine = open_engine(settings)
    token = bootstrap(settings, engine)
    if token is not None:
        # The only thing serve writes to stdout (the log is on stderr): a redirect keeps the secret apart, and a
        # stdout pipe nobody reads never fills up and blocks the server.
        print(token, flush=True)
    host = args.host or settings.host
    port = args.port or settings.port
    logger.info(
        "serving on http://%s:%s (API docs at /schema)%s",
        host,
        port,
        f" with {workers} worker processes" if workers > 1 else "",
    )
    # log_config=None: uvicorn keeps the handlers configured above (stderr, the format asked for) instead of its
    # own, which write access lines to stdout.
    if workers == 1:
        uvicorn.run(
            create_app(settings, engine=engine, freeze_heap=True),
            host=host,
            port=port,
            http=RecyclingHttpToolsProtocol.limited_to(ConnectionLimits.of(settings)),
            log_config=None,
            log_level=None,
        )
        return
    # Each worker is a new interpreter (spawned) that builds its own app and engine from the same environment
    # (worker_app) and reads the connection limit from it (the protocol); the parent only supervises them.
    engine.dispose()
    uvicorn.run(
        WORKER_APP,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        http=PROTOCOL_IMPORT_STRING,
        log_config=None,
        log_level=None,
    )


def _configure_logging(settings: Settings) -> None:
    """Write the log on stderr in the format, and from the level, that the settings name."""
    from controlplane.logs import configure_logging

    configure_logging(settings.log_format, getattr(logging, settings.log_level.upper()))  # type: ignore[arg-type]


def worker_settings(environ: Mapping[str, str], pid: int) -> Settings:
    """The settings of one `serve --workers` process: the environment's, with a replica id of its own."""
    settings = Settings.from_env(environ)
    if environ.get("CONTROLPLANE_REPLICA_ID"):
        # Workers share one environment: an id set there would be every worker's, and two holders of one name
        # would both lead. Each appends its process id (the default id, host name and process id, differs anyway).
        settings = dataclasses.replace(settings, replica_id=f"{settings.replica_id}-{pid}")
    return settings


def worker_app() -> Litestar:
    """The app of one `serve --workers` process (uvicorn's factory there): built from the environment as `serve`
    builds its own, scheduler included (the leader lease elects one leader among all workers and replicas)."""
    from controlplane.app import create_app

    settings = worker_settings(os.environ, os.getpid())
    # A spawned worker starts with Python's default logging: the same stderr format as the parent's.
    _configure_logging(settings)
    return create_app(settings, freeze_heap=True)


def add_server_commands(commands: Subcommands) -> None:
    """Add `serve` and `db upgrade` to the command line."""
    serve = add_command(commands, "serve", cmd_serve, "migrate, apply definitions, print a first admin token, serve")
    serve.add_argument("--host", help="the address to listen on (default: CONTROLPLANE_HOST)")
    serve.add_argument("--port", type=int, help="the port to listen on (default: CONTROLPLANE_PORT)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default: 1, in this process); more than 1 needs PostgreSQL",
    )

    db = commands.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    add_command(db, "upgrade", cmd_db_upgrade, "migrate the database to the newest schema")
