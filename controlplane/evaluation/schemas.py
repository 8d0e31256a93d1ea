"""Wire types of evaluation, as the OpenAPI document describes them (the routes encode their bodies directly).

OFREP shapes follow open-feature/protocol service/openapi.yaml (v0.3.0); the snapshot is the client package's own.
"""

from __future__ import annotations

from typing import Any

import msgspec

__all__ = [
    "OfrepBulkEvaluation",
    "OfrepError",
    "OfrepEvaluation",
    "OfrepEvaluationRequest",
    "OfrepEventStream",
]


class OfrepEvaluationRequest(msgspec.Struct):
    """An OFREP request body; an empty body, or one without `context`, evaluates an empty context."""

    context: dict[str, Any] | None = None


class OfrepEvaluation(msgspec.Struct):
    """One flag resolved: ``reason`` is an OpenFeature reason (STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED)."""

    key: str
    value: Any
    variant: str
    reason: str
    metadata: dict[str, bool | int | float | str] | None = None


class OfrepError(msgspec.Struct):
    """A refusal OFREP clients read: ``errorCode`` (PARSE_ERROR, INVALID_CONTEXT, FLAG_NOT_FOUND, GENERAL)."""

    errorCode: str  # noqa: N815 (the protocol's name)
    errorDetails: str  # noqa: N815
    key: str | None = None


class OfrepEventStream(msgspec.Struct):
    """Where to hear of configuration changes (OFREP ADR-0008)."""

    type: str
    url: str
    inactivityDelaySec: int  # noqa: N815 (the protocol's name)


class OfrepBulkEvaluation(msgspec.Struct):
    """Every flag resolved for one context, the configuration's environment and revision, and the change stream."""

    flags: list[OfrepEvaluation]
    metadata: dict[str, Any]
    eventStreams: list[OfrepEventStream]  # noqa: N815 (the protocol's name)
