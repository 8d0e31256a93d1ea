"""Batch validation and window aggregation: pure functions from a decoded batch, the catalog and the clock.

bytes --decode--> EventBatch --validate (every event, all errors)--> [EventError] or
      --aggregate--> {series key: WindowAggregate} (+ ordered tail events for streak rules,
                     + per series and subject the count of events carrying that subject)
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import operator
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from controlplane.catalog.events import TOTAL_MAXIMUM, Catalog, EventType
from controlplane.catalog.rules import segment_name
from controlplane.telemetry.schemas import SUBJECT_PATTERN, EventBatch, EventError, EventIn, RawBatch

__all__ = [
    "Aggregates",
    "BatchMalformed",
    "BatchRefused",
    "BatchUnreadable",
    "SeriesKey",
    "SubjectKey",
    "WindowAggregate",
    "aggregate",
    "decode_batch",
    "labels_key",
    "window_start",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BatchRefused(Exception):
    """A batch with at least one bad event; ``errors`` has the index and reason of each.

    Raised by ``decode_batch``, it also carries the events that did decode (``decoded``, at batch positions
    ``indexes``) and the batch's event count, so the caller can check those too and report every bad event.
    """

    def __init__(
        self,
        errors: Sequence[EventError],
        *,
        decoded: EventBatch | None = None,
        indexes: Sequence[int] = (),
        total: int | None = None,
    ) -> None:
        self.errors = list(errors)
        self.decoded = decoded
        self.indexes = list(indexes)
        self.total = total
        super().__init__(f"{len(self.errors)} invalid events")


class BatchUnreadable(Exception):
    """A body that is not JSON at all."""


class BatchMalformed(Exception):
    """JSON that is not the batch shape (a bad batch id, no event list, an unknown field); ``field`` says where."""

    def __init__(self, reason: str, field: str | None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)


_BATCH = msgspec.json.Decoder(EventBatch)
_RAW_BATCH = msgspec.json.Decoder(RawBatch)
_EVENT = msgspec.json.Decoder(EventIn)


def decode_batch(body: bytes) -> EventBatch:
    """Decode a batch; every event that does not fit the wire type is reported, not only the first."""
    try:
        return _BATCH.decode(body)
    except msgspec.ValidationError:
        pass  # find out which events are at fault, below
    except msgspec.DecodeError as exc:
        raise BatchUnreadable(f"the body is not JSON: {exc}") from exc
    try:
        raw = _RAW_BATCH.decode(body)
    except msgspec.ValidationError as exc:
        message, where = _split(exc)
        raise BatchMalformed(f"the body is not an event batch: {message}", where) from exc
    except msgspec.DecodeError as exc:
        # The typed decode stops at the first misfit; bad JSON later in the body is only found here.
        raise BatchUnreadable(f"the body is not JSON: {exc}") from exc
    errors: list[EventError] = []
    events: list[EventIn] = []
    indexes: list[int] = []
    for index, item in enumerate(raw.events):
        try:
            events.append(_EVENT.decode(item))
            indexes.append(index)
        except msgspec.ValidationError as exc:
            message, where = _split(exc)
            errors.append(EventError(index=index, reason=message, field=where))
    if errors:
        decoded = EventBatch(batch_id=raw.batch_id, pipeline=raw.pipeline, events=events)
        raise BatchRefused(errors, decoded=decoded, indexes=indexes, total=len(raw.events))
    return EventBatch(batch_id=raw.batch_id, pipeline=raw.pipeline, events=events)  # pragma: no cover


def _split(error: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec's message and the dotted path it points at (``labels.route``), None for the whole value."""
    message, _, where = str(error).partition(" - at `$")
    return message, where.rstrip("`").lstrip(".") or None


