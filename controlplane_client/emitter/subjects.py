"""Subjects: who an event is about, hashed in the emitter's process so the raw key (a user id) never leaves it.

The control plane accepts only a hex digest as an event's ``subject`` (rules may count each subject's events at
most a few times: one client must not move a guard). The digest is HMAC-SHA256 of the key under the deployment's
``subject_key`` (``EmitterSettings``, read from ``CONTROLPLANE_SUBJECT_KEY``), or plain SHA-256 without one,
truncated to 32 hex characters (128 bits: no two users of a deployment share one by chance). With a secret key,
nobody who sees the events can test a guessed user id against them; without one, a user id can be confirmed by
hashing it, so set the key wherever user ids are guessable.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["SUBJECT_HEX_CHARS", "subject_digest"]

#: Hex characters of a subject as the emitter sends it (the control plane accepts 16 to 64).
SUBJECT_HEX_CHARS = 32


def subject_digest(key: str, secret: bytes | None = None) -> str:
    """The subject sent for the raw ``key``: HMAC-SHA256 under ``secret`` (plain SHA-256 when None or empty), as
    its first 32 lowercase hex characters."""
    data = key.encode()
    if secret:
        return hmac.new(secret, data, hashlib.sha256).hexdigest()[:SUBJECT_HEX_CHARS]
    return hashlib.sha256(data).hexdigest()[:SUBJECT_HEX_CHARS]
