"""Value kinds: what each typed resolve method accepts, how an override string is read as it, and error details."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from controlplane_client.provider.engine import CompiledFlag

__all__ = ["BOOLEAN", "FLOAT", "INTEGER", "OBJECT", "STRING", "Kind", "error_details", "mismatch_details"]


def _parse_boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in {"true", "1"}:
        return True
    if text in {"false", "0"}:
        return False
    raise ValueError("expected true, false, 1 or 0")


def _parse_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _parse_object(raw: str) -> Any:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise ValueError(f"invalid JSON: {error}") from error
    if not isinstance(value, dict | list):
        raise ValueError("expected a JSON object or array")
    return value


def _is_number(value: Any) -> bool:
    # bool is an int in Python; a boolean flag is never a number.
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Kind:
    """One typed resolution (boolean, string, integer, float, object)."""

    name: str
    flag_type: str  # the control plane's FlagType whose values this kind can serve
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any]
    parse: Callable[[str], Any]  # raises ValueError


def _same(value: Any) -> Any:
    return value


BOOLEAN = Kind("boolean", "boolean", lambda v: isinstance(v, bool), _same, _parse_boolean)
STRING = Kind("string", "string", lambda v: isinstance(v, str), _same, _same)
INTEGER = Kind("integer", "number", lambda v: _is_number(v) and isinstance(v, int), _same, int)
# An integer value is a valid float: JSON does not keep 1 and 1.0 apart.
FLOAT = Kind("float", "number", _is_number, float, _parse_float)
OBJECT = Kind("object", "object", lambda v: isinstance(v, dict | list), _same, _parse_object)


def error_details(default: Any, code: ErrorCode, message: str | None) -> FlagResolutionDetails[Any]:
    """The caller's default with an error code and message."""
    # Spec 2.2.7: errors are reported through the error code; the SDK serves the caller's default with it.
    return FlagResolutionDetails(value=default, reason=Reason.ERROR, error_code=code, error_message=message)


def mismatch_details(default: Any, flag: CompiledFlag, kind: Kind) -> FlagResolutionDetails[Any]:
    """TYPE_MISMATCH: the flag's type is not the one asked for."""
    message = f"flag `{flag.key}` (a {flag.type} flag) cannot be resolved as {kind.name}"
    return error_details(default, ErrorCode.TYPE_MISMATCH, message)
