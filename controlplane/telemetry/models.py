"""Tables of telemetry: aggregation windows, per-subject counts, ingested batch ids and event tails."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db import Base, JSONDocument, UTCDateTime

__all__ = ["EventTail", "IngestedBatch", "TelemetrySubject", "TelemetryWindow"]


class TelemetryWindow(Base):
    """Events of one short window with the same type, outcome, labels, environment and variant, aggregated.

    ``buckets`` holds one count per histogram bound of the event's value plus one for +Inf (not cumulative);
    ``value_sumsq`` the sum of the squared values (with ``value_count`` and ``value_sum``, their variance).
    """

    __tablename__ = "telemetry_windows"
    __table_args__ = (
        UniqueConstraint(
            "window_start",
            "pipeline",
            "event",
            "environment",
            "variant",
            "outcome",
            "labels_key",
            name="uq_telemetry_windows_series",
        ),
        Index("ix_telemetry_windows_pipeline_event_start", "pipeline", "event", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    pipeline: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(64))
    labels_key: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger)
    value_count: Mapped[int] = mapped_column(BigInteger, default=0)
    value_sum: Mapped[float] = mapped_column(Float, default=0.0)
    value_sumsq: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    value_min: Mapped[float | None] = mapped_column(Float)
    value_max: Mapped[float | None] = mapped_column(Float)
    buckets: Mapped[list[int] | None] = mapped_column(JSONDocument)
    totals: Mapped[dict[str, float] | None] = mapped_column(JSONDocument)


class TelemetrySubject(Base):
    """How many events of one window's series carried one subject (a hash of who they are about, never a raw id).

    Written with the window rows, for events that carry a subject; a rule's ``per_subject_cap`` reads them to count
    each subject at most that many times (``alerting.subjects``). Deleted with the windows.
    """

    __tablename__ = "telemetry_subjects"
    __table_args__ = (
        UniqueConstraint(
            "window_start",
            "pipeline",
            "event",
            "environment",
            "variant",
            "outcome",
            "labels_key",
            "subject",
            name="uq_telemetry_subjects_series",
        ),
        Index(
            "ix_telemetry_subjects_pipeline_event_environment_start", "pipeline", "event", "environment", "window_start"
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime)
    pipeline: Mapped[str] = mapped_column(String(128))
    event: Mapped[str] = mapped_column(String(128))
    environment: Mapped[str] = mapped_column(String(64))
    variant: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(64))
    labels_key: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(BigInteger)


class IngestedBatch(Base):
    """A batch id already counted, with a digest of its events, so a retried batch counts once."""

    __tablename__ = "ingested_batches"

    batch_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(64))
    events: Mapped[int]
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class EventTail(Base):
    """The newest events of one type in one environment, in event order, for streak rules: of every event
    (``segment`` empty), or of one segment's (``queue=sales``) for the streak guards scoped to it, so a busy segment
    never pushes a quiet one's events out of the tail its guard reads."""

    __tablename__ = "event_tails"

    pipeline: Mapped[str] = mapped_column(String(128), primary_key=True)
    event: Mapped[str] = mapped_column(String(128), primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    # `attribute=value`: a label's name and one of its values, each at most 128 characters.
    segment: Mapped[str] = mapped_column(String(257), primary_key=True, default="", server_default="")
    events: Mapped[list[list[Any]]] = mapped_column(JSONDocument)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
