"""Transitional: the event catalog moved to controlplane.catalog.events; renderers still import it from here."""

from controlplane.catalog.events import (
    DEFAULT_BUCKETS,
    RESERVED_LABELS,
    UNITS,
    Catalog,
    EventType,
    LabelSpec,
    ValueSpec,
    event_type_from_json,
    event_type_to_json,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "RESERVED_LABELS",
    "UNITS",
    "Catalog",
    "EventType",
    "LabelSpec",
    "ValueSpec",
    "event_type_from_json",
    "event_type_to_json",
]
