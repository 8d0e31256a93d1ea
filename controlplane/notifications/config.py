"""The notifications file: who hears about alerts (receivers) and which alerts each hears about (routes).

    receivers:
      oncall:   {type: pagerduty, routing_key: "${PAGERDUTY_ROUTING_KEY}"}
      alerts:   {type: slack, url: "${SLACK_WEBHOOK_URL}"}
      hooks:    {type: webhook, url: https://example.internal/hook, headers: {Authorization: "Bearer ${HOOK_TOKEN}"}}
    routes:
      - {severity: [page], receivers: [oncall, alerts], continue: true}
      - {receivers: [alerts]}            # no severity: every severity

Routes are tried in order; the first that matches an alert's severity wins unless it says ``continue: true``.
``${NAME}`` in a receiver's values is replaced by that environment variable when the file is loaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

__all__ = [
    "PAGERDUTY_EVENTS_URL",
    "NotificationConfig",
    "NotificationConfigError",
    "PagerDutyReceiver",
    "Receiver",
    "Route",
    "SlackReceiver",
    "WebhookReceiver",
    "load_notification_config",
    "parse_notification_config",
]

PAGERDUTY_EVENTS_URL: Final = "https://events.pagerduty.com/v2/enqueue"
_RECEIVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class NotificationConfigError(ValueError):
    """A notifications file that cannot be used: the file, the field and why."""


# --- the configuration, as the rest of the code sees it ---------------------------------------------------------
# Secrets (URLs of Slack and webhooks carry tokens; routing keys; headers) are kept out of repr, so they never
# reach a log line or a traceback.


@dataclass(frozen=True, slots=True)
class WebhookReceiver:
    """POSTs the generic JSON body, one grouped message per enqueue, to ``url`` with ``headers``."""

    type: ClassVar[str] = "webhook"
    grouped: ClassVar[bool] = True
    name: str
    url: str = field(repr=False)
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)


@dataclass(frozen=True, slots=True)
class PagerDutyReceiver:
    """Sends one Events API v2 event per alert event to ``url`` under ``routing_key``."""

    type: ClassVar[str] = "pagerduty"
    grouped: ClassVar[bool] = False
    name: str
    routing_key: str = field(repr=False)
    url: str = PAGERDUTY_EVENTS_URL


@dataclass(frozen=True, slots=True)
class SlackReceiver:
    """Posts one grouped message per enqueue to a Slack incoming webhook ``url``."""

    type: ClassVar[str] = "slack"
    grouped: ClassVar[bool] = True
    name: str
    url: str = field(repr=False)


Receiver = WebhookReceiver | PagerDutyReceiver | SlackReceiver


@dataclass(frozen=True, slots=True)
class Route:
    """Alerts of these severities (None: any) go to these receivers; ``continue_`` lets later routes match too."""

    receivers: tuple[str, ...]
    severities: frozenset[str] | None = None
    continue_: bool = False

    def matches(self, severity: str) -> bool:
        """True when an alert of ``severity`` takes this route."""
        return self.severities is None or severity in self.severities


@dataclass(frozen=True, slots=True)
class NotificationConfig:
    """Receivers by name and the routes that pick them; empty means nobody is notified."""

    receivers: Mapping[str, Receiver] = field(default_factory=lambda: MappingProxyType({}))
    routes: tuple[Route, ...] = ()

    @classmethod
    def empty(cls) -> NotificationConfig:
        """No receivers, no routes: alert states are kept and nobody is told."""
        return cls()

    def receivers_for(self, severity: str) -> list[Receiver]:
        """The receivers of an alert of ``severity``: the first matching route's, plus any after a ``continue``."""
        names: list[str] = []
        for route in self.routes:
            if not route.matches(severity):
                continue
            names.extend(name for name in route.receivers if name not in names)
            if not route.continue_:
                break
        return [self.receivers[name] for name in names]


# --- the file, as written ----------------------------------------------------------------------------------------

SeverityName = Literal["page", "ticket", "info"]


class _WebhookSpec(msgspec.Struct, tag_field="type", tag="webhook", forbid_unknown_fields=True):
    url: str
    headers: dict[str, str] = {}


class _PagerDutySpec(msgspec.Struct, tag_field="type", tag="pagerduty", forbid_unknown_fields=True):
    routing_key: str
    url: str = PAGERDUTY_EVENTS_URL


class _SlackSpec(msgspec.Struct, tag_field="type", tag="slack", forbid_unknown_fields=True):
    url: str


