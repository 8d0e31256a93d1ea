"""Structured JSON logs of the pipeline: one line per event, named as the playbook names them.

``log.info("reference_image_upload_success", user=..., size=..., content_type=...)`` writes
``{"event": "reference_image_upload_success", "user": ..., "level": "info", "timestamp": ...}``. A signed URL is a
bearer credential: any value that carries a signature loses its query string before it is written.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from controlplane_client.logs import configure_structlog

__all__ = ["configure_logging", "get_logger", "redact"]

_SIGNED = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*(?:X-Goog-Signature|Signature=)[^\s\"']*", re.IGNORECASE)


def redact(value: Any) -> Any:
    """``value`` with the query string of every signed URL in it removed (strings, lists and dicts walked)."""
    if isinstance(value, str):
        return _SIGNED.sub(r"\1?<signature removed>", value)
    if isinstance(value, dict):
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


def _redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        event_dict[key] = redact(value)
    return event_dict


def configure_logging(stream: TextIO | None = None, level: int = logging.INFO) -> None:
    """JSON lines on ``stream`` (stdout by default) for structlog loggers."""
    configure_structlog(stream or sys.stdout, log_format="json", level=level, extra=[_redact])


def get_logger() -> Any:
    """The pipeline's logger."""
    return structlog.get_logger("pipeline")
