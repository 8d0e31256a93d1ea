"""Events as a pipeline emits them, and batches as the control plane's `POST /api/v1/events` reads them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import msgspec

__all__ = ["Event", "Outgoing", "SpooledBatch", "encode_batch", "read_spooled"]


class Event(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """One event of a definition's event types; ``time`` must carry its UTC offset.

    ``subject`` is who the event is about as the control plane receives it: a hex digest, never a raw user id. Let
    the emitter make it (``Emitter.emit(event, subject=user_id)``, or ``Emitter.subject(user_id)``).
    """

    # gc=False: a queue holds thousands of these and none can be part of a reference cycle.

    type: str
    time: datetime
    environment: str
    variant: str
    outcome: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    value: float | None = None
    totals: dict[str, float] = msgspec.field(default_factory=dict)
    subject: str | None = None


Outgoing: TypeAlias = Event | Mapping[str, Any]
"""What ``Emitter.emit`` takes: an ``Event``, or a mapping of the same fields."""


class SpooledBatch(msgspec.Struct, frozen=True):
    """A spooled batch body read back for its id and size; the events stay undecoded."""

    batch_id: str
    pipeline: str
    events: list[msgspec.Raw]


_encoder = msgspec.json.Encoder()
_spooled = msgspec.json.Decoder(SpooledBatch)


def encode_batch(batch_id: str, pipeline: str, events: Sequence[Outgoing]) -> bytes:
    """The JSON body of one batch; raises ``TypeError`` if an event cannot be encoded."""
    return _encoder.encode({"batch_id": batch_id, "pipeline": pipeline, "events": events})


def read_spooled(body: bytes) -> SpooledBatch:
    """Read a spooled body's id and event count; raises ``msgspec.DecodeError`` on a damaged line."""
    return _spooled.decode(body)
