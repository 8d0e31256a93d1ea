"""Batch decoding, validation and window aggregation: pure functions over a hand-built catalog and a fixed clock."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.catalog.events import TOTAL_MAXIMUM, UNIT_MAXIMUM, Catalog, EventType, LabelSpec, ValueSpec
from controlplane.telemetry.aggregation import (
    Aggregates,
    BatchMalformed,
    BatchRefused,
    BatchUnreadable,
    WindowAggregate,
    aggregate,
    decode_batch,
    labels_key,
    window_start,
)
from controlplane.telemetry.schemas import EventBatch, EventIn

PIPELINE = "images"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=10)
MAX_AGE = timedelta(hours=1)
MAX_FUTURE = timedelta(minutes=5)
ENVIRONMENTS = ("qa", "production")

UPLOAD = EventType(
    pipeline=PIPELINE,
    name="upload",
    flag="images-flag",
    variants=("on", "off"),
    outcomes=("success", "failed"),
    labels={
        "content_type": LabelSpec(values=("image/png", "image/jpeg", "other"), otherwise="other"),
        "status_class": LabelSpec(values=("2xx", "5xx")),
    },
    value=ValueSpec(name="size", unit="bytes", buckets=(10.0, 100.0, 1000.0)),
)
RUN = EventType(
    pipeline=PIPELINE,
    name="run",
    flag="images-flag",
    variants=("on", "off"),
    outcomes=("ok", "error"),
    value=ValueSpec(name="latency", unit="seconds", buckets=(1.0, 2.0, 5.0)),
    totals=("tokens",),
)
PLAIN = EventType(pipeline=PIPELINE, name="plain", flag="images-flag", variants=("on", "off"))
CATALOG = Catalog.of([UPLOAD, RUN, PLAIN])


def event(
    kind: str = "plain",
    *,
    at: datetime = NOW,
    environment: str = "qa",
    variant: str = "on",
    outcome: str | None = None,
    labels: dict[str, str] | None = None,
    value: float | None = None,
    totals: dict[str, float] | None = None,
) -> EventIn:
    return EventIn(
        type=kind,
        time=at,
        environment=environment,
        variant=variant,
        outcome=outcome,
        labels=labels or {},
        value=value,
        totals=totals or {},
    )


def run(
    events: Sequence[EventIn], *, tails: Sequence[str] | Mapping[str, Sequence[str]] = (), now: datetime = NOW
) -> Aggregates:
    batch = EventBatch(batch_id="batch-0001", pipeline=PIPELINE, events=list(events))
    return aggregate(
        batch,
        CATALOG,
        environments=ENVIRONMENTS,
        now=now,
        max_age=MAX_AGE,
        max_future=MAX_FUTURE,
        window=WINDOW,
        tail_events=tails if isinstance(tails, Mapping) else dict.fromkeys(tails, ()),
    )


def refused(events: Sequence[EventIn]) -> dict[int, tuple[str | None, str]]:
    """index -> (field, reason) of every refused event."""
    with pytest.raises(BatchRefused) as caught:
        run(events)
    return {error.index: (error.field, error.reason) for error in caught.value.errors}


def only(aggregates: Aggregates) -> WindowAggregate:
    assert len(aggregates.series) == 1, aggregates.series
    return next(iter(aggregates.series.values()))


def body(events: Sequence[Any], **batch: Any) -> bytes:
    document = {"batch_id": "batch-0001", "pipeline": PIPELINE, "events": list(events)} | batch
    return json.dumps(document).encode()


def wire_event(**fields: Any) -> dict[str, Any]:
    return {"type": "plain", "time": "2026-11-01T12:00:00Z", "environment": "qa", "variant": "on"} | fields


# --- windows ------------------------------------------------------------------------------------------------------


def test_a_window_starts_at_a_multiple_of_its_width_since_the_epoch() -> None:
    assert window_start(NOW, WINDOW) == NOW
    assert window_start(NOW + timedelta(seconds=9, microseconds=999_999), WINDOW) == NOW
    assert window_start(NOW + timedelta(seconds=10), WINDOW) == NOW + WINDOW
    assert window_start(NOW - timedelta(microseconds=1), WINDOW) == NOW - WINDOW
    assert window_start(NOW + timedelta(seconds=59), timedelta(minutes=1)) == NOW


def test_a_window_of_a_time_with_an_offset_is_the_window_of_the_same_instant_in_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=3)

    assert window_start(local, WINDOW) == NOW
    assert window_start(local, WINDOW).utcoffset() == timedelta(0)


def test_events_either_side_of_a_window_edge_land_in_two_windows() -> None:
    edge = NOW - timedelta(seconds=20)
    aggregates = run(
        [
            event(at=edge - timedelta(microseconds=1)),
            event(at=edge),
            event(at=edge + timedelta(seconds=9, microseconds=999_999)),
            event(at=edge + timedelta(seconds=10)),
        ]
    )

    counts = {key[0]: found.count for key, found in aggregates.series.items()}
    assert counts == {edge - WINDOW: 1, edge: 2, edge + WINDOW: 1}


def test_events_at_the_same_instant_with_different_offsets_share_one_window() -> None:
    east = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))

    assert only(run([event(at=NOW), event(at=east)])).count == 2


# --- series keys --------------------------------------------------------------------------------------------------


def test_series_are_keyed_by_window_type_environment_variant_outcome_and_labels() -> None:
    png = {"content_type": "image/png", "status_class": "2xx"}
    failing = png | {"status_class": "5xx"}
    aggregates = run(
        [
            event("upload", outcome="success", labels=png, value=5.0),
            event("upload", outcome="success", labels=png, value=6.0),
            event("upload", outcome="success", labels=png, value=5.0, environment="production"),
            event("upload", outcome="success", labels=png, value=5.0, variant="off"),
            event("upload", outcome="failed", labels=png, value=5.0),
            event("upload", outcome="success", labels=failing, value=5.0),
            event("upload", outcome="success", labels=png, value=5.0, at=NOW - WINDOW),
            event("plain"),
        ]
    )

    counts = {key: found.count for key, found in aggregates.series.items()}
    png_key = labels_key(png)
    assert counts == {
        (NOW, "upload", "qa", "on", "success", png_key): 2,
        (NOW, "upload", "production", "on", "success", png_key): 1,
        (NOW, "upload", "qa", "off", "success", png_key): 1,
        (NOW, "upload", "qa", "on", "failed", png_key): 1,
        (NOW, "upload", "qa", "on", "success", labels_key(failing)): 1,
        (NOW - WINDOW, "upload", "qa", "on", "success", png_key): 1,
        (NOW, "plain", "qa", "on", "", "{}"): 1,
    }
    assert aggregates.series[(NOW, "upload", "qa", "on", "success", png_key)].value_sum == 11.0
    assert aggregates.events == 8


def test_the_labels_key_does_not_depend_on_the_order_labels_were_sent_in() -> None:
    first = {"content_type": "image/png", "status_class": "2xx"}
    second = {"status_class": "2xx", "content_type": "image/png"}

    assert labels_key(first) == labels_key(second)
    assert json.loads(labels_key(first)) == first
    aggregates = run(
        [event("upload", outcome="success", labels=first), event("upload", outcome="success", labels=second)]
    )
    assert only(aggregates).count == 2


def test_a_label_value_outside_the_declared_ones_is_recorded_as_its_otherwise_value() -> None:
    aggregates = run(
        [
            event("upload", outcome="success", labels={"content_type": "image/gif"}),
            event("upload", outcome="success", labels={"content_type": "other"}),
        ]
    )

    key = next(iter(aggregates.series))
    assert key[5] == labels_key({"content_type": "other"})
    assert only(aggregates).count == 2


# --- values, histograms and totals --------------------------------------------------------------------------------


def test_count_sum_min_and_max_of_the_values_of_one_series() -> None:
    found = only(run([event("run", outcome="ok", value=value) for value in (0.5, 3.0, 1.25, 7.0)]))

    assert found.count == 4
    assert found.value_count == 4
    assert found.value_sum == pytest.approx(11.75)
    assert found.value_min == 0.5
    assert found.value_max == 7.0


def test_an_event_without_a_value_is_counted_but_not_measured() -> None:
    found = only(run([event("run", outcome="ok"), event("run", outcome="ok", value=2.5)]))

    assert found.count == 2
    assert found.value_count == 1
    assert found.value_sum == 2.5
    assert (found.value_min, found.value_max) == (2.5, 2.5)
    assert found.buckets == [0, 0, 1, 0]


def test_an_event_type_without_a_value_has_no_buckets() -> None:
    found = only(run([event("plain")]))

    assert found.buckets is None
    assert found.value_count == 0
    assert found.value_min is None and found.value_max is None


@pytest.mark.parametrize(
    ("value", "bucket"),
    [
        (0.0, 0),
        (9.999, 0),
        (10.0, 0),  # equal to a bound: that bound's bucket (le semantics)
        (10.000001, 1),
        (100.0, 1),
        (999.0, 2),
        (1000.0, 2),  # the last bound itself
        (1000.5, 3),  # above the last bound: +Inf
        (1e12, 3),
    ],
)
def test_a_value_goes_in_the_first_bucket_whose_bound_it_does_not_exceed(value: float, bucket: int) -> None:
    found = only(run([event("upload", outcome="success", value=value)]))

    expected = [0, 0, 0, 0]
    expected[bucket] = 1
    assert found.buckets == expected


def test_buckets_are_counts_per_bucket_not_cumulative() -> None:
    found = only(run([event("upload", outcome="success", value=value) for value in (1, 10, 50, 100, 500, 5000)]))

    assert found.buckets == [2, 2, 1, 1]


def test_totals_add_up_per_series() -> None:
    aggregates = run(
        [
            event("run", outcome="ok", totals={"tokens": 120}),
            event("run", outcome="ok", totals={"tokens": 30.5}),
            event("run", outcome="ok"),
            event("run", outcome="error", totals={"tokens": 7}),
        ]
    )

    totals = {key[4]: found.totals for key, found in aggregates.series.items()}
    assert totals == {"ok": {"tokens": 150.5}, "error": {"tokens": 7.0}}


def test_merging_aggregates_adds_counts_buckets_and_totals_and_keeps_extremes() -> None:
    mine = WindowAggregate(count=2, value_count=2, value_sum=3.0, value_min=1.0, value_max=2.0, buckets=[1, 1, 0, 0])
    theirs = WindowAggregate(
        count=3, value_count=1, value_sum=9.0, value_min=9.0, value_max=9.0, buckets=[0, 0, 0, 1], totals={"tokens": 4}
    )

    mine.merge(theirs)

    assert mine == WindowAggregate(
        count=5, value_count=3, value_sum=12.0, value_min=1.0, value_max=9.0, buckets=[1, 1, 0, 1], totals={"tokens": 4}
    )
    empty = WindowAggregate()
    empty.merge(WindowAggregate(count=1))
    assert empty == WindowAggregate(count=1)


# --- tails --------------------------------------------------------------------------------------------------------


def test_tail_events_are_kept_per_type_and_environment_in_time_order() -> None:
    aggregates = run(
        [
            event("run", outcome="error", at=NOW - timedelta(seconds=1)),
            event("run", outcome="ok", at=NOW - timedelta(seconds=30)),
            event("run", outcome="error", at=NOW - timedelta(seconds=5), environment="production", variant="off"),
            event("run", outcome="ok", at=NOW - timedelta(seconds=1)),  # same instant: keeps the batch order
            event("run", outcome="error", at=NOW - timedelta(seconds=20)),
            event("upload", outcome="success"),
        ],
        tails=["run"],
    )

    assert set(aggregates.tails) == {("run", "qa", ""), ("run", "production", "")}
    assert [(at, outcome) for at, outcome, _, _ in aggregates.tails[("run", "qa", "")]] == [
        (NOW - timedelta(seconds=30), "ok"),
        (NOW - timedelta(seconds=20), "error"),
        (NOW - timedelta(seconds=1), "error"),
        (NOW - timedelta(seconds=1), "ok"),
    ]
    assert aggregates.tails[("run", "production", "")] == [(NOW - timedelta(seconds=5), "error", "off", {})]


def test_a_segment_label_keeps_a_tail_per_admitted_value_beside_the_tail_of_every_event() -> None:
    aggregates = run(
        [
            event("upload", outcome="failed", labels={"content_type": "image/png"}, at=NOW - timedelta(seconds=3)),
            event("upload", outcome="success", labels={"content_type": "image/gif"}, at=NOW - timedelta(seconds=2)),
            event("upload", outcome="failed", labels={"content_type": "image/png"}, at=NOW - timedelta(seconds=1)),
            event("upload", outcome="success", labels={"status_class": "2xx"}),  # no content type: no segment
        ],
        tails={"upload": ["content_type"]},
    )

    outcomes = {key: [outcome for _, outcome, _, _ in items] for key, items in aggregates.tails.items()}
    assert outcomes == {
        ("upload", "qa", ""): ["failed", "success", "failed", "success"],
        ("upload", "qa", "content_type=image/png"): ["failed", "failed"],
        ("upload", "qa", "content_type=other"): ["success"],
    }


def test_tails_hold_the_admitted_label_values() -> None:
    aggregates = run(
        [event("upload", outcome="failed", labels={"content_type": "image/gif"})],
        tails=["upload"],
    )

    assert aggregates.tails[("upload", "qa", "")] == [(NOW, "failed", "on", {"content_type": "other"})]


def test_no_tails_are_kept_for_types_no_streak_rule_reads() -> None:
    assert run([event("run", outcome="error")]).tails == {}


# --- validation: every bad event, with its index --------------------------------------------------------------------


def test_every_bad_event_is_reported_with_its_index_not_only_the_first() -> None:
    good = event("upload", outcome="success", labels={"status_class": "2xx"}, value=5.0)
    errors = refused(
        [
            good,
            event("nope"),  # 1
            good,
            event("plain", environment="moon"),  # 3
            event("plain", variant="maybe"),  # 4
            event("upload", outcome="exploded"),  # 5
            event("upload"),  # 6: an outcome is required
            event("plain", outcome="ok"),  # 7: none declared
            event("upload", outcome="success", labels={"colour": "red"}),  # 8
            event("upload", outcome="success", labels={"status_class": "4xx"}),  # 9: no `otherwise`
            event("upload", outcome="success", value=-1.0),  # 10
            event("plain", value=1.0),  # 11
            event("run", outcome="ok", totals={"cost": 1}),  # 12
            event("run", outcome="ok", totals={"tokens": -1}),  # 13
            event("plain", at=NOW - MAX_AGE - timedelta(microseconds=1)),  # 14
            event("plain", at=NOW + MAX_FUTURE + timedelta(microseconds=1)),  # 15
            good,
        ]
    )

    assert {index: field for index, (field, _) in errors.items()} == {
        1: "type",
        3: "environment",
        4: "variant",
        5: "outcome",
        6: "outcome",
        7: "outcome",
        8: "labels.colour",
        9: "labels.status_class",
        10: "value",
        11: "value",
        12: "totals.cost",
        13: "totals.tokens",
        14: "time",
        15: "time",
    }
    assert "unknown event type `nope`" in errors[1][1]
    assert "plain, run, upload" in errors[1][1]
    assert "unknown environment `moon`" in errors[3][1]
    assert "variant `maybe`" in errors[4][1]
    assert "'4xx'" in errors[9][1]


def test_the_errors_are_listed_in_index_order() -> None:
    with pytest.raises(BatchRefused) as caught:
        run([event("nope"), event("plain"), event("nope"), event("plain", environment="moon")])

    assert [error.index for error in caught.value.errors] == [0, 2, 3]


@pytest.mark.parametrize(
    "at",
    [NOW - MAX_AGE, NOW + MAX_FUTURE, NOW],
    ids=["exactly max age", "exactly max future", "now"],
)
def test_event_times_at_the_edges_of_the_accepted_range_are_accepted(at: datetime) -> None:
    assert only(run([event(at=at)])).count == 1


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_value_that_is_not_a_finite_number_is_refused(value: float) -> None:
    assert refused([event("run", outcome="ok", value=value)]) == {0: ("value", "value must be a finite number")}


@pytest.mark.parametrize("amount", [float("nan"), float("inf")])
def test_a_total_that_is_not_a_finite_number_is_refused(amount: float) -> None:
    errors = refused([event("run", outcome="ok", totals={"tokens": amount})])

    assert list(errors) == [0]
    assert errors[0][0] == "totals.tokens"


def test_an_unknown_pipeline_names_no_known_events() -> None:
    batch = EventBatch(batch_id="batch-0001", pipeline="elsewhere", events=[event()])

    with pytest.raises(BatchRefused) as caught:
        aggregate(
            batch, CATALOG, environments=ENVIRONMENTS, now=NOW, max_age=MAX_AGE, max_future=MAX_FUTURE, window=WINDOW
        )

    assert "apply its definition first" in caught.value.errors[0].reason


def test_an_empty_batch_aggregates_to_nothing() -> None:
    aggregates = run([])

    assert (aggregates.series, aggregates.tails, aggregates.events) == ({}, {}, 0)


# --- decoding -----------------------------------------------------------------------------------------------------


def test_a_well_formed_batch_decodes_with_aware_times() -> None:
    batch = decode_batch(body([wire_event(time="2026-11-01T13:00:00+01:00", labels={"a": "b"}, value=2, totals={})]))

    assert batch.batch_id == "batch-0001"
    assert batch.events[0].time == NOW
    assert batch.events[0].value == 2.0
    assert batch.events[0].labels == {"a": "b"}


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b'{"batch_id": "batch-0001",}', b"\xff\xfe"])
def test_a_body_that_is_not_json_is_unreadable(raw: bytes) -> None:
    with pytest.raises(BatchUnreadable, match="not JSON"):
        decode_batch(raw)


def test_a_nan_literal_is_not_json() -> None:
    raw = body([wire_event(value=0)]).replace(b'"value": 0', b'"value": NaN')

    with pytest.raises(BatchUnreadable, match="not JSON"):
        decode_batch(raw)


def test_every_event_that_does_not_fit_the_wire_type_is_reported_with_its_index() -> None:
    with pytest.raises(BatchRefused) as caught:
        decode_batch(
            body(
                [
                    wire_event(),
                    wire_event(value="fast"),  # 1
                    wire_event(time="2026-11-01T12:00:00"),  # 2: no time zone
                    wire_event(),
                    {"type": "plain", "time": "2026-11-01T12:00:00Z", "environment": "qa"},  # 4: no variant
                    wire_event(colour="red"),  # 5: unknown field
                    wire_event(value=123456789),  # 6: 1e999, out of range (JSON has no infinity)
                    wire_event(labels={"route": 7}),  # 7
                    "an event",  # 8
                ]
            ).replace(b"123456789", b"1e999")
        )

    errors = {error.index: error for error in caught.value.errors}
    assert sorted(errors) == [1, 2, 4, 5, 6, 7, 8]
    assert errors[1].field == "value"
    assert errors[2].field == "time"
    assert "timezone" in errors[2].reason
    assert "variant" in errors[4].reason
    assert "colour" in errors[5].reason
    assert errors[6].field == "value"
    assert (errors[7].field or "").startswith("labels")  # msgspec names a dict value `labels[...]`
    assert errors[8].field is None
    # The events that did decode travel with the refusal, so their catalog errors can be reported too.
    assert caught.value.indexes == [0, 3]
    assert caught.value.decoded is not None
    assert [item.type for item in caught.value.decoded.events] == ["plain", "plain"]
    assert caught.value.total == 9


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"nan"])
def test_bad_json_after_an_event_of_the_wrong_type_is_still_unreadable_not_a_crash(literal: bytes) -> None:
    raw = body([wire_event(value="fast"), wire_event(value=123456789)]).replace(b"123456789", literal)

    with pytest.raises(BatchUnreadable, match="not JSON"):
        decode_batch(raw)


@pytest.mark.parametrize("batch_id", ["short", "x" * 129, "has space", "semi;colon", ""])
def test_a_batch_id_outside_the_allowed_pattern_is_not_a_batch(batch_id: str) -> None:
    with pytest.raises(BatchMalformed) as caught:
        decode_batch(body([], batch_id=batch_id))

    assert caught.value.field == "batch_id"


@pytest.mark.parametrize(
    "document",
    [
        [],
        {"batch_id": "batch-0001", "pipeline": PIPELINE},
        {"batch_id": "batch-0001", "pipeline": PIPELINE, "events": {}},
        {"batch_id": "batch-0001", "pipeline": PIPELINE, "events": [], "extra": 1},
    ],
    ids=["a list", "no events", "events not a list", "unknown batch field"],
)
def test_json_that_is_not_the_batch_shape_is_not_a_batch(document: Any) -> None:
    with pytest.raises(BatchMalformed, match="not an event batch"):
        decode_batch(json.dumps(document).encode())


def test_an_unknown_batch_field_is_refused_even_when_an_event_is_also_bad() -> None:
    with pytest.raises(BatchMalformed, match="extra"):
        decode_batch(body([wire_event(value="x")], extra=1))


# --- properties ---------------------------------------------------------------------------------------------------

upload_events = st.builds(
    lambda offset, environment, variant, outcome, content_type, status, value: event(
        "upload",
        at=NOW - timedelta(seconds=offset),
        environment=environment,
        variant=variant,
        outcome=outcome,
        labels={"content_type": content_type, "status_class": status},
        value=None if value is None else float(value),
    ),
    st.integers(min_value=0, max_value=60),
    st.sampled_from(ENVIRONMENTS),
    st.sampled_from(("on", "off")),
    st.sampled_from(("success", "failed")),
    st.sampled_from(("image/png", "image/jpeg", "image/gif", "other")),
    st.sampled_from(("2xx", "5xx")),
    st.none() | st.integers(min_value=0, max_value=2000),
)
plain_events = st.builds(
    lambda offset, variant: event("plain", at=NOW - timedelta(seconds=offset), variant=variant),
    st.integers(min_value=0, max_value=60),
    st.sampled_from(("on", "off")),
)
batches = st.lists(upload_events | plain_events, max_size=40)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_every_event_is_counted_once_and_every_value_in_exactly_one_bucket(events: list[EventIn]) -> None:
    aggregates = run(events)

    assert sum(found.count for found in aggregates.series.values()) == len(events) == aggregates.events
    values = [item.value for item in events if item.value is not None]
    assert sum(found.value_count for found in aggregates.series.values()) == len(values)
    assert sum(found.value_sum for found in aggregates.series.values()) == sum(values)
    for key, found in aggregates.series.items():
        assert window_start(key[0], WINDOW) == key[0]
        if found.buckets is not None:
            assert sum(found.buckets) == found.value_count
        if found.value_count:
            assert found.value_min is not None and found.value_max is not None
            assert found.value_min <= found.value_sum / found.value_count <= found.value_max


@settings(max_examples=150, deadline=None)
@given(batches, st.integers(min_value=0, max_value=40))
def test_aggregating_a_batch_in_two_parts_and_merging_equals_aggregating_it_whole(
    events: list[EventIn], cut: int
) -> None:
    whole = run(events).series
    merged: dict[Any, WindowAggregate] = {}
    for part in (events[:cut], events[cut:]):
        for key, found in run(part).series.items():
            if key in merged:
                merged[key].merge(found)
            else:
                merged[key] = found

    assert merged == whole


@pytest.mark.parametrize(("kind", "outcome", "unit"), [("run", "ok", "seconds"), ("upload", "success", "bytes")])
def test_a_value_past_its_units_maximum_is_refused_with_the_events_index(kind: str, outcome: str, unit: str) -> None:
    # Two values of 1e308 summed to infinity in a window: the sum and the latency guard's mean were lost with it.
    maximum = UNIT_MAXIMUM[unit]
    events = [event(kind, outcome=outcome, value=maximum), event(kind, outcome=outcome, value=1e308)]

    assert refused(events) == {1: ("value", f"value must be at most {maximum:g} {unit}")}
    aggregates = run([event(kind, outcome=outcome, value=maximum)] * 1000)
    (series,) = aggregates.series.values()
    assert math.isfinite(series.value_sum) and math.isfinite(series.value_sumsq)


def test_a_total_past_the_maximum_is_refused() -> None:
    errors = refused(
        [
            event("run", outcome="ok", totals={"tokens": TOTAL_MAXIMUM}),
            event("run", outcome="ok", totals={"tokens": 1e300}),
        ]
    )

    assert errors == {1: ("totals.tokens", f"total `tokens` must be at most {TOTAL_MAXIMUM:g}")}
