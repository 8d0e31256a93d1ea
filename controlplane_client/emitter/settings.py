"""How an emitter batches, retries and spools, within the limits of the control plane's ingest."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["MAX_BYTES_PER_BATCH", "MAX_EVENTS_PER_BATCH", "SUBJECT_KEY_VARIABLE", "EmitterSettings"]

MAX_EVENTS_PER_BATCH = 5000  # the control plane's ingest_max_events
MAX_BYTES_PER_BATCH = 1024 * 1024  # its ingest_max_bytes, which also bounds the decompressed body
#: The environment variable the default ``subject_key`` is read from.
SUBJECT_KEY_VARIABLE = "CONTROLPLANE_SUBJECT_KEY"


def _subject_key_from_environment() -> str | None:
    return os.environ.get(SUBJECT_KEY_VARIABLE) or None


@dataclass(frozen=True, slots=True)
class EmitterSettings:
    """How an emitter batches, retries and spools."""

    max_queue_events: int = 10_000
    """Events held in memory; past it the oldest batch goes to the spool."""
    max_batch_events: int = 500
    """A batch is sent as soon as this many events are queued."""
    max_batch_bytes: int = MAX_BYTES_PER_BATCH
    """Largest body (uncompressed); a batch over it is split."""
    flush_interval: float = 1.0
    """Seconds between sends of whatever is queued, full batch or not."""
    max_attempts: int = 4
    """Attempts for a new batch before it goes to the spool."""
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    max_retry_after: float = 300.0
    """Longest ``Retry-After`` obeyed; a larger one is cut to this."""
    request_timeout: float = 10.0
    gzip_min_bytes: int = 4096
    spool_max_bytes: int = 64 * 1024 * 1024
    spool_segment_bytes: int = 4 * 1024 * 1024
    spool_fsync: bool = True
    subject_key: str | None = field(default_factory=_subject_key_from_environment, repr=False)
    """The deployment's secret for hashing subjects (HMAC-SHA256); None: plain SHA-256. Read from
    ``CONTROLPLANE_SUBJECT_KEY`` when not given; never shown in a repr."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_batch_events <= MAX_EVENTS_PER_BATCH:
            raise ValueError(f"max_batch_events must be within 1..{MAX_EVENTS_PER_BATCH}")
        if self.max_queue_events < self.max_batch_events:
            raise ValueError("max_queue_events must hold at least one batch")
        if not 0 < self.max_batch_bytes <= MAX_BYTES_PER_BATCH:
            raise ValueError(f"max_batch_bytes must be within 1..{MAX_BYTES_PER_BATCH}")
        if self.flush_interval <= 0 or self.max_attempts < 1 or self.backoff_base < 0 or self.backoff_cap < 0:
            raise ValueError("flush_interval must be positive, max_attempts at least 1, backoffs not negative")