class _RouteSpec(msgspec.Struct, forbid_unknown_fields=True):
    receivers: list[str]
    severity: SeverityName | list[SeverityName] | None = None
    continue_: bool = msgspec.field(default=False, name="continue")


class _FileSpec(msgspec.Struct, forbid_unknown_fields=True):
    receivers: dict[str, _WebhookSpec | _PagerDutySpec | _SlackSpec] = {}
    routes: list[_RouteSpec] = []


def load_notification_config(path: Path, *, environ: Mapping[str, str] | None = None) -> NotificationConfig:
    """Read the notifications file at ``path``; a file that does not exist is an empty configuration."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return NotificationConfig()
    except OSError as error:
        raise NotificationConfigError(f"{path}: cannot read: {error.strerror}") from error
    return parse_notification_config(text, source=str(path), environ=environ)


def parse_notification_config(
    text: str, *, source: str = "<notifications>", environ: Mapping[str, str] | None = None
) -> NotificationConfig:
    """Parse and check a notifications file's text; ``${NAME}`` is read from ``environ`` (default: os.environ)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise NotificationConfigError(f"{source}: not valid YAML: {error}") from error
    if raw is None:
        return NotificationConfig()
    if not isinstance(raw, dict):
        raise NotificationConfigError(f"{source}: expected a mapping with `receivers` and `routes`")
    receivers = raw.get("receivers")
    if isinstance(receivers, dict):
        env = os.environ if environ is None else environ
        raw = {**raw, "receivers": _expand(receivers, env, source=source, path="receivers")}
    try:
        spec = msgspec.convert(raw, _FileSpec)
    except msgspec.ValidationError as error:
        raise NotificationConfigError(f"{source}: {error}") from error
    return _build(spec, source)


def _expand(value: Any, environ: Mapping[str, str], *, source: str, path: str) -> Any:
    if isinstance(value, dict):
        return {key: _expand(item, environ, source=source, path=f"{path}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, environ, source=source, path=f"{path}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name = match[1]
        found = environ.get(name)
        if not found:
            raise NotificationConfigError(f"{source}: {path}: environment variable {name} is not set (or is empty)")
        return found

    return _VARIABLE.sub(substitute, value)


def _build(spec: _FileSpec, source: str) -> NotificationConfig:
    receivers: dict[str, Receiver] = {}
    for name, receiver_spec in spec.receivers.items():
        where = f"{source}: receivers.{name}"
        if not _RECEIVER_NAME.match(name):
            raise NotificationConfigError(
                f"{where}: a receiver name is 1-128 letters, digits, dots, dashes or underscores"
            )
        _check_url(receiver_spec.url, where=f"{where}.url")
        receiver: Receiver
        if isinstance(receiver_spec, _PagerDutySpec):
            if not receiver_spec.routing_key.strip():
                raise NotificationConfigError(f"{where}.routing_key: must not be empty")
            receiver = PagerDutyReceiver(name, routing_key=receiver_spec.routing_key, url=receiver_spec.url)
        elif isinstance(receiver_spec, _SlackSpec):
            receiver = SlackReceiver(name, url=receiver_spec.url)
        else:
            receiver = WebhookReceiver(name, url=receiver_spec.url, headers=MappingProxyType(receiver_spec.headers))
        receivers[name] = receiver
    routes = []
    for index, route_spec in enumerate(spec.routes):
        where = f"{source}: routes[{index}]"
        if not route_spec.receivers:
            raise NotificationConfigError(f"{where}.receivers: name at least one receiver")
        for name in route_spec.receivers:
            if name not in receivers:
                known = ", ".join(sorted(receivers)) or "none"
                raise NotificationConfigError(f"{where}.receivers: no receiver `{name}` (known: {known})")
        if len(set(route_spec.receivers)) != len(route_spec.receivers):
            raise NotificationConfigError(f"{where}.receivers: a receiver is listed twice")
        severity = route_spec.severity
        severities = None
        if severity is not None:
            severities = frozenset([severity] if isinstance(severity, str) else severity)
            if not severities:
                raise NotificationConfigError(f"{where}.severity: name at least one severity, or leave it out")
        routes.append(Route(tuple(route_spec.receivers), severities, route_spec.continue_))
    return NotificationConfig(MappingProxyType(receivers), tuple(routes))


def _check_url(url: str, *, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL itself may hold a secret (Slack's does): name the field, not the value.
        raise NotificationConfigError(f"{where}: must be an http:// or https:// URL")
