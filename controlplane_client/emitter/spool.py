"""The spool: batch bodies kept on local disk while the control plane cannot take them, replayed in order.

Layout of a spool directory::

    spool/
      lock                  flock'ed by the one Emitter using the directory
      000000000001.jsonl    segments: append-only, one batch body (JSON, with its batch id) per line
      000000000002.jsonl
      head                  {"segment": 1, "offset": 4096}: where the oldest unacknowledged batch starts

A batch leaves the spool only when ``acknowledge`` moves ``head`` past it, and ``head`` is replaced atomically
(written to a temporary file, fsynced, renamed, directory fsynced), so a crash at any point loses no batch that
was not acknowledged; at worst the batch being acknowledged is replayed once more, and its id makes the control
plane count it once. A fully acknowledged segment is deleted after ``head`` has moved to the next one. A line
torn by a crash mid-append is cut off when the spool is opened: it was never complete, so never acknowledged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["Spool", "SpoolFull", "SpoolInUse"]

logger = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"
HEAD_FILE = "head"
LOCK_FILE = "lock"


class SpoolFull(Exception):
    """Appending would take the spool past its byte cap."""


class SpoolInUse(Exception):
    """Another emitter (in this or another process) holds the spool directory."""


def _segment_name(number: int) -> str:
    return f"{number:012d}{SEGMENT_SUFFIX}"


class Spool:
    """An append-only queue of batch bodies on disk, read from the oldest; not thread-safe (the caller locks)."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int = 4 * 1024 * 1024, fsync: bool = True):
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._fsync = fsync
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = open(directory / LOCK_FILE, "a+b")  # noqa: SIM115 - held for the spool's life
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise SpoolInUse(f"spool {directory} is used by another emitter") from exc
        self._writer: BinaryIO | None = None
        self._head_line: bytes | None = None
        self._segments, self._head_offset = self._recover()
        self._sizes = {number: (directory / _segment_name(number)).stat().st_size for number in self._segments}
        # A new segment never reuses the number `head` names: a stale offset must not apply to new data.
        self._next_number = max([*self._segments, self._recorded_segment]) + 1

    @property
    def pending_bytes(self) -> int:
        """Bytes of batches not yet acknowledged."""
        return sum(self._sizes.values()) - self._head_offset

    @property
    def is_empty(self) -> bool:
        """Whether every spooled batch has been acknowledged."""
        return self.pending_bytes == 0

    def append(self, body: bytes) -> None:
        """Add one batch body after the newest; raises ``SpoolFull``, or ``OSError`` with nothing half-written."""
        line = body + b"\n"  # JSON bodies never hold a raw newline: strings escape it
        if self.pending_bytes + len(line) > self.max_bytes:
            raise SpoolFull(f"spool {self.directory} would pass {self.max_bytes} bytes")
        if not self._segments or self._sizes[self._segments[-1]] >= self.segment_bytes:
            self._start_segment()
        number = self._segments[-1]
        writer = self._open_writer(number)
        size = self._sizes[number]
        try:
            writer.write(line)
            writer.flush()
            if self._fsync:
                os.fsync(writer.fileno())
        except OSError:
            # Leave no partial line behind: the next append must start on a line of its own.
            self._close_writer()
            os.truncate(self.directory / _segment_name(number), size)
            raise
        self._sizes[number] = size + len(line)

    def head(self) -> bytes | None:
        """The oldest unacknowledged batch body, or None when there is none."""
        if self._head_line is not None:
            return self._head_line[:-1]
        while self._segments:
            number = self._segments[0]
            if self._head_offset < self._sizes[number]:
                with open(self.directory / _segment_name(number), "rb") as segment:
                    segment.seek(self._head_offset)
                    line = segment.readline()
                self._head_line = line
                return line[:-1]
            if len(self._segments) == 1:
                return None
            self._retire_head_segment()
        return None

    def acknowledge(self, body: bytes) -> None:
        """Remove the head batch, which must be ``body``, once the control plane has answered for it."""
        if self.head() != body or self._head_line is None:
            raise RuntimeError("acknowledged a batch that is not the spool's head")
        self._head_offset += len(self._head_line)
        self._head_line = None
        number = self._segments[0]
        if self._head_offset < self._sizes[number]:
            self._write_head(number, self._head_offset)
            return
        if len(self._segments) == 1:
            # The newest segment is all acknowledged: the next append starts a new one, so this one can go.
            self._close_writer()
        self._retire_head_segment()

    def close(self) -> None:
        """Close the open files and release the directory."""
        self._close_writer()
        self._lock.close()  # releases the flock

    def _recover(self) -> tuple[list[int], int]:
        """Read ``head``, delete acknowledged segments, cut a torn last line; the live segments and head offset."""
        recorded_segment, recorded_offset = self._read_head()
        self._recorded_segment = recorded_segment
        numbers = sorted(
            int(path.name.removesuffix(SEGMENT_SUFFIX))
            for path in self.directory.glob(f"*{SEGMENT_SUFFIX}")
            if path.name.removesuffix(SEGMENT_SUFFIX).isdigit()
        )
        for number in [n for n in numbers if n < recorded_segment]:
            # Acknowledged: `head` moved past it before a crash let it be deleted.
            (self.directory / _segment_name(number)).unlink()
        live = [n for n in numbers if n >= recorded_segment]
        if live:
            self._cut_torn_line(live[-1])
        offset = recorded_offset if live and live[0] == recorded_segment else 0
        return live, offset

    def _read_head(self) -> tuple[int, int]:
        try:
            recorded = json.loads((self.directory / HEAD_FILE).read_text())
            return int(recorded["segment"]), int(recorded["offset"])
        except FileNotFoundError:
            return 1, 0

    def _cut_torn_line(self, number: int) -> None:
        path = self.directory / _segment_name(number)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            logger.warning(
                "spool %s: cut a line torn by a crash (%d bytes) from %s", self.directory, len(data) - keep, path.name
            )
            os.truncate(path, keep)

    def _start_segment(self) -> None:
        self._close_writer()
        number = self._next_number
        self._next_number += 1
        (self.directory / _segment_name(number)).touch()
        self._segments.append(number)
        self._sizes[number] = 0
        if len(self._segments) == 1:
            self._head_offset = 0
        self._fsync_directory()

    def _open_writer(self, number: int) -> BinaryIO:
        if self._writer is None:
            self._writer = open(self.directory / _segment_name(number), "ab")  # noqa: SIM115 - kept open for appends
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _retire_head_segment(self) -> None:
        """Move ``head`` to the next segment, then delete the acknowledged one (in that order: crash-safe)."""
        number = self._segments.pop(0)
        del self._sizes[number]
        following = self._segments[0] if self._segments else self._next_number
        self._recorded_segment = following
        self._head_offset = 0
        self._head_line = None
        self._write_head(following, 0)
        (self.directory / _segment_name(number)).unlink()

    def _write_head(self, segment: int, offset: int) -> None:
        temporary = self.directory / f"{HEAD_FILE}.tmp"
        with open(temporary, "wb") as file:
            file.write(json.dumps({"segment": segment, "offset": offset}).encode())
            file.flush()
            if self._fsync:
                os.fsync(file.fileno())
        os.replace(temporary, self.directory / HEAD_FILE)
        self._fsync_directory()

    def _fsync_directory(self) -> None:
        if not self._fsync:
            return
        descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
