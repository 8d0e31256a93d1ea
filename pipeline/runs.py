"""A run's state, its delivery audit trail, and what it leaves on disk: ``meta.json`` and the final assets.

``runs/<run id>/meta.json`` holds the sanitised state (no signed URL: a URL is a credential; its expiry is kept).
``runs/<run id>/artifacts/ads_final/variation_<n>.json`` (and ``.png``) hold each generated variation.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["RUN_ID_PATTERN", "RunStore", "append_delivery_audit_event", "new_run_id", "sanitise"]

RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_SECRET_KEYS = frozenset({"signed_url"})


def new_run_id() -> str:
    """A fresh run id (also a safe directory name)."""
    return uuid.uuid4().hex


def append_delivery_audit_event(state: dict[str, Any], event: str, *, at: datetime, **details: Any) -> dict[str, Any]:
    """Append one step to ``state['delivery_audit_trail']``: what happened, when, and its details."""
    entry = {"event": event, "at": at.isoformat(), **details}
    state.setdefault("delivery_audit_trail", []).append(entry)
    return entry


def sanitise(value: Any) -> Any:
    """A deep copy of ``value`` without signed URLs (bearer credentials): what may be written to disk."""
    if isinstance(value, dict):
        return {key: sanitise(item) for key, item in value.items() if key not in _SECRET_KEYS}
    if isinstance(value, list):
        return [sanitise(item) for item in value]
    return copy.copy(value)


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2, sort_keys=True, default=str)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class RunStore:
    """Runs on disk under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def directory(self, run_id: str) -> Path:
        """Where a run's files are; refuses an id that is not one of ours (no path tricks)."""
        if not RUN_ID_PATTERN.fullmatch(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.root / run_id

    def save(self, state: dict[str, Any]) -> Path:
        """Write the run's sanitised ``meta.json``; return its path."""
        path = self.directory(state["run_id"]) / "meta.json"
        _write_json(path, sanitise(state))
        return path

    def load(self, run_id: str) -> dict[str, Any] | None:
        """A run's ``meta.json``, or None when there is no such run."""
        try:
            path = self.directory(run_id) / "meta.json"
        except ValueError:
            return None
        if not path.is_file():
            return None
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded

    @contextmanager
    def exclusive(self, run_id: str, action: str) -> Iterator[bool]:
        """Hold the run's ``action`` lock for the block: yields True when this caller holds it, False when another
        request (a thread, or a process on the same disk) does. The lock is the kernel's (``flock`` on a file in
        the run's directory), so a crashed holder releases it: a run never stays locked."""
        path = self.directory(run_id) / f".{action}.lock"
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save_final_asset(self, run_id: str, index: int, document: dict[str, Any], png: bytes) -> Path:
        """Write one final variation: its JSON (``visual.reference_assets`` and grade) and its image."""
        folder = self.directory(run_id) / "artifacts" / "ads_final"
        _write_json(folder / f"variation_{index}.json", sanitise(document))
        (folder / f"variation_{index}.png").write_bytes(png)
        return folder / f"variation_{index}.json"
