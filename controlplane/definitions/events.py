"""Checks of a definition's event catalog: names fit for metric names, bounded labels, a base unit per value, and
no two metrics of the pipeline sharing a name."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from controlplane.catalog.events import (
    DEFAULT_BUCKETS,
    METRIC_NAME,
    RESERVED_LABELS,
    UNITS,
    EventType,
    LabelSpec,
    ValueSpec,
)
from controlplane.definitions.document import FieldPath, Refuse
from controlplane.definitions.schemas import EventSpec, FlagSpec

__all__ = ["check_events"]

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9_./+:-]{1,64}$")


def _names(values: Sequence[str], at: FieldPath, refuse: Refuse, what: str) -> None:
    """Refuse a list of names (outcomes, label values, totals) with a malformed or repeated entry."""
    seen: set[str] = set()
    for index, value in enumerate(values):
        if not _LABEL_VALUE.fullmatch(value):
            raise refuse((*at, index), f"{what} `{value}` must be 1-64 letters, digits or . _ / + : -")
        if value in seen:
            raise refuse((*at, index), f"{what} `{value}` is listed twice")
        seen.add(value)


def check_events(
    pipeline: str, specs: Sequence[EventSpec], flags: Sequence[FlagSpec], refuse: Refuse
) -> tuple[EventType, ...]:
    """Check a definition's event types: names fit for metric names, bounded labels, a base unit per value."""
    by_flag = {flag.key: flag for flag in flags}
    events: list[EventType] = []
    first: dict[str, int] = {}
    metrics: dict[str, str] = {}  # every metric and sample name taken so far -> what it is
    for index, spec in enumerate(specs):
        at: FieldPath = ("events", index)
        if not METRIC_NAME.fullmatch(spec.name) or spec.name.startswith("controlplane_"):
            raise refuse(
                (*at, "name"),
                f"event name `{spec.name}` must be snake_case (a-z, 0-9, _) and not start with `controlplane_`: "
                "it becomes a metric name",
            )
        if spec.name in first:
            raise refuse((*at, "name"), f"event `{spec.name}` is already declared at events[{first[spec.name]}]")
        first[spec.name] = index
        flag = by_flag.get(spec.flag) if spec.flag is not None else flags[0]
        if flag is None:
            raise refuse((*at, "flag"), f"unknown flag `{spec.flag}`; an event carries a flag of its own definition")
        _names(spec.outcomes, (*at, "outcomes"), refuse, "outcome")
        labels: dict[str, LabelSpec] = {}
        for label, label_spec in spec.labels.items():
            here = (*at, "labels", label)
            if not METRIC_NAME.fullmatch(label) or label in RESERVED_LABELS:
                raise refuse(
                    here,
                    f"label `{label}` must be snake_case and not one of {', '.join(sorted(RESERVED_LABELS))}, "
                    "which every event carries already",
                )
            _names(label_spec.values, (*here, "values"), refuse, "label value")
            if label_spec.otherwise is not None and label_spec.otherwise not in label_spec.values:
                raise refuse(
                    (*here, "otherwise"), f"`otherwise: {label_spec.otherwise}` must be one of the listed values"
                )
            labels[label] = LabelSpec(values=tuple(label_spec.values), otherwise=label_spec.otherwise)
        value = None
        if spec.value is not None:
            here = (*at, "value")
            if not METRIC_NAME.fullmatch(spec.value.name):
                raise refuse((*here, "name"), f"value name `{spec.value.name}` must be snake_case")
            if spec.value.unit not in UNITS:
                raise refuse(
                    (*here, "unit"),
                    f"unit `{spec.value.unit}` is not a base unit; use one of {', '.join(UNITS)} "
                    "(milliseconds are written as seconds)",
                )
            buckets = tuple(spec.value.buckets) if spec.value.buckets is not None else DEFAULT_BUCKETS[spec.value.unit]
            if (
                not buckets
                or any(not math.isfinite(bound) for bound in buckets)
                or list(buckets) != sorted(set(buckets))
            ):
                raise refuse((*here, "buckets"), "buckets must be finite and strictly increasing")
            if spec.value.minimum is not None and not math.isfinite(spec.value.minimum):
                # NaN would admit every value (no comparison holds) and inf would refuse every one.
                raise refuse((*here, "minimum"), "minimum must be a finite number, or null for none")
            value = ValueSpec(
                name=spec.value.name,
                unit=spec.value.unit,
                buckets=tuple(map(float, buckets)),
                minimum=spec.value.minimum,
            )
        _names(spec.totals, (*at, "totals"), refuse, "total")
        for position, total in enumerate(spec.totals):
            if not METRIC_NAME.fullmatch(total):
                raise refuse((*at, "totals", position), f"total `{total}` must be snake_case")
        event = EventType(
            pipeline=pipeline,
            name=spec.name,
            flag=flag.key,
            variants=tuple(flag.variants),
            description=spec.description,
            outcomes=tuple(spec.outcomes),
            labels=labels,
            value=value,
            totals=tuple(spec.totals),
        )
        _claim_metric_names(event, at, metrics, refuse)
        events.append(event)
    return tuple(events)


_COUNTER_SAMPLES = ("", "_total", "_created")
_HISTOGRAM_SAMPLES = ("", "_bucket", "_count", "_sum", "_created")


def _claim_metric_names(event: EventType, at: FieldPath, taken: dict[str, str], refuse: Refuse) -> None:
    """Refuse an event whose metrics (counter, histogram, totals) share a name with one already declared."""
    families: list[tuple[FieldPath, str, str, tuple[str, ...]]] = [
        ((*at, "name"), event.counter_name, f"the counter of event `{event.name}`", _COUNTER_SAMPLES)
    ]
    if event.histogram_name is not None:
        families.append(
            ((*at, "value"), event.histogram_name, f"the histogram of event `{event.name}`", _HISTOGRAM_SAMPLES)
        )
    for position, total in enumerate(event.totals):
        families.append(
            (
                (*at, "totals", position),
                event.total_name(total),
                f"the `{total}` total of event `{event.name}`",
                _COUNTER_SAMPLES,
            )
        )
    for here, family, what, suffixes in families:
        names = [family + suffix for suffix in suffixes]
        for name in names:
            if name in taken:
                raise refuse(here, f"{what} would be the metric `{family}`, whose `{name}` is {taken[name]} already")
        taken.update(dict.fromkeys(names, what))
