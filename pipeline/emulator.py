"""gcp-storage-emulator in this process, a real google-cloud-storage client, and a fresh bucket on it: for the
demo, the tests and the benchmarks. The emulator is not a runtime dependency: install the `demo` (or `test`) extra.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["fresh_bucket", "running_emulator", "storage_client"]


@contextmanager
def running_emulator() -> Iterator[str]:
    """gcp-storage-emulator in memory on a free loopback port; yields its base URL (ImportError when missing)."""
    try:
        from gcp_storage_emulator.server import create_server  # type: ignore[import-untyped]
    except ImportError as error:
        raise ImportError(f"gcp-storage-emulator is missing ({error}): pip install -e '.[demo]'") from error

    # The emulator logs a warning per string response ("should be handled as stream"): noise.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    try:
        # The bound port is only on a private attribute (reference/gcs.md, in-process use).
        yield f"http://127.0.0.1:{server._api._httpd.server_address[1]}"
    finally:
        server.stop()


def storage_client(project: str) -> Any:
    """A real storage client; it talks to the emulator named by ``STORAGE_EMULATOR_HOST``."""
    with warnings.catch_warnings():
        # google-api-core asks for grpcio-status at import; the storage client speaks HTTP only.
        warnings.simplefilter("ignore", ImportWarning)
        from google.cloud import storage
    return storage.Client(project=project)


def fresh_bucket(client: Any, name: str) -> Any:
    """An empty bucket called ``name`` (an older one is deleted first) whose soft delete is off."""
    bucket = client.bucket(name)
    if bucket.exists():
        bucket.delete(force=True)
    client.create_bucket(bucket)
    # Soft delete would keep every deleted object in the emulator's store and slow each write (reference/gcs.md).
    # Set on the created bucket by a patch: the emulator ignores a softDeletePolicy sent with the create.
    bucket.soft_delete_policy.retention_duration_seconds = 0
    bucket.patch()
    bucket.reload()
    if bucket.soft_delete_policy.retention_duration_seconds != 0:
        raise RuntimeError(f"soft delete still on: {bucket.soft_delete_policy.retention_duration_seconds} s")
    return bucket
