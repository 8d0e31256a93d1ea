"""The bucket as cleanup sees it: list one page, delete a batch with generation preconditions.

``Storage`` is the seam; ``GcsStorage`` is the thin adapter over ``google.cloud.storage.Client``. Tests inject a
fake for what no emulator enforces (holds, retention, preconditions on delete).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import requests

from controlplane.cleanup.selection import ObjectInfo

with warnings.catch_warnings():
    # google-api-core warns at import when grpcio-status is missing; the storage client speaks HTTP, never gRPC.
    warnings.simplefilter("ignore", ImportWarning)
    from google.api_core import exceptions as gexc

__all__ = [
    "MAX_BATCH_SIZE",
    "DeleteOutcome",
    "DeleteResult",
    "GcsStorage",
    "ObjectPage",
    "ObjectRef",
    "Storage",
    "TransientStorageError",
    "outcome_of_status",
]

# The GCS JSON API accepts at most 100 calls per batch request.
MAX_BATCH_SIZE = 100

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class TransientStorageError(Exception):
    """A storage call failed in a way worth retrying (5xx, 429, timeouts, dropped connections)."""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object generation to delete."""

    name: str
    generation: int


@dataclass(frozen=True, slots=True)
class ObjectPage:
    """One page of a listing and the token of the next page (``None`` on the last page)."""

    objects: list[ObjectInfo]
    next_page_token: str | None


class DeleteOutcome(StrEnum):
    """What happened to one delete."""

    DELETED = "deleted"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    PRECONDITION_FAILED = "precondition_failed"
    TRANSIENT = "transient"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """The outcome of deleting one object; ``detail`` carries the server's message (the hold, the retention)."""

    ref: ObjectRef
    outcome: DeleteOutcome
    detail: str = field(default="")


class Storage(Protocol):
    """A bucket, as the cleanup run needs it."""

    def list_page(self, prefix: str, page_token: str | None) -> ObjectPage:
        """One page of objects under ``prefix``, from ``page_token`` (``None``: the first page).

        Raises ``TransientStorageError`` when worth retrying.
        """
        ...

    def delete_batch(self, refs: Sequence[ObjectRef]) -> list[DeleteResult]:
        """Delete at most ``MAX_BATCH_SIZE`` objects, each only if still at its listed generation; one result each."""
        ...


def outcome_of_status(status: int) -> DeleteOutcome:
    """The delete outcome an HTTP status stands for."""
    if 200 <= status < 300:
        return DeleteOutcome.DELETED
    if status == 404:
        return DeleteOutcome.NOT_FOUND
    if status == 403:
        return DeleteOutcome.FORBIDDEN
    if status == 412:
        return DeleteOutcome.PRECONDITION_FAILED
    if status in TRANSIENT_STATUSES:
        return DeleteOutcome.TRANSIENT
    return DeleteOutcome.FAILED


def _is_transient(error: Exception) -> bool:
    if isinstance(error, gexc.GoogleAPICallError):
        return error.code in TRANSIENT_STATUSES
    return isinstance(error, requests.ConnectionError | requests.Timeout | ConnectionError | TimeoutError)


def _aware(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def _error_message(response: Any) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return str(getattr(response, "text", "") or "")[:500]


class GcsStorage:
    """``Storage`` over one bucket of a ``google.cloud.storage.Client``."""

    def __init__(self, client: Any, bucket: str, page_size: int = 1000) -> None:
        self._client = client
        self._bucket = client.bucket(bucket)
        self._page_size = page_size

    def list_page(self, prefix: str, page_token: str | None) -> ObjectPage:
        """One page of ``list_blobs`` (``page_size``, not ``max_results``, which would end the listing)."""
        try:
            iterator = self._client.list_blobs(
                self._bucket, prefix=prefix, page_token=page_token, page_size=self._page_size
            )
            page = next(iterator.pages, None)
            blobs = list(page) if page is not None else []
        except Exception as error:
            if _is_transient(error):
                raise TransientStorageError(str(error)) from error
            raise
        objects = [
            ObjectInfo(
                name=blob.name,
                generation=int(blob.generation),
                size=int(blob.size or 0),
                time_created=_aware(blob.time_created),
                updated=_aware(blob.updated),
                metadata=dict(blob.metadata or {}),
            )
            for blob in blobs
        ]
        return ObjectPage(objects=objects, next_page_token=iterator.next_page_token)

    def delete_batch(self, refs: Sequence[ObjectRef]) -> list[DeleteResult]:
        """One batch request; each sub-response's status is mapped on its own."""
        if len(refs) > MAX_BATCH_SIZE:
            raise ValueError(f"at most {MAX_BATCH_SIZE} deletes per batch, got {len(refs)}")
        if not refs:
            return []
        try:
            with self._client.batch(raise_exception=False) as batch:
                for ref in refs:
                    self._bucket.blob(ref.name).delete(if_generation_match=ref.generation)
        except Exception as error:
            if _is_transient(error):
                return [DeleteResult(ref, DeleteOutcome.TRANSIENT, str(error)) for ref in refs]
            raise
        # The client keeps the sub-responses only on this attribute (google-cloud-storage batch.py, finish()).
        responses = list(batch._responses)
        if len(responses) != len(refs):
            raise RuntimeError(f"batch answered {len(responses)} of {len(refs)} deletes")
        results = []
        for ref, response in zip(refs, responses, strict=True):
            outcome = outcome_of_status(response.status_code)
            detail = "" if outcome is DeleteOutcome.DELETED else _error_message(response)
            results.append(DeleteResult(ref, outcome, detail))
        return results