def window_start(at: datetime, size: timedelta) -> datetime:
    """The start of the aggregation window holding ``at``."""
    return _EPOCH + ((at - _EPOCH) // size) * size


def labels_key(labels: Mapping[str, str]) -> str:
    """A series' labels as canonical JSON: the same labels always give the same key."""
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


#: (window_start, event, environment, variant, outcome, labels_key)
SeriesKey = tuple[datetime, str, str, str, str, str]
#: (window_start, event, environment, variant, outcome, labels_key, subject)
SubjectKey = tuple[datetime, str, str, str, str, str, str]


@dataclass(slots=True)
class WindowAggregate:
    """What one batch adds to one series of one window."""

    count: int = 0
    value_count: int = 0
    value_sum: float = 0.0
    value_sumsq: float = 0.0  # sum of the squared values (a variance for mean rules)
    value_min: float | None = None
    value_max: float | None = None
    buckets: list[int] | None = None
    totals: dict[str, float] = field(default_factory=dict)

    def merge(self, other: WindowAggregate) -> None:
        """Add another aggregate of the same series into this one."""
        self.count += other.count
        self.value_count += other.value_count
        self.value_sum += other.value_sum
        self.value_sumsq += other.value_sumsq
        if other.value_min is not None:
            self.value_min = other.value_min if self.value_min is None else min(self.value_min, other.value_min)
        if other.value_max is not None:
            self.value_max = other.value_max if self.value_max is None else max(self.value_max, other.value_max)
        if other.buckets is not None:
            if self.buckets is None:
                self.buckets = list(other.buckets)
            else:
                # Position by position, as the database adds them (service.py); a definition that changed the
                # bounds inside a window leaves lists of other lengths, added as far as each goes.
                self.buckets = [
                    mine + theirs for mine, theirs in itertools.zip_longest(self.buckets, other.buckets, fillvalue=0)
                ]
        for name, amount in other.totals.items():
            self.totals[name] = self.totals.get(name, 0.0) + amount


#: (at, outcome, variant, labels) of one event, for streak rules.
TailItem = tuple[datetime, str, str, dict[str, str]]


@dataclass(slots=True)
class Aggregates:
    """A valid batch, aggregated: per series, the ordered events of tail-kept event types, and per series and
    subject how many of its events carried that subject (events without one are in ``series`` only)."""

    series: dict[SeriesKey, WindowAggregate]
    # (event, environment, segment) -> events in time order; segment "" for every event, else `label=value`.
    tails: dict[tuple[str, str, str], list[TailItem]]
    events: int
    subjects: dict[SubjectKey, int] = field(default_factory=dict)


#: Why an event's identity (type, environment, variant, outcome, labels) is refused: (field, reason).
Refusal = tuple[str, str]

_SUBJECT = re.compile(SUBJECT_PATTERN)


def _check_subject(subject: str) -> Refusal | None:
    """Refuse a subject that is not a hex digest. The reason never repeats it: it may be the raw user id."""
    if _SUBJECT.fullmatch(subject):
        return None
    shape = (
        f"{len(subject)} characters"
        if all(char in "0123456789abcdef" for char in subject)
        else f"{len(subject)} characters, not all lowercase hex"
    )
    return (
        "subject",
        f"subject must be a lowercase hex digest of 16 to 64 characters, got {shape}: send a hash of the user "
        "(the emitter sends HMAC-SHA256 of the key it is given, 32 characters), never the raw user id",
    )


def _check_identity(
    event: EventIn, kind: EventType | None, pipeline: str, catalog: Catalog, environments: Collection[str]
) -> tuple[Refusal | None, dict[str, str], str]:
    """Check what an event is (not its measurements): the refusal, or the admitted labels and their key."""
    if kind is None:
        known = ", ".join(catalog.names(pipeline)) or "none (apply its definition first)"
        return ("type", f"unknown event type `{event.type}` for pipeline `{pipeline}`; known: {known}"), {}, ""
    if event.environment not in environments:
        return ("environment", f"unknown environment `{event.environment}`"), {}, ""
    if event.variant not in kind.variants:
        allowed = ", ".join(kind.variants)
        return ("variant", f"variant `{event.variant}` is not a variant of flag `{kind.flag}` ({allowed})"), {}, ""
    if kind.outcomes:
        if event.outcome not in kind.outcomes:
            allowed = ", ".join(kind.outcomes)
            return ("outcome", f"outcome must be one of {allowed}, got {event.outcome!r}"), {}, ""
    elif event.outcome is not None:
        return ("outcome", f"`{event.type}` declares no outcomes; leave `outcome` out"), {}, ""
    labels: dict[str, str] = {}
    for name, value in event.labels.items():
        spec = kind.labels.get(name)
        if spec is None:
            allowed = ", ".join(kind.labels) or "none"
            return (f"labels.{name}", f"unknown label `{name}` for `{event.type}` (declared: {allowed})"), {}, ""
        admitted = spec.admit(value)
        if admitted is None:
            allowed = ", ".join(spec.values)
            return (f"labels.{name}", f"label `{name}` cannot be {value!r}; one of {allowed}"), {}, ""
        labels[name] = admitted
    return None, labels, labels_key(labels)


def _check_measurements(event: EventIn, kind: EventType, earliest: datetime, latest: datetime) -> Refusal | None:
    """Check an event's value, totals and time."""
    if event.value is not None:
        if kind.value is None:
            return "value", f"`{event.type}` declares no value; leave `value` out"
        if not math.isfinite(event.value):
            return "value", "value must be a finite number"
        if kind.value.minimum is not None and event.value < kind.value.minimum:
            return "value", f"value must be at least {kind.value.minimum:g} {kind.value.unit}"
        if event.value > kind.value.maximum:
            return "value", f"value must be at most {kind.value.maximum:g} {kind.value.unit}"
    for name, amount in event.totals.items():
        if name not in kind.totals:
            allowed = ", ".join(kind.totals) or "none"
            return f"totals.{name}", f"unknown total `{name}` (declared: {allowed})"
        if not math.isfinite(amount) or amount < 0:
            return f"totals.{name}", f"total `{name}` must be a finite number >= 0"
        if amount > TOTAL_MAXIMUM:
            return f"totals.{name}", f"total `{name}` must be at most {TOTAL_MAXIMUM:g}"
    if event.time < earliest or event.time > latest:
        return (
            "time",
            f"time {event.time.isoformat()} is outside the accepted range {earliest.isoformat()} .. "
            f"{latest.isoformat()}",
        )
    return None


class _Collected:
    """One series of a batch while its events are read: counts, and its values kept to summarise at the end."""

    __slots__ = ("count", "kind", "subjects", "totals", "values")

    def __init__(self, kind: EventType) -> None:
        self.kind = kind
        self.count = 0
        self.values: list[float] = []
        self.subjects: dict[str, int] = {}
        self.totals: dict[str, float] = {}

    def summary(self) -> WindowAggregate:
        """The series' WindowAggregate: sums, extremes and histogram computed once over its values."""
        values, spec = self.values, self.kind.value
        found = WindowAggregate(count=self.count, totals=self.totals)
        if spec is None:
            return found
        found.buckets = _buckets(values, spec.buckets)
        if values:
            found.value_count = len(values)
            found.value_sum = sum(values)
            found.value_sumsq = sum(map(operator.mul, values, values))
            found.value_min = min(values)
            found.value_max = max(values)
        return found


def _buckets(values: Sequence[float], bounds: Sequence[float]) -> list[int]:
    """Events per histogram bucket (one per bound, then +Inf), not cumulative. A value equal to a bound belongs to
    that bound's bucket (Prometheus' ``le``)."""
    ordered = sorted(values)
    counts: list[int] = []
    below = 0
    for bound in bounds:
        upto = bisect.bisect_right(ordered, bound)
        counts.append(upto - below)
        below = upto
    counts.append(len(ordered) - below)
    return counts


class _Slot:
    """Where the events of one identity (type, environment, variant, outcome, labels) and one window go: what the
    identity's check found, once per batch, and the series they add to (None when the identity is refused)."""

    __slots__ = ("found", "highest", "kind", "labels", "lowest", "refusal", "segment_tails", "tail")

    def __init__(
        self,
        refusal: Refusal | None,
        kind: EventType | None,
        labels: dict[str, str],
        tail: list[TailItem] | None,
        found: _Collected | None,
        segment_tails: tuple[list[TailItem], ...] = (),
    ) -> None:
        self.refusal = refusal
        self.kind = kind
        self.labels = labels
        # The values that need no closer look (the full checks give the others their reason).
        self.lowest, self.highest = _value_range(kind)
        self.tail = tail
        # The tails of the segments its labels name, beside the tail of every event.
        self.segment_tails = segment_tails
        self.found = found


def _value_range(kind: EventType | None) -> tuple[float, float]:
    """The values an event of ``kind`` may carry without the full checks: (lo, hi), empty when it has no value.
    NaN and infinities fall outside (the bounds are finite), so they get the full checks and their reason."""
    if kind is None or kind.value is None:
        return math.inf, -math.inf
    spec = kind.value
    lowest = spec.minimum if spec.minimum is not None else -sys.float_info.max
    return lowest, spec.maximum


def aggregate(
    batch: EventBatch,
    catalog: Catalog,
    *,
    environments: Collection[str],
    now: datetime,
    max_age: timedelta,
    max_future: timedelta,
    window: timedelta,
    tail_events: Mapping[str, Collection[str]] | None = None,
) -> Aggregates:
    """Validate every event of ``batch`` and aggregate it into windows; BatchRefused lists every bad event.

    ``tail_events`` maps the event types whose events are kept in order for streak rules (the tail of every event,
    segment "") to the labels whose values keep a tail of their own too (``queue=sales``)."""
    tail_events = tail_events or {}
    earliest, latest = now - max_age, now + max_future
    errors: list[EventError] = []
    series: dict[SeriesKey, _Collected] = {}
    tails: dict[tuple[str, str, str], list[TailItem]] = {}
    # Subjects repeat across a batch: each is checked once.
    valid_subjects: set[str] = set()
    kinds: dict[str, EventType | None] = {}
    # Label sets, types and variants repeat across a batch: check each identity once, and find each series of a
    # window by (identity, window number) without building its key per event (the hot path of ingest). Values are
    # only collected here; sums, extremes and buckets are computed once per series at the end.
    identities: dict[tuple[Any, ...], tuple[Refusal | None, dict[str, str], str, EventType | None]] = {}
    # One dictionary look-up per event: its identity and its window number find its slot.
    slots: dict[tuple[Any, ...], _Slot] = {}
    size = window.total_seconds()
    earliest_ts, latest_ts = earliest.timestamp(), latest.timestamp()
    pipeline = batch.pipeline
    for index, event in enumerate(batch.events):
        labels = event.labels
        stamp = event.time.timestamp()
        place = (
            event.type,
            event.environment,
            event.variant,
            event.outcome,
            tuple(labels.items()) if labels else (),
            stamp // size,
        )
        slot = slots.get(place)
        if slot is None:
            identity = place[:5]
            checked = identities.get(identity)
            if checked is None:
                if event.type not in kinds:
                    kinds[event.type] = catalog.get(pipeline, event.type)
                kind = kinds[event.type]
                refusal, admitted, key_of_labels = _check_identity(event, kind, pipeline, catalog, environments)
                checked = identities[identity] = (refusal, admitted, key_of_labels, kind)
            refusal, admitted, key_of_labels, kind = checked
            found = None
            tail = None
            segment_tails: tuple[list[TailItem], ...] = ()
            if refusal is None and kind is not None:
                start = window_start(event.time, window)
                key: SeriesKey = (
                    start,
                    event.type,
                    event.environment,
                    event.variant,
                    event.outcome or "",
                    key_of_labels,
                )
                found = series.get(key)
                if found is None:
                    found = series[key] = _Collected(kind)
                if event.type in tail_events:
                    tail = tails.setdefault((event.type, event.environment, ""), [])
                    by = tail_events[event.type]
                    if by:
                        segment_tails = tuple(
                            tails.setdefault((event.type, event.environment, segment_name(label, admitted[label])), [])
                            for label in by
                            if label in admitted
                        )
            slot = slots[place] = _Slot(refusal, kind, admitted, tail, found, segment_tails)
        refusal = slot.refusal
        if refusal is not None:
            errors.append(EventError(index, refusal[1], refusal[0]))
            continue
        value = event.value
        if (
            event.totals
            or not earliest_ts <= stamp <= latest_ts
            or (value is not None and not slot.lowest <= value <= slot.highest)
        ):  # the full checks, for the exact reason (totals are checked there too)
            assert slot.kind is not None
            refusal = _check_measurements(event, slot.kind, earliest, latest)
            if refusal is not None:
                errors.append(EventError(index, refusal[1], refusal[0]))
                continue
        subject = event.subject
        if subject is not None and subject not in valid_subjects:
            refusal = _check_subject(subject)
            if refusal is not None:
                errors.append(EventError(index, refusal[1], refusal[0]))
                continue
            valid_subjects.add(subject)
        if errors:
            continue  # the batch is refused anyway: only look for more errors
        found = slot.found
        assert found is not None
        found.count += 1
        if value is not None:
            found.values.append(value)
        if subject is not None:
            counted = found.subjects
            counted[subject] = counted.get(subject, 0) + 1
        if event.totals:
            totals = found.totals
            for name, amount in event.totals.items():
                totals[name] = totals.get(name, 0.0) + amount
        tail = slot.tail
        if tail is not None:
            item = (event.time, event.outcome or "", event.variant, slot.labels)
            tail.append(item)
            if slot.segment_tails:
                for segment_tail in slot.segment_tails:
                    segment_tail.append(item)
    if errors:
        raise BatchRefused(errors)
    for items in tails.values():
        items.sort(key=lambda item: item[0])  # stable: events at the same instant keep the batch's order
    subjects: dict[SubjectKey, int] = {
        (*key, subject): count for key, found in series.items() for subject, count in found.subjects.items()
    }
    return Aggregates(
        series={key: found.summary() for key, found in series.items()},
        tails=tails,
        events=len(batch.events),
        subjects=subjects,
    )
