"""A repeating failure told once: when it starts (or changes kind) and when it ends, not on every retry."""

from __future__ import annotations

import logging
import threading

__all__ = ["FailureStreak"]


class FailureStreak:
    """The log of one piece of repeated work (a job, the lease renewal) that may fail many times in a row.

    The first failure is an ERROR with its traceback; the same kind of failure again is DEBUG; another kind is an
    ERROR again; the first success after failures is a WARNING saying how many runs failed. A job that fails every
    second through a database outage writes two lines, not one per second.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self._failures = 0
        self._kind: type[BaseException] | None = None
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> None:
        """Record a failed run, logging it if it starts a streak or is a new kind of failure."""
        with self._lock:
            self._failures += 1
            new_kind = type(error) is not self._kind
            self._kind = type(error)
            failures = self._failures
        if new_kind:
            self._logger.error("%s failed: %s: %s", self._what, type(error).__name__, error, exc_info=error)
        else:
            self._logger.debug("%s failed again (%d in a row): %s", self._what, failures, error)

    def succeeded(self) -> None:
        """Record a run that worked, logging the end of a streak."""
        with self._lock:
            failures, self._failures, self._kind = self._failures, 0, None
        if failures:
            self._logger.warning("%s works again after %d failed runs", self._what, failures)
