"""Engine, session factory and the declarative Base shared by every domain's models."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import JSON, DateTime, Engine, MetaData, create_engine, event, func, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

__all__ = [
    "READ_ONLY_OPTION",
    "UNAVAILABLE",
    "Base",
    "DatabaseTimeout",
    "JSONDocument",
    "UTCDateTime",
    "announce_on_commit",
    "create_db_engine",
    "in_thread",
    "read_within",
    "reader_factory",
    "remaining",
    "session_scope",
    "start_request_deadline",
    "statement_timeout",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Execution option marking a read-only unit of work (SQLite begins it without the write lock).
READ_ONLY_OPTION = "controlplane_read_only"

#: JSON on SQLite, JSONB on PostgreSQL.
JSONDocument = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are refused: pass an aware UTC time")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so migrations name constraints the same on every database."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_db_engine(url: str, *, echo: bool = False, connect_timeout: float = 3.0) -> Engine:
    """Create the engine for ``url``; SQLite gets WAL, foreign keys and write-serialising transactions.

    On PostgreSQL, opening a connection gives up after ``connect_timeout`` seconds (libpq counts whole seconds, at
    least 2), as does waiting for a free one in the pool, and TCP keepalives notice a peer that went away within
    about 15 s: a database that cannot be reached fails the request instead of hanging it."""
    if not url.startswith("sqlite"):
        return create_engine(
            url,
            echo=echo,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=40,
            pool_timeout=connect_timeout,
            connect_args={
                "connect_timeout": max(2, math.ceil(connect_timeout)),
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 3,
            },
        )
    engine = create_engine(
        url,
        echo=echo,
        # One connection per use: SQLite connections are cheap and must not cross threads.
        poolclass=NullPool,
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide where transactions begin (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            # Readers never take the write lock: in WAL mode they see the last commit and block nobody.
            connection.exec_driver_sql("BEGIN")
            return
        # BEGIN IMMEDIATE takes the write lock up front, so two writers queue instead of one failing
        # half-way with "database is locked"; the audit chain relies on that order.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class DatabaseTimeout(Exception):
    """The database did not answer within a request's deadline (down, frozen, or out of connections)."""


#: What a database that is down, unreachable, restarting or out of connections raises under a request.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout, DatabaseTimeout)


T = TypeVar("T")

#: When the current request's database budget runs out (monotonic seconds); None outside a request. A request's
#: token lookup and its own work share one budget, so no request waits longer than the deadline in all.
_REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("request_deadline", default=None)


def start_request_deadline(seconds: float) -> None:
    """Give the current request (its task) ``seconds`` of database time in all, from now."""
    _REQUEST_DEADLINE.set(time.monotonic() + seconds)


def remaining(deadline: float | None) -> float | None:
    """``deadline``, cut to what is left of the current request's budget (None: no limit at all)."""
    end = _REQUEST_DEADLINE.get()
    if end is None:
        return deadline
    left = max(0.0, end - time.monotonic())
    return left if deadline is None else min(deadline, left)


async def in_thread(
    function: Callable[..., T], *args: Any, deadline: float | None, limiter: anyio.CapacityLimiter | None = None
) -> T:
    """Run blocking database ``function(*args)`` in a worker thread; raise ``DatabaseTimeout`` when it has not
    returned within ``deadline`` seconds (None: wait as long as it takes).

    The thread is left to finish on its own: a frozen database (a paused server still acknowledges TCP, so no
    client timeout fires) holds the thread, not the request. A write it was doing may still commit later, which is
    why a timed-out request answers "retry", and retries are safe (batch ids, revision checks)."""
    deadline = remaining(deadline)
    if deadline is None:
        return await anyio.to_thread.run_sync(function, *args, limiter=limiter)
    try:
        with anyio.fail_after(deadline):
            return await anyio.to_thread.run_sync(function, *args, abandon_on_cancel=True, limiter=limiter)
    except TimeoutError as error:
        raise DatabaseTimeout(f"the database did not answer within {deadline:g} s") from error


def read_within(function: Callable[[], T]) -> T:
    """Call blocking ``function()`` from synchronous code (a metrics collector) within what is left of the current
    request's budget; raise ``DatabaseTimeout`` when it has not returned by then. Outside a request, just call it.

    As ``in_thread``: a frozen database holds a daemon thread, not the caller, and the thread finishes on its own."""
    deadline = remaining(None)
    if deadline is None:
        return function()
    result: Future[T] = Future()

    def run() -> None:
        try:
            result.set_result(function())
        except BaseException as error:  # handed to the caller, who decides
            result.set_exception(error)

    threading.Thread(target=run, name="controlplane-read", daemon=True).start()
    try:
        return result.result(timeout=deadline)
    except TimeoutError as error:
        raise DatabaseTimeout(f"the database did not answer within {deadline:g} s") from error


def statement_timeout(session: Session, seconds: float) -> None:
    """On PostgreSQL, cancel this transaction's statements that run longer than ``seconds`` (the server frees what
    a timed-out request was doing); nothing on SQLite, whose busy timeout bounds its only wait."""
    if session.get_bind().dialect.name == "postgresql":
        milliseconds = str(max(1, round(seconds * 1000)))
        session.execute(text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": milliseconds})


#: Any constant works; it names the one lock that orders writing transactions across replicas on PostgreSQL.
WRITE_LOCK_KEY = 7_311_001


@contextmanager
def session_scope(factory: sessionmaker[Session], *, timeout: float | None = None) -> Iterator[Session]:
    """Run a unit of work: commit when the block succeeds, roll back when it raises. With ``timeout``, PostgreSQL
    cancels any of its statements (the write lock's wait included) that runs longer.

    On PostgreSQL a writing unit of work first takes a transaction-level advisory lock, so control-plane writes
    (rare, small) run one at a time across replicas: no deadlocks between lock orders, no racing inserts, and
    the audit chain never forks. SQLite gets the same from BEGIN IMMEDIATE.
    """
    session = factory()
    try:
        if timeout is not None:
            statement_timeout(session, timeout)
        bind = session.get_bind()
        if bind.dialect.name == "postgresql" and not bind.get_execution_options().get(READ_ONLY_OPTION):
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK_KEY})
        yield session
        _send_announcements(session)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


_ANNOUNCEMENTS = "controlplane.announcements"


def announce_on_commit(session: Session, channel: str) -> None:
    """Tell every replica listening on ``channel`` once this unit of work commits (PostgreSQL NOTIFY; SQLite
    replicas poll). Said explicitly by the service that made the change; ``session_scope`` sends it."""
    session.info.setdefault(_ANNOUNCEMENTS, set()).add(channel)


def _send_announcements(session: Session) -> None:
    channels: set[str] = session.info.pop(_ANNOUNCEMENTS, set())
    if channels and session.get_bind().dialect.name == "postgresql":
        # Queued in this transaction: PostgreSQL delivers a NOTIFY only when, and only if, the transaction commits.
        for channel in sorted(channels):
            session.execute(select(func.pg_notify(channel, "")))


def reader_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for read-only work: on SQLite they do not queue behind writers."""
    return sessionmaker(engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False)
