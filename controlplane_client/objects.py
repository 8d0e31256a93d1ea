"""The contract between an application's bucket objects and the control plane's bucket cleanup.

An application that hands out signed URLs to an object records, on the object, when the last of them expires:
metadata ``signed_url_expires_at`` (``EXPIRY_METADATA_KEY``), an ISO 8601 instant with its UTC offset, only ever
moved later. The cleanup reads it with ``read_expiry``, the one reader both sides use: a missing value is ``None``,
and a value it cannot place on the clock (not ISO 8601, or naive) is ``Reason.EXPIRY_UNREADABLE``, never a guess.
``Reason`` names why the cleanup deleted or kept an object: the keys of a cleanup run's ``matched_by_reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

__all__ = ["EXPIRY_METADATA_KEY", "Reason", "read_expiry"]

EXPIRY_METADATA_KEY = "signed_url_expires_at"


class Reason(StrEnum):
    """Why an object is deleted or kept (machine-readable; recorded per run)."""

    SIGNED_URL_EXPIRED = "signed_url_expired"
    SIGNED_URL_NOT_EXPIRED = "signed_url_not_expired"
    EXPIRY_MISSING = "expiry_missing"
    EXPIRY_UNREADABLE = "expiry_unreadable"
    EXPIRY_MISSING_PAST_AGE = "expiry_missing_past_age"
    EXPIRY_UNREADABLE_PAST_AGE = "expiry_unreadable_past_age"
    OLDER_THAN_LIMIT = "older_than_limit"
    NOT_OLD_ENOUGH = "not_old_enough"
    UPLOADED_IN_WINDOW = "uploaded_in_window"
    OUTSIDE_WINDOW = "outside_window"


def read_expiry(metadata: Mapping[str, str]) -> datetime | Reason | None:
    """The ``signed_url_expires_at`` instant; ``None`` when absent; ``Reason.EXPIRY_UNREADABLE`` when unusable."""
    raw = metadata.get(EXPIRY_METADATA_KEY)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except (ValueError, AttributeError):
        return Reason.EXPIRY_UNREADABLE
    if parsed.utcoffset() is None:
        # A naive time could be UTC or the writer's local time; guessing could delete early.
        return Reason.EXPIRY_UNREADABLE
    return parsed
