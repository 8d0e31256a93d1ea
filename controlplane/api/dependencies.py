"""What handlers receive by injection: a unit of work, the principal, the clock, the settings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from controlplane.api.unit_of_work import UnitOfWork
from controlplane.errors import InvalidInput, PreconditionRequired
from controlplane.metrics import ControlPlaneMetrics
from controlplane.settings import Settings

__all__ = ["Now", "ProcessMetrics", "ProcessSettings", "Work", "dependencies", "expected_revision_from", "from_state"]

# Handler parameter types: injected by name from `dependencies` below.
Work = NamedDependency[UnitOfWork]
Now = NamedDependency[datetime]
ProcessSettings = NamedDependency[Settings]
ProcessMetrics = NamedDependency[ControlPlaneMetrics]


def provide_unit_of_work(state: State) -> UnitOfWork:
    """The app's unit of work: transactions run whole in a worker thread."""
    uow: UnitOfWork = state.unit_of_work
    return uow


def provide_now(state: State) -> datetime:
    """The time of this request, from the app's injected clock."""
    now: datetime = state.clock()
    return now


def provide_settings(state: State) -> Settings:
    """The process's settings."""
    settings: Settings = state.settings
    return settings


def from_state(name: str) -> Provide:
    """A dependency that hands a handler the app's ``name`` (set once in ``create_app``), so handlers receive the
    objects they use as parameters instead of reaching into ``request.app.state``."""

    def provide(state: State) -> Any:
        return state[name]

    return Provide(provide, sync_to_thread=False)


def expected_revision_from(if_match: str | None) -> int:
    """The revision in an `If-Match` header (`3`, `"3"` or `W/"3"`); 428 when absent, 422 when unreadable."""
    if if_match is None:
        raise PreconditionRequired(
            "revision-required",
            "send `If-Match` with the revision you last read, so you never overwrite a newer change",
        )
    raw = if_match.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise InvalidInput("invalid-if-match", f"`If-Match` must hold a revision number, got {if_match!r}")
    return int(raw)


dependencies = {
    "uow": Provide(provide_unit_of_work, sync_to_thread=False),
    "now": Provide(provide_now, sync_to_thread=False),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "metrics": from_state("metrics"),
}
