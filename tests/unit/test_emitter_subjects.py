"""Subjects in the emitter: the raw key a caller passes (a user id) is hashed in the process, HMAC-SHA256 under the
deployment's key or plain SHA-256, 32 hex characters; only the digest is sent or spooled, and it is what ingest
accepts."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.telemetry.schemas import SUBJECT_PATTERN
from controlplane_client.emitter import Emitter, EmitterSettings, subject_digest
from tests.unit.test_emitter import FakeClock, FakeControlPlane, RecordedSleep, event, wait_until

USER = "user-4711@example.com"
PLAIN = hashlib.sha256(USER.encode()).hexdigest()[:32]


@pytest.fixture
def plane() -> FakeControlPlane:
    return FakeControlPlane()


@pytest.fixture
def make_emitter(plane: FakeControlPlane, tmp_path: Path) -> Iterator[Callable[..., Emitter]]:
    """Emitters on the fake control plane (batches of 1 unless told), closed at the end of the test."""
    made: list[Emitter] = []

    def make(**settings: Any) -> Emitter:
        defaults: dict[str, Any] = {"max_batch_events": 1, "flush_interval": 3600.0, "spool_fsync": False}
        emitter = Emitter(
            "http://control-plane.test",
            "ingest-token",
            pipeline="reference-images",
            spool_dir=tmp_path / "spool",
            settings=EmitterSettings(**{**defaults, **settings}),
            transport=httpx.MockTransport(plane),
            clock=FakeClock(),
            sleep=RecordedSleep(),
        )
        made.append(emitter)
        return emitter

    yield make
    for emitter in made:
        emitter.close(timeout=5)


def sent_bodies(plane: FakeControlPlane) -> bytes:
    bodies = []
    for request in plane.requests:
        body = request.content
        bodies.append(gzip.decompress(body) if request.headers.get("content-encoding") == "gzip" else body)
    return b"\n".join(bodies)


def test_a_subject_is_sent_as_the_sha256_of_the_raw_key_and_the_raw_key_never_is(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    emitter = make_emitter(max_batch_events=3, subject_key=None)

    emitter.emit(event(1), subject=USER)
    emitter.emit({"type": "vision_analysis", "time": "2026-11-23T12:00:00Z", "environment": "production",
                  "variant": "on", "outcome": "ok", "value": 2.0}, subject=USER)  # fmt: skip
    emitter.emit(event(3))  # no subject: none is sent

    assert wait_until(lambda: emitter.stats().batches_sent == 1)
    assert [sent.get("subject") for sent in plane.events] == [PLAIN, PLAIN, None]
    assert USER.encode() not in sent_bodies(plane)
    assert re.fullmatch(SUBJECT_PATTERN, PLAIN)
    assert emitter.subject(USER) == PLAIN == subject_digest(USER)


def test_with_a_deployment_key_the_subject_is_an_hmac(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter]
) -> None:
    emitter = make_emitter(max_batch_events=1, subject_key="deployment-secret")

    emitter.emit(event(1), subject=USER)

    assert wait_until(lambda: emitter.stats().batches_sent == 1)
    expected = hmac.new(b"deployment-secret", USER.encode(), hashlib.sha256).hexdigest()[:32]
    assert plane.events[0]["subject"] == expected != PLAIN
    assert b"deployment-secret" not in sent_bodies(plane)


def test_the_deployment_key_is_read_from_the_environment_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTROLPLANE_SUBJECT_KEY", "from-the-environment")
    assert EmitterSettings().subject_key == "from-the-environment"
    assert "from-the-environment" not in repr(EmitterSettings())
    monkeypatch.setenv("CONTROLPLANE_SUBJECT_KEY", "")
    assert EmitterSettings().subject_key is None


def test_a_spooled_event_holds_the_digest_not_the_raw_key(
    plane: FakeControlPlane, make_emitter: Callable[..., Emitter], tmp_path: Path
) -> None:
    plane.down = True
    emitter = make_emitter(max_attempts=1, subject_key=None)

    emitter.emit(event(1), subject=USER)
    assert wait_until(lambda: emitter.stats().spooled >= 1)
    emitter.close(timeout=5)

    spooled = b"".join(path.read_bytes() for path in (tmp_path / "spool").rglob("*") if path.is_file())
    assert PLAIN.encode() in spooled
    assert USER.encode() not in spooled
