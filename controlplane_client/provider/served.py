"""The flags a provider serves from one snapshot, and the OpenFeature details of their outcomes, built ahead.

A compiled flag knows every resolution it can give (``CompiledFlag.outcomes``). For a flag asked as a kind that
accepts every one of its values, the details of each outcome are built once, fresh and stale, the first time the
flag is asked as that kind; an evaluation then decides the outcome and hands out the details already built. The
details are shared by every evaluation that gets them, as the resolutions are.

A ``ServedFlags`` belongs to one snapshot and is replaced whole with it, so details built from an older snapshot
can never be served from a newer one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openfeature.flag_evaluation import FlagResolutionDetails, Reason

from controlplane_client.provider.engine import CompiledFlag, Decide, Resolution
from controlplane_client.provider.kinds import Kind

__all__ = ["Prepared", "ServedFlags", "resolution_details"]


@dataclass(frozen=True, slots=True)
class Prepared:
    """One flag asked as one kind: its targeting and, by outcome, the details served fresh and stale."""

    decide: Decide
    fresh: tuple[FlagResolutionDetails[Any], ...]
    stale: tuple[FlagResolutionDetails[Any], ...]


def resolution_details(resolution: Resolution, kind: Kind, *, stale: bool) -> FlagResolutionDetails[Any]:
    """The details of a resolution whose value ``kind`` accepts; reason STALE when the configuration is stale."""
    metadata: dict[str, str | int | float | bool] = dict(resolution.metadata)
    reason: Reason = resolution.reason
    if stale:
        # Keep value and variant: the last known configuration beats the code default. The engine's own reason
        # stays visible in the metadata (spec 2.2.9).
        metadata["evaluated_reason"] = str(reason)
        reason = Reason.STALE
    return FlagResolutionDetails(
        value=kind.convert(resolution.value), variant=resolution.variant, reason=reason, flag_metadata=metadata
    )


class ServedFlags:
    """One snapshot's compiled flags (None before any), and its flags prepared so far for each kind.

    ``boolean``, ``string``, ``integer``, ``float`` and ``object`` map a flag key to its ``Prepared`` for that kind:
    the evaluation path reads them without a lock (a key is added whole, once).
    """

    def __init__(self, flags: dict[str, CompiledFlag] | None) -> None:
        self.flags = flags
        self.boolean: dict[str, Prepared] = {}
        self.string: dict[str, Prepared] = {}
        self.integer: dict[str, Prepared] = {}
        self.float: dict[str, Prepared] = {}
        self.object: dict[str, Prepared] = {}
        self._by_kind = {
            "boolean": self.boolean,
            "string": self.string,
            "integer": self.integer,
            "float": self.float,
            "object": self.object,
        }
        self._unprepared: set[tuple[str, str]] = set()

    def prepare(self, flag: CompiledFlag, kind: Kind) -> Prepared | None:
        """``flag`` prepared as ``kind`` (remembered); None when ``kind`` does not accept every value it can serve."""
        table = self._by_kind[kind.name]
        prepared = table.get(flag.key)
        if prepared is not None or (kind.name, flag.key) in self._unprepared:
            return prepared
        if not all(kind.accepts(outcome.value) for outcome in flag.outcomes):
            # Some outcome is a type mismatch, answered with the caller's default: nothing to build ahead.
            self._unprepared.add((kind.name, flag.key))
            return None
        prepared = table[flag.key] = Prepared(
            flag.decide,
            tuple(resolution_details(outcome, kind, stale=False) for outcome in flag.outcomes),
            tuple(resolution_details(outcome, kind, stale=True) for outcome in flag.outcomes),
        )
        return prepared
