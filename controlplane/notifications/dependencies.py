"""The routes and receivers in force as a handler parameter: ``notification_config: CurrentNotificationConfig``."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import NamedDependency, Provide

from controlplane.notifications.config import NotificationConfig

__all__ = ["CurrentNotificationConfig", "dependencies"]

# Typed Any for Litestar alone: it would try to convert the config's receiver dataclasses as if they were input.
CurrentNotificationConfig = NamedDependency[Any]


def provide_notification_config(state: State) -> NotificationConfig:
    """The configuration the app loaded (asked per request: the app holds how to read it)."""
    config: NotificationConfig = state.notification_config()
    return config


dependencies = {"notification_config": Provide(provide_notification_config, sync_to_thread=False)}
