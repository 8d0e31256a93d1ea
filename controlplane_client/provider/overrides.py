"""Incident overrides: a flag's value forced by an environment variable of the process.

``ENABLE_REFERENCE_IMAGES=false`` forces ``enable-reference-images`` off (name: the key upper-cased, ``-`` and ``.``
turned into ``_``; an empty value means no override). The environment is read once, when the provider is created,
as an incident override is set when a process starts. The value is parsed as the requested type (``true/false/1/0``,
integers, floats, JSON arrays or objects, raw strings); a value that does not parse is reported as ``PARSE_ERROR``
(code default served) and logged once, never silently ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from controlplane_client.provider.engine import CompiledFlag
from controlplane_client.provider.kinds import Kind, error_details, mismatch_details

__all__ = ["OVERRIDE_VARIANT", "UNREAD", "EnvironmentOverrides", "override_variable"]

logger = logging.getLogger(__name__)

OVERRIDE_VARIANT = "override"
#: What ``EnvironmentOverrides.values.get`` is given for a key not looked up yet.
UNREAD: Any = object()
_UNPARSED = object()


def override_variable(flag_key: str) -> str:
    """The environment variable that overrides a flag: ``enable-reference-images`` -> ``ENABLE_REFERENCE_IMAGES``."""
    return flag_key.upper().replace("-", "_").replace(".", "_")


@dataclass(frozen=True, slots=True)
class _InvalidOverride:
    """An override value that does not parse as the requested type."""

    message: str


class EnvironmentOverrides:
    """The override variables of one process, and what each flag key's variable holds.

    ``values`` is the evaluation path's memo (flag key -> the raw value, or None): a plain dict the provider reads
    itself, as one lookup per evaluation; a key missing from it is read once with ``read``.
    """

    def __init__(self, environ: Mapping[str, str] | None, *, enabled: bool) -> None:
        # Read once: overrides are set when a process starts (incident use), and os.environ lookups are slow on
        # the evaluation path. Only non-empty values matter.
        source = os.environ if environ is None else environ
        self._environ: dict[str, str] = {name: value for name, value in source.items() if value}
        self.enabled = enabled
        self.values: dict[str, str | None] = {}
        self._names: dict[str, str] = {}
        self._parsed: dict[tuple[str, str], Any] = {}

    def read(self, key: str) -> str | None:
        """The raw value of ``key``'s override variable (None when unset), remembered in ``values``."""
        raw = self.values[key] = self._environ.get(override_variable(key))
        return raw

    def resolve(
        self, key: str, default: Any, flag: CompiledFlag | None, kind: Kind
    ) -> FlagResolutionDetails[Any] | None:
        """The forced details of ``key`` as ``kind``; None when its variable is not set."""
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = override_variable(key)
        raw = self._environ.get(name)
        if not raw:
            return None
        if flag is not None and flag.type != kind.flag_type:
            return mismatch_details(default, flag, kind)
        memo = (raw, kind.name)
        value = self._parsed.get(memo, _UNPARSED)
        if value is _UNPARSED:
            try:
                value = kind.parse(raw)
            except ValueError as error:
                value = _InvalidOverride(
                    f"{name}={raw!r} is not a valid {kind.name} override ({error}); the code default is served"
                )
                # Once per value, not per evaluation: the error code on every resolution is the lasting signal.
                logger.warning("%s", value.message)
            self._parsed[memo] = value
        if isinstance(value, _InvalidOverride):
            return error_details(default, ErrorCode.PARSE_ERROR, value.message)
        # Reason STATIC: no dynamic evaluation happened; the variable is named in the metadata (spec 2.2.9).
        return FlagResolutionDetails(
            value=kind.convert(value),
            variant=OVERRIDE_VARIANT,
            reason=Reason.STATIC,
            flag_metadata={"override": name},
        )
