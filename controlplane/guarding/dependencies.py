"""The guard reader as a handler parameter: ``gates: Gates`` (``rollouts.controller``) is the ``AlertGateReader``."""

from __future__ import annotations

from litestar.di import Provide

from controlplane.guarding.readings import AlertGateReader
from controlplane.rollouts.gates import GateReader

__all__ = ["dependencies", "provide_gates"]

_GATES = AlertGateReader()


def provide_gates() -> GateReader:
    """The gate reader rollouts are handed: alert states and telemetry windows, as guarding reads them."""
    return _GATES


dependencies = {"gates": Provide(provide_gates, sync_to_thread=False)}
