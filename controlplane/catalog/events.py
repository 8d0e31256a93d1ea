"""The event catalog: which events a pipeline may send, with which outcomes, labels and values.

Pure data, built from definitions and stored as JSON; ingest validates every event against it and /metrics
names one counter (and a histogram where a value is declared) per event type from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_BUCKETS",
    "RESERVED_LABELS",
    "TOTAL_MAXIMUM",
    "UNITS",
    "UNIT_MAXIMUM",
    "Catalog",
    "EventType",
    "LabelSpec",
    "ValueSpec",
    "event_type_from_json",
    "event_type_to_json",
]

#: Base units only (Prometheus naming): a value's unit is part of its metric name.
UNITS = ("seconds", "bytes", "ratio", "tokens", "items")
#: The largest value an event may carry, per unit: far past anything real (a week, a tebibyte, a billion tokens or
#: items), and small enough that a window's sum and sum of squares stay finite however many events it holds.
UNIT_MAXIMUM: dict[str, float] = {
    "seconds": 7 * 86400.0,
    "bytes": float(2**40),
    "ratio": 1e6,
    "tokens": 1e9,
    "items": 1e9,
}
#: The largest amount one of an event's totals may carry (a count of tokens, items, bytes...).
TOTAL_MAXIMUM = 1e12
#: Labels every event metric carries; an event type may not declare them itself.
RESERVED_LABELS = frozenset({"pipeline", "environment", "variant", "outcome", "le", "quantile"})
DEFAULT_BUCKETS: dict[str, tuple[float, ...]] = {
    "seconds": (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 6.0, 10.0, 30.0, 60.0),
    "bytes": (1e3, 1e4, 1e5, 5e5, 1e6, 2e6, 5e6, 1e7),
    "ratio": (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0),
    "tokens": (10, 100, 500, 1e3, 2e3, 5e3, 1e4, 5e4),
    "items": (1, 2, 5, 10, 20, 50, 100, 500),
}
METRIC_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """A label an event may carry: its allowed values (bounded), and what unknown values become, if anything."""

    values: tuple[str, ...]
    otherwise: str | None = None

    def admit(self, value: str) -> str | None:
        """The value to record for ``value``; None when it is refused."""
        if value in self.values:
            return value
        return self.otherwise


@dataclass(frozen=True, slots=True)
class ValueSpec:
    """An event's numeric value: what it measures, its base unit and its histogram buckets."""

    name: str
    unit: str
    buckets: tuple[float, ...]
    minimum: float | None = 0.0

    @property
    def maximum(self) -> float:
        """The largest value accepted: its unit's (``UNIT_MAXIMUM``)."""
        return UNIT_MAXIMUM.get(self.unit, TOTAL_MAXIMUM)


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event a pipeline sends."""

    pipeline: str
    name: str
    flag: str = ""  # the flag whose served variant each event carries
    variants: tuple[str, ...] = ()
    description: str = ""
    outcomes: tuple[str, ...] = ()
    labels: Mapping[str, LabelSpec] = field(default_factory=dict)
    value: ValueSpec | None = None
    totals: tuple[str, ...] = ()

    @property
    def counter_name(self) -> str:
        """The Prometheus counter of these events (sample name ends in ``_total``)."""
        return f"{self.name}_events"

    @property
    def histogram_name(self) -> str | None:
        """The Prometheus histogram of the value, named with its base unit; None without a value."""
        if self.value is None:
            return None
        return f"{self.name}_{self.value.name}_{self.value.unit}"

    def total_name(self, total: str) -> str:
        """The Prometheus counter a per-event total (e.g. tokens) adds to."""
        return f"{self.name}_{total}"


def event_type_to_json(event: EventType) -> dict[str, Any]:
    """The stored form of an event type."""
    return {
        "name": event.name,
        "flag": event.flag,
        "variants": list(event.variants),
        "description": event.description,
        "outcomes": list(event.outcomes),
        "labels": {
            name: {"values": list(spec.values), "otherwise": spec.otherwise} for name, spec in event.labels.items()
        },
        "value": None
        if event.value is None
        else {
            "name": event.value.name,
            "unit": event.value.unit,
            "buckets": list(event.value.buckets),
            "minimum": event.value.minimum,
        },
        "totals": list(event.totals),
    }


def event_type_from_json(pipeline: str, data: Mapping[str, Any]) -> EventType:
    """An event type read back from storage."""
    value = data.get("value")
    return EventType(
        pipeline=pipeline,
        name=data["name"],
        flag=data["flag"],
        variants=tuple(data["variants"]),
        description=data.get("description", ""),
        outcomes=tuple(data.get("outcomes", ())),
        labels={
            name: LabelSpec(values=tuple(spec["values"]), otherwise=spec.get("otherwise"))
            for name, spec in data.get("labels", {}).items()
        },
        value=None
        if value is None
        else ValueSpec(
            name=value["name"],
            unit=value["unit"],
            buckets=tuple(float(bound) for bound in value["buckets"]),
            minimum=value.get("minimum"),
        ),
        totals=tuple(data.get("totals", ())),
    )


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every event type of every applied pipeline, looked up by (pipeline, name)."""

    events: Mapping[tuple[str, str], EventType] = field(default_factory=dict)

    @classmethod
    def of(cls, events: Iterable[EventType]) -> Catalog:
        """Build a catalog from event types."""
        return cls({(event.pipeline, event.name): event for event in events})

    def get(self, pipeline: str, name: str) -> EventType | None:
        """The event type, or None when the pipeline does not declare it."""
        return self.events.get((pipeline, name))

    def names(self, pipeline: str) -> list[str]:
        """The event types a pipeline declares, sorted."""
        return sorted(name for owner, name in self.events if owner == pipeline)

    @property
    def pipelines(self) -> list[str]:
        """Every pipeline with at least one event type."""
        return sorted({owner for owner, _ in self.events})
