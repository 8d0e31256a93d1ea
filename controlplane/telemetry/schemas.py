"""Wire types of event ingest."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

__all__ = ["BATCH_ID_PATTERN", "SUBJECT_PATTERN", "EventBatch", "EventError", "EventIn", "IngestResult"]

BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{8,128}$"
#: A subject as ingest accepts it: a lowercase hex digest (the emitter sends 32 characters of an HMAC-SHA256).
SUBJECT_PATTERN = r"^[0-9a-f]{16,64}$"


class EventIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True, gc=False):
    """One event as a pipeline sends it."""

    # gc=False: a batch decodes into thousands of these, and none can be part of a reference cycle (strings,
    # a datetime, a float and flat dicts of them), so the cyclic collector need not track them.

    type: str
    time: Annotated[datetime, msgspec.Meta(tz=True)]
    environment: str
    variant: str
    outcome: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    value: float | None = None
    totals: dict[str, float] = msgspec.field(default_factory=dict)
    # Who the event is about, hashed by the sender (never a raw user id): rules may cap each subject's weight.
    # Checked by ingest (SUBJECT_PATTERN), to refuse anything else with a reason rather than a regex.
    subject: str | None = None


class EventBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A batch of events of one pipeline; ``batch_id`` makes a retry count once."""

    batch_id: Annotated[str, msgspec.Meta(pattern=BATCH_ID_PATTERN)]
    pipeline: str
    events: list[EventIn]


class RawBatch(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A batch whose events are kept undecoded, to find every bad one rather than only the first.

    As strict as EventBatch about the batch itself: a field EventBatch refuses must not pass through here.
    """

    batch_id: Annotated[str, msgspec.Meta(pattern=BATCH_ID_PATTERN)]
    pipeline: str
    events: list[msgspec.Raw]


class EventError(msgspec.Struct, frozen=True):
    """Why one event of a batch was refused."""

    index: int
    reason: str
    field: str | None = None


class IngestResult(msgspec.Struct, frozen=True):
    """What ingest did with a batch: ``duplicate`` when the batch id was already counted (nothing added)."""

    batch_id: str
    pipeline: str
    accepted: int
    duplicate: bool
    series: int
