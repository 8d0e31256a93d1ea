"""The `enable-reference-images` gate, evaluated in-process through OpenFeature and the control plane's provider.

The provider holds a synced snapshot of one environment (updated by server-sent events), so a check costs no
network round trip. When the flag's configuration changes (a rollback turning it off among others), the provider
emits CONFIGURATION_CHANGED naming it, and the gate calls back whoever asked (``on_flag_change``): the reference
cache is cleared on the event, within the same push that turns the flag off, without polling.

When the provider cannot serve (never reached the control plane, no cache), OpenFeature
returns the code default: off. Reference images are then refused, which is the safe side of a release flag.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import OpenFeatureError

from controlplane_client.provider import ControlPlaneProvider
from pipeline.logs import get_logger
from pipeline.settings import FLAG_KEY

__all__ = ["Decision", "FlagGate", "OpenFeatureGate", "StaticGate"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether reference images are on for this user, and the variant served (for the events' cohort)."""

    enabled: bool
    variant: str
    reason: str


class FlagGate(Protocol):
    """Decides the flag for one user."""

    def decide(self, user_id: str, attributes: dict[str, str] | None = None) -> Decision:
        """The flag for ``user_id`` (the targeting key) with optional targeting attributes."""
        ...

    def on_flag_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever the flag's configuration changes (from the provider's event thread)."""
        ...

    def close(self) -> None:
        """Release the provider."""
        ...


class OpenFeatureGate:
    """The gate through an OpenFeature client on a domain of its own, backed by ``ControlPlaneProvider``."""

    def __init__(self, url: str, token: str, *, environment: str, cache_path: Path | None = None) -> None:
        self._domain = f"pipeline-{uuid.uuid4().hex[:8]}"
        self._provider = ControlPlaneProvider(url, token, environment=environment, cache_path=cache_path)
        try:
            # Waits for the first snapshot (or the cache), so the first requests are decided on real data.
            api.set_provider_and_wait(self._provider, self._domain)
        except OpenFeatureError as error:
            # No control plane and no cache: the provider keeps retrying in the background; meanwhile every
            # decision is the code default (off), and the service still starts.
            get_logger().warning("flag_provider_not_ready", flag=FLAG_KEY, error=str(error))
        self._client = api.get_client(self._domain)
        self._callbacks: list[Callable[[], None]] = []
        self._client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, self._configuration_changed)

    def on_flag_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on every configuration change of the flag (a rollback, a kill switch, a stage)."""
        self._callbacks.append(callback)

    def _configuration_changed(self, details: EventDetails) -> None:
        # OpenFeature spec 5.1.4 (flags_changed): a provider may leave it out; then the change may concern us.
        if details.flags_changed is not None and FLAG_KEY not in details.flags_changed:
            return
        get_logger().info("flag_configuration_changed", flag=FLAG_KEY, change=details.message or "")
        for callback in list(self._callbacks):
            callback()

    def decide(self, user_id: str, attributes: dict[str, str] | None = None) -> Decision:
        """Evaluate the flag; the code default (off) whenever the provider cannot answer."""
        context = EvaluationContext(targeting_key=user_id, attributes=dict(attributes or {}))
        details = self._client.get_boolean_details(FLAG_KEY, False, context)
        variant = details.variant or ("on" if details.value else "off")
        return Decision(enabled=bool(details.value), variant=variant, reason=str(details.reason or ""))

    def close(self) -> None:
        """Stop following the control plane."""
        self._callbacks.clear()  # nothing is called after close, whatever the SDK still delivers
        self._provider.shutdown()


class StaticGate:
    """A fixed answer (tests, and the benchmark's "flag check disabled" baseline)."""

    def __init__(self, enabled: bool) -> None:
        self._decision = Decision(enabled=enabled, variant="on" if enabled else "off", reason="STATIC")

    def decide(self, user_id: str, attributes: dict[str, str] | None = None) -> Decision:
        """The same decision for everyone."""
        return self._decision

    def on_flag_change(self, callback: Callable[[], None]) -> None:
        """A fixed answer never changes: nothing to call."""

    def close(self) -> None:
        """Nothing to release."""
