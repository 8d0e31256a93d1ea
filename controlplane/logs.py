"""The server's log: every record (its own, uvicorn's, APScheduler's, Alembic's) on stderr, as text or JSON lines.

What an idle server says is what changed: a leader elected, a stage advanced, a rollback, a run that deleted
something, an error. Routine work is DEBUG:

- APScheduler's and Alembic's INFO lines ("Running job ...", "Job ... executed successfully", "Context impl
  SQLiteImpl.") are demoted to DEBUG: at ``CONTROLPLANE_LOG_LEVEL=info`` a job run every second writes nothing.
- Probes (``/healthz``, ``/readyz``, ``/metrics``) leave no access-log line; every other request does.
- Nothing goes to stdout: ``serve`` prints the first admin token there and only that, and a stdout pipe that nobody
  reads would otherwise fill and block the server.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

from controlplane_client.logs import LogFormat, log_formatter

__all__ = ["DEMOTED_LOGGERS", "PROBE_PATHS", "RoutineFilter", "configure_logging"]

#: Routes that orchestrators and Prometheus call every few seconds: answered, never logged.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: Libraries whose INFO lines are routine: shown at DEBUG. Their warnings and errors are untouched.
DEMOTED_LOGGERS = ("apscheduler", "alembic")
ACCESS_LOGGER = "uvicorn.access"


def _is_under(name: str, parents: tuple[str, ...]) -> bool:
    return any(name == parent or name.startswith(parent + ".") for parent in parents)


def _access_path(record: logging.LogRecord) -> str | None:
    # uvicorn's access record: msg '%s - "%s %s HTTP/%s" %d', args (client, method, path with query, version, status).
    args = record.args
    if record.name != ACCESS_LOGGER or not isinstance(args, tuple) or len(args) != 5:
        return None
    return str(args[2]).split("?", 1)[0]


class RoutineFilter(logging.Filter):
    """Drops probe access lines and shows the demoted libraries' INFO lines as DEBUG, below ``level`` dropped."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record the log should not carry."""
        if _access_path(record) in PROBE_PATHS:
            return False
        if record.levelno == logging.INFO and _is_under(record.name, DEMOTED_LOGGERS):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self._level


def _access_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """An access line's parts as fields (``client``, ``method``, ``path``, ``status``), not only as text."""
    record = event.get("_record")
    args = event.get("positional_args")
    is_access = isinstance(record, logging.LogRecord) and record.name == ACCESS_LOGGER
    if is_access and isinstance(args, tuple) and len(args) == 5:
        client, method, path, version, status = args
        event.update(client=client, method=method, path=path, http_version=version, status=status)
        event["event"] = f"{method} {path} {status}"
    return event


def configure_logging(log_format: LogFormat, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every record at ``level`` or above to ``stream`` (stderr) in ``log_format``, replacing other handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(log_formatter(log_format, extra=[_access_fields]))
    handler.addFilter(RoutineFilter(level))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    # The root's level lets the demoted libraries' INFO through to the filter, which shows it only at DEBUG.
    root.setLevel(min(level, logging.INFO))
    # Python's warnings (a library's DeprecationWarning, say) as records in the same format, not raw stderr text.
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error", ACCESS_LOGGER):
        # uvicorn's default config gives these handlers of their own (access lines on stdout): theirs go through ours.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
