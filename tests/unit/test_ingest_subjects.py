"""Subjects in window aggregation: counted per series and subject (events without one in the windows only), checked
to be hex digests; and each window's sum of squared values."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from controlplane.telemetry.aggregation import Aggregates, BatchRefused, aggregate, labels_key, window_start
from controlplane.telemetry.schemas import EventBatch, EventIn
from tests.unit.test_ingest_aggregation import CATALOG, ENVIRONMENTS, MAX_AGE, MAX_FUTURE, NOW, PIPELINE, WINDOW, event

ALICE = hashlib.sha256(b"alice").hexdigest()[:32]
BOB = hashlib.sha256(b"bob").hexdigest()


def aggregated(*events: EventIn) -> Aggregates:
    batch = EventBatch(batch_id="batch-0001", pipeline=PIPELINE, events=list(events))
    return aggregate(
        batch, CATALOG, environments=ENVIRONMENTS, now=NOW, max_age=MAX_AGE, max_future=MAX_FUTURE, window=WINDOW
    )


def with_subject(item: EventIn, subject: str | None) -> EventIn:
    return EventIn(
        type=item.type,
        time=item.time,
        environment=item.environment,
        variant=item.variant,
        outcome=item.outcome,
        labels=item.labels,
        value=item.value,
        subject=subject,
    )


def test_events_are_counted_per_series_and_subject_whatever_their_labels_order() -> None:
    png = {"content_type": "image/png", "status_class": "2xx"}
    reordered = {"status_class": "2xx", "content_type": "image/png"}
    later = NOW - timedelta(seconds=20)
    found = aggregated(
        with_subject(event("upload", outcome="success", labels=png, value=5), ALICE),
        with_subject(event("upload", outcome="success", labels=reordered, value=5), ALICE),
        with_subject(event("upload", outcome="failed", labels=png, value=5), ALICE),
        with_subject(event("upload", outcome="success", labels=png, value=5), BOB),
        with_subject(event("upload", outcome="success", labels=png, value=5, at=later), ALICE),
        event("upload", outcome="success", labels=png, value=5),  # no subject
    )

    key = labels_key(png)
    now, before = window_start(NOW, WINDOW), window_start(later, WINDOW)
    assert found.subjects == {
        (now, "upload", "qa", "on", "success", key, ALICE): 2,
        (now, "upload", "qa", "on", "failed", key, ALICE): 1,
        (now, "upload", "qa", "on", "success", key, BOB): 1,
        (before, "upload", "qa", "on", "success", key, ALICE): 1,
    }
    assert found.series[(now, "upload", "qa", "on", "success", key)].count == 4


def test_a_batch_without_subjects_has_no_subject_counts() -> None:
    assert aggregated(event(), event(variant="off")).subjects == {}


def test_a_subject_that_is_no_digest_is_refused_without_repeating_it() -> None:
    with pytest.raises(BatchRefused) as refused:
        aggregated(with_subject(event(), ALICE), with_subject(event(), "user-42"), with_subject(event(), ALICE[:15]))

    assert [(error.index, error.field) for error in refused.value.errors] == [(1, "subject"), (2, "subject")]
    assert "got 7 characters, not all lowercase hex" in refused.value.errors[0].reason
    assert "got 15 characters:" in refused.value.errors[1].reason
    assert all("user-42" not in error.reason for error in refused.value.errors)


def test_a_window_sums_its_values_and_their_squares() -> None:
    found = aggregated(event("run", outcome="ok", value=1.5), event("run", outcome="ok", value=0.5))

    (window,) = found.series.values()
    assert (window.value_count, window.value_sum, window.value_sumsq) == (2, 2.0, 2.5)
