"""The GCS adapter's reading of batch sub-responses, for the answers the emulator never gives (403, 412, 5xx)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests

from controlplane.cleanup.storage import DeleteOutcome, GcsStorage, ObjectRef


def answer(status: int, message: str = "") -> requests.Response:
    """A sub-response as the client's batch parses it: a ``requests.Response`` with a JSON error body."""
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"error": {"code": status, "message": message}}).encode() if message else b""
    return response


class FakeBatch:
    def __init__(self, responses: list[requests.Response]) -> None:
        self._responses = responses


class FakeBlob:
    def __init__(self, client: FakeClient, name: str) -> None:
        self.client, self.name = client, name

    def delete(self, if_generation_match: int | None = None) -> None:
        self.client.deleted.append((self.name, if_generation_match))


class FakeBucket:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self.client, name)


class FakeClient:
    """Just enough of ``storage.Client`` for ``delete_batch``: a bucket, blobs, and a batch with scripted answers."""

    def __init__(self, answers: list[requests.Response], *, fail: Exception | None = None) -> None:
        self.answers, self.fail = answers, fail
        self.deleted: list[tuple[str, int | None]] = []

    def bucket(self, name: str) -> FakeBucket:
        return FakeBucket(self)

    @contextmanager
    def batch(self, raise_exception: bool = True) -> Iterator[FakeBatch]:
        assert raise_exception is False  # per-object outcomes, never the first error for the whole batch
        yield FakeBatch(self.answers)
        if self.fail is not None:
            raise self.fail


def test_each_sub_response_is_read_on_its_own_with_the_server_reason() -> None:
    client = FakeClient(
        [
            answer(204),
            answer(404, "No such object: refs/gone.png"),
            answer(403, "Object 'refs/held.png' is under active Event-Based hold and cannot be deleted"),
            answer(412, "At least one of the pre-conditions you specified did not hold."),
            answer(503, "Backend Error"),
            answer(400, "Invalid argument"),
        ]
    )
    refs = [ObjectRef(f"refs/{name}.png", 7) for name in ("old", "gone", "held", "changed", "busy", "odd")]

    results = GcsStorage(client, "reference-images").delete_batch(refs)

    assert [result.outcome for result in results] == [
        DeleteOutcome.DELETED,
        DeleteOutcome.NOT_FOUND,
        DeleteOutcome.FORBIDDEN,
        DeleteOutcome.PRECONDITION_FAILED,
        DeleteOutcome.TRANSIENT,
        DeleteOutcome.FAILED,
    ]
    assert "Event-Based hold" in results[2].detail
    assert client.deleted == [(ref.name, 7) for ref in refs]  # every delete carries the listed generation


def test_a_whole_batch_lost_to_a_transient_error_is_transient_for_every_object() -> None:
    client = FakeClient([], fail=requests.ConnectionError("connection reset"))
    refs = [ObjectRef("refs/a.png", 1), ObjectRef("refs/b.png", 2)]

    results = GcsStorage(client, "reference-images").delete_batch(refs)

    assert [result.outcome for result in results] == [DeleteOutcome.TRANSIENT] * 2


def test_more_than_a_hundred_deletes_are_refused_before_any_request() -> None:
    client = FakeClient([])
    with pytest.raises(ValueError, match="at most 100"):
        GcsStorage(client, "reference-images").delete_batch([ObjectRef(f"o{i}", 1) for i in range(101)])
    assert client.deleted == []


def test_a_batch_that_answers_fewer_sub_responses_than_requests_is_an_error_not_a_guess() -> None:
    client = FakeClient([answer(204)])
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        GcsStorage(client, "reference-images").delete_batch([ObjectRef("a", 1), ObjectRef("b", 1)])
