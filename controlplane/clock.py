"""The clock, injected: production reads the system time, tests pass their own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from controlplane.db import utcnow

__all__ = ["Clock", "system_clock"]

Clock = Callable[[], datetime]

system_clock: Clock = utcnow
