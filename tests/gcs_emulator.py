"""The emulator for tests: ``pipeline.emulator``'s helpers, and the bodies of the emulator and bucket fixtures that
the cleanup and pipeline tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline.emulator import fresh_bucket, running_emulator, storage_client
from tests.conftest import missing_service

__all__ = ["emulated_bucket", "emulator", "fresh_bucket", "running_emulator", "storage_client"]


def emulator() -> Iterator[str]:
    """gcp-storage-emulator in memory on a free port (the body of a module-scoped fixture); when it is not installed,
    skipped locally and failed under CI."""
    try:
        with running_emulator() as host:
            yield host
    except ImportError as error:
        missing_service(f"gcp-storage-emulator ({error})")


def emulated_bucket(
    host: str, monkeypatch: pytest.MonkeyPatch, bucket: str, project: str = "test-project"
) -> Iterator[Any]:
    """A real storage client on the emulator at ``host`` with ``bucket`` empty (the body of a fixture)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
    client = storage_client(project)
    fresh_bucket(client, bucket)
    yield client
    client.close()
