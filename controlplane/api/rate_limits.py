"""A per-token request limit for the hot routes (evaluation, ingest): fixed one-second windows, constant work.

Litestar's RateLimitMiddleware keeps a timestamp per request in the window and rewrites the list on each
request; measured at 57-490 us per request under load, it cost OFREP more than half its throughput
(bench/README.md). Evaluation is the hot path, so it gets this counter instead; management routes keep
Litestar's limiter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["RateLimiter"]

_MAX_IDENTITIES = 10_000


class RateLimiter:
    """At most ``per_second`` requests per identity in each wall-clock second."""

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second
        self._clock = clock
        self._windows: dict[str, list[int]] = {}

    def retry_after(self, identity: str) -> int | None:
        """Count a request; None when it is allowed, else the whole seconds to wait before the next one."""
        now = self._clock()
        window = int(now)
        entry = self._windows.get(identity)
        if entry is None or entry[0] != window:
            if len(self._windows) >= _MAX_IDENTITIES:
                # Bounded memory: identities from past windows carry no state worth keeping.
                self._windows = {key: value for key, value in self._windows.items() if value[0] == window}
            self._windows[identity] = [window, 1]
            return None
        if entry[1] >= self._per_second:
            return max(1, math.ceil(window + 1 - now))
        entry[1] += 1
        return None
