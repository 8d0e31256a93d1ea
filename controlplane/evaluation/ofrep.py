"""OFREP wire mapping: pure functions from resolutions and contexts to the protocol's JSON and ETags.

Spec: open-feature/protocol service/openapi.yaml (v0.3.0) and ADR-0008 (event streams). Rules kept here:
always send `variant` and a valid `reason`, `errorDetails` on every error, floats as floats (msgspec keeps 1.0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec
from openfeature.exception import ErrorCode

from controlplane_client.provider.engine import Resolution

__all__ = ["ContextError", "bulk_etag", "error_body", "etag_matches", "parse_context", "success_body"]


class ContextError(ValueError):
    """A request body OFREP cannot evaluate: ``code`` is PARSE_ERROR or INVALID_CONTEXT."""

    def __init__(self, code: ErrorCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def parse_context(body: bytes) -> dict[str, Any]:
    """The evaluation context of a request body; an empty body or one without `context` is an empty context."""
    if not body.strip():
        return {}
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise ContextError(ErrorCode.PARSE_ERROR, f"the body is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise ContextError(ErrorCode.PARSE_ERROR, "the body must be a JSON object")
    context = document.get("context", {})
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise ContextError(ErrorCode.INVALID_CONTEXT, "`context` must be a JSON object")
    targeting_key = context.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise ContextError(ErrorCode.INVALID_CONTEXT, "`context.targetingKey` must be a string")
    return context


def success_body(resolution: Resolution) -> dict[str, Any]:
    """A 200 body: key, value, variant, reason and flat metadata."""
    body: dict[str, Any] = {
        "key": resolution.key,
        "value": resolution.value,
        "variant": resolution.variant,
        "reason": resolution.reason.value,
    }
    if resolution.metadata:
        body["metadata"] = dict(resolution.metadata)
    return body


def error_body(key: str | None, code: ErrorCode, details: str) -> dict[str, Any]:
    """An error body; OFREP clients read `errorCode` and `errorDetails`."""
    body: dict[str, Any] = {"errorCode": code.value, "errorDetails": details}
    if key is not None:
        body["key"] = key
    return body


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: `If-None-Match` uses the weak comparison (W/ ignored), and `*` matches anything."""
    if if_none_match is None:
        return False
    wanted = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def bulk_etag(environment: str, revision: int, context: Mapping[str, Any], stream_epoch: str) -> str:
    """The ETag of a bulk evaluation: the configuration revision AND the context, so a new context never 304s, AND
    the stream credential's epoch, so a client never keeps a stream URL that no longer opens through a 304."""
    digest = hashlib.sha256(msgspec.json.encode(context, order="sorted")).hexdigest()[:16]
    return f'"{environment}-{revision}-{stream_epoch}-{digest}"'
