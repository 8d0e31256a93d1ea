"""A bucket in memory with the rules GCS enforces and no emulator does, and a sleep that only records: shared by
the cleanup runner, service and replica tests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from controlplane.cleanup.selection import ObjectInfo
from controlplane.cleanup.storage import (
    MAX_BATCH_SIZE,
    DeleteOutcome,
    DeleteResult,
    ObjectPage,
    ObjectRef,
    TransientStorageError,
)

__all__ = ["OLD", "FakeBucket", "Sleeps"]

#: Upload time of objects added without one: old enough for any age rule of the tests.
OLD = datetime(2026, 10, 13, 12, 0, tzinfo=UTC)


@dataclass
class FakeBucket:
    """A bucket in memory with GCS's rules: holds give 403, a stale generation 412, a missing object 404."""

    page_size: int = 10
    objects: dict[str, ObjectInfo] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    # Scripted failures, consumed in order: how many times the next list / delete of a name fails transiently.
    list_failures: int = 0
    list_fail_at_token: str | None = None
    transient_deletes: dict[str, int] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=list)
    tokens_listed: list[str | None] = field(default_factory=list)

    def add(
        self, name: str, *, created: datetime = OLD, size: int = 100, metadata: dict[str, str] | None = None
    ) -> None:
        self.objects[name] = ObjectInfo(name, 1, size, created, created, metadata or {})

    def list_page(self, prefix: str, page_token: str | None) -> ObjectPage:
        if self.list_failures and page_token == self.list_fail_at_token:
            self.list_failures -= 1
            raise TransientStorageError("503 Service Unavailable")
        self.tokens_listed.append(page_token)
        # Like GCS: the token is the last name returned; the next page starts after it.
        names = sorted(n for n in self.objects if n.startswith(prefix) and (page_token is None or n > page_token))
        chunk = names[: self.page_size]
        more = len(names) > self.page_size
        return ObjectPage([self.objects[n] for n in chunk], chunk[-1] if more else None)

    def delete_batch(self, refs: Sequence[ObjectRef]) -> list[DeleteResult]:
        assert len(refs) <= MAX_BATCH_SIZE
        self.batch_sizes.append(len(refs))
        results = []
        for ref in refs:
            current = self.objects.get(ref.name)
            if self.transient_deletes.get(ref.name):
                self.transient_deletes[ref.name] -= 1
                results.append(DeleteResult(ref, DeleteOutcome.TRANSIENT, "503"))
            elif current is None:
                results.append(DeleteResult(ref, DeleteOutcome.NOT_FOUND))
            elif ref.name in self.held:
                message = f"Object '{ref.name}' is under active Event-Based hold"
                results.append(DeleteResult(ref, DeleteOutcome.FORBIDDEN, message))
            elif current.generation != ref.generation:
                results.append(DeleteResult(ref, DeleteOutcome.PRECONDITION_FAILED))
            else:
                del self.objects[ref.name]
                results.append(DeleteResult(ref, DeleteOutcome.DELETED))
        return results


class Sleeps(list[float]):
    """The injected sleep: records the backoff instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
