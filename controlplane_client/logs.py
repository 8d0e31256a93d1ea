"""One log line format for the server and the applications: structlog's processors, rendered as text or JSON.

``configure_structlog`` sets up structlog's own loggers (the pipeline's playbook events). ``log_formatter`` is a
``logging.Formatter`` that renders standard-library records (uvicorn's, APScheduler's, a server's own) through the
same processors, so every line of a process has one shape: ``{"event": ..., "level": ..., "logger": ...,
"timestamp": ...}`` in JSON, ``<timestamp> [<level>] <event> [<logger>] key=value`` in text.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import Processor

__all__ = ["LOG_FORMATS", "LogFormat", "configure_structlog", "log_formatter", "renderer"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")


def renderer(log_format: LogFormat) -> Processor:
    """The last processor: one JSON object per line, or a human line (no colours, no locals in tracebacks)."""
    if log_format == "json":
        return structlog.processors.JSONRenderer(sort_keys=True)
    # plain_traceback: the default rich one prints each frame's local variables, tokens and passwords included.
    return structlog.dev.ConsoleRenderer(
        colors=False, pad_event_to=0, exception_formatter=structlog.dev.plain_traceback
    )


def _common(extra: Sequence[Processor]) -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *extra,
    ]


def configure_structlog(
    stream: TextIO, *, log_format: LogFormat = "json", level: int = logging.INFO, extra: Sequence[Processor] = ()
) -> None:
    """structlog loggers write one line per event to ``stream``; ``extra`` processors run before rendering."""
    structlog.configure(
        processors=[*_common(extra), structlog.processors.format_exc_info, renderer(log_format)],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def log_formatter(log_format: LogFormat, extra: Sequence[Processor] = ()) -> logging.Formatter:
    """A formatter rendering standard-library records as structlog events (``logger`` named, exceptions kept);
    ``extra`` processors see each record's arguments as ``positional_args``."""
    last: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format == "json":
        # The console renderer formats exc_info itself; JSON needs it as a string field.
        last.append(structlog.processors.format_exc_info)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_common(()), structlog.stdlib.add_logger_name, *extra, _drop_positional_args],
        processors=[*last, renderer(log_format)],
        # ``extra`` may read a record's arguments (``positional_args``); the message is already formatted with them.
        pass_foreign_args=True,
    )


def _drop_positional_args(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("positional_args", None)
    return event
