"""Helpers shared by the cleanup API and CLI tests: gcp-storage-emulator for a module, objects on it, the bucket.

The policy they exercise is the shipped `expired-reference-images` (definitions/reference-images.yaml).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controlplane.cleanup.selection import EXPIRY_METADATA_KEY
from tests.gcs_emulator import emulator

__all__ = ["BUCKET", "GRACE", "POLICY", "PREFIX", "emulator", "expires", "names", "upload"]

BUCKET = "reference-images"
POLICY = "expired-reference-images"
PREFIX = "reference-images/"
GRACE = timedelta(hours=1)
#: What every test object holds: ten bytes, so bytes freed are ten per object.
CONTENT = b"0123456789"


def upload(client: Any, name: str, metadata: dict[str, str] | None = None) -> datetime:
    """Store one ten-byte object in the bucket; return its creation time as the server recorded it."""
    blob = client.bucket(BUCKET).blob(name)
    if metadata is not None:
        blob.metadata = metadata
    blob.upload_from_string(CONTENT, content_type="image/png")
    blob.reload()
    created: datetime = blob.time_created
    return created


def names(client: Any) -> set[str]:
    """Every object name in the bucket."""
    return {blob.name for blob in client.list_blobs(BUCKET)}


def expires(moment: datetime) -> dict[str, str]:
    """Object metadata saying its signed URL expires at ``moment``."""
    return {EXPIRY_METADATA_KEY: moment.isoformat()}
