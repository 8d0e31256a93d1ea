"""The snapshot cache file: the last snapshot a provider installed, so a restart can serve it while the server is away.

Written atomically (a temporary file beside it, then a rename); an unreadable file, or one of another environment,
is ignored with a warning, never trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

import msgspec

from controlplane_client.provider.snapshot import Snapshot

__all__ = ["CacheFile", "read_cache_file", "write_cache_file"]

logger = logging.getLogger(__name__)


class CacheFile(msgspec.Struct):
    """What ``cache_path`` holds: the last snapshot and the ETag it was served with."""

    etag: str | None
    snapshot: Snapshot


def read_cache_file(path: Path | None, environment: str | None) -> CacheFile | None:
    """The cached snapshot at ``path`` if there is a readable one (of ``environment``, when given)."""
    if path is None or not path.exists():
        return None
    try:
        cached = msgspec.json.decode(path.read_bytes(), type=CacheFile)
    except (OSError, msgspec.DecodeError) as error:
        logger.warning("ignoring unreadable snapshot cache %s: %s", path, error)
        return None
    if environment is not None and cached.snapshot.environment != environment:
        held = cached.snapshot.environment
        logger.warning("ignoring snapshot cache %s: it holds %s, not %s", path, held, environment)
        return None
    return cached


def write_cache_file(path: Path | None, cached: CacheFile) -> None:
    """Replace the cache at ``path`` (nothing when None); a failure is logged, never raised."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: a reader (or a crash) sees the old file or the new, never half.
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as error:
        logger.warning("could not write the snapshot cache %s: %s", path, error)
        return
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(msgspec.json.encode(cached))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        logger.warning("could not write the snapshot cache %s: %s", path, error)
        with contextlib.suppress(OSError):
            os.unlink(temporary)
