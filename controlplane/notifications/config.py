"""The notifications file: who hears about alerts (receivers) and which alerts each hears about (routes).

    receivers:
      oncall:   {type: pagerduty, routing_key: "${PAGERDUTY_ROUTING_KEY}"}
      alerts:   {type: slack, url: "${SLACK_WEBHOOK_URL}"}
      hooks:    {type: webhook, url: https://example.internal/hook, headers: {Authorization: "Bearer ${HOOK_TOKEN}"}}
    routes:
      - {kind: [rollout], receivers: [oncall, hooks], continue: true}   # every rollout step
      - {severity: [page], receivers: [oncall, alerts], continue: true}
      - {receivers: [alerts]}            # no severity, no kind: everything

Routes are tried in order; the first that matches an event's severity and kind wins unless it says
``continue: true``. ``kind`` lists event kinds (``messages.KINDS``) or the families ``alert`` (trigger, resolve,
rollback), ``rollout`` (every rollout step) and ``incident`` (incident actions: a flag set to a variant everywhere,
and its undo). A PagerDuty receiver sends rollout steps and incident actions as Change Events to
``change_url``, by default its ``url`` with ``/v2/enqueue`` replaced by ``/v2/change/enqueue``.
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

from controlplane.notifications.messages import ALERT_KINDS, INCIDENT_KINDS, KINDS, ROLLOUT_KINDS

__all__ = [
    "KIND_FAMILIES",
    "PAGERDUTY_CHANGE_EVENTS_URL",
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
PAGERDUTY_CHANGE_EVENTS_URL: Final = "https://events.pagerduty.com/v2/change/enqueue"
_EVENTS_PATH = "/v2/enqueue"
_CHANGE_EVENTS_PATH = "/v2/change/enqueue"
#: Names a route's ``kind`` may use for a whole family of event kinds.
KIND_FAMILIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"alert": ALERT_KINDS, "rollout": ROLLOUT_KINDS, "incident": INCIDENT_KINDS}
)
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
    """Sends one Events API v2 event per alert event to ``url`` under ``routing_key``, and rollout steps as Change
    Events to ``change_url``."""

    type: ClassVar[str] = "pagerduty"
    grouped: ClassVar[bool] = False
    name: str
    routing_key: str = field(repr=False)
    url: str = PAGERDUTY_EVENTS_URL
    change_url: str = PAGERDUTY_CHANGE_EVENTS_URL


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
    """Events of these severities and kinds (None: any) go to these receivers; ``continue_`` lets later routes
    match too."""

    receivers: tuple[str, ...]
    severities: frozenset[str] | None = None
    continue_: bool = False
    kinds: frozenset[str] | None = None

    def matches(self, severity: str, kind: str | None = None) -> bool:
        """True when an event of ``severity`` (and ``kind``, when given) takes this route."""
        if self.severities is not None and severity not in self.severities:
            return False
        return self.kinds is None or kind is None or kind in self.kinds


@dataclass(frozen=True, slots=True)
class NotificationConfig:
    """Receivers by name and the routes that pick them; empty means nobody is notified."""

    receivers: Mapping[str, Receiver] = field(default_factory=lambda: MappingProxyType({}))
    routes: tuple[Route, ...] = ()

    @classmethod
    def empty(cls) -> NotificationConfig:
        """No receivers, no routes: alert states are kept and nobody is told."""
        return cls()

    def receivers_for(self, severity: str, kind: str | None = None) -> list[Receiver]:
        """The receivers of an event of ``severity`` and ``kind``: the first matching route's, plus any after a
        ``continue``."""
        names: list[str] = []
        for route in self.routes:
            if not route.matches(severity, kind):
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
    change_url: str | None = None


class _SlackSpec(msgspec.Struct, tag_field="type", tag="slack", forbid_unknown_fields=True):
    url: str


class _RouteSpec(msgspec.Struct, forbid_unknown_fields=True):
    receivers: list[str]
    severity: SeverityName | list[SeverityName] | None = None
    continue_: bool = msgspec.field(default=False, name="continue")
    kind: str | list[str] | None = None


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
            change_url = receiver_spec.change_url or _change_events_url(receiver_spec.url, where=where)
            _check_url(change_url, where=f"{where}.change_url")
            receiver = PagerDutyReceiver(
                name, routing_key=receiver_spec.routing_key, url=receiver_spec.url, change_url=change_url
            )
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
        kinds = _kinds(route_spec.kind, where=f"{where}.kind")
        routes.append(Route(tuple(route_spec.receivers), severities, route_spec.continue_, kinds))
    return NotificationConfig(MappingProxyType(receivers), tuple(routes))


def _kinds(kind: str | list[str] | None, *, where: str) -> frozenset[str] | None:
    if kind is None:
        return None
    names = [kind] if isinstance(kind, str) else kind
    if not names:
        raise NotificationConfigError(f"{where}: name at least one kind, or leave it out")
    kinds: set[str] = set()
    for name in names:
        if name in KIND_FAMILIES:
            kinds.update(KIND_FAMILIES[name])
        elif name in KINDS:
            kinds.add(name)
        else:
            known = ", ".join([*KIND_FAMILIES, *KINDS])
            raise NotificationConfigError(f"{where}: no event kind `{name}` (known: {known})")
    return frozenset(kinds)


def _change_events_url(url: str, *, where: str) -> str:
    # PagerDuty serves both APIs on one host: alert events at /v2/enqueue, change events at /v2/change/enqueue.
    path = urlsplit(url).path.rstrip("/")
    if not path.endswith(_EVENTS_PATH):
        raise NotificationConfigError(
            f"{where}.change_url: cannot be derived, as `url` does not end in {_EVENTS_PATH}: give the Change "
            f"Events URL (PagerDuty's is {PAGERDUTY_CHANGE_EVENTS_URL})"
        )
    base = url.rstrip("/")
    return base[: -len(_EVENTS_PATH)] + _CHANGE_EVENTS_PATH


def _check_url(url: str, *, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL itself may hold a secret (Slack's does): name the field, not the value.
        raise NotificationConfigError(f"{where}: must be an http:// or https:// URL")
