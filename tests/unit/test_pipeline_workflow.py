"""The pipeline's steps without HTTP or a bucket: the reference cache's TTL, and refusals that never reach storage."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.images import CheckedImage
from pipeline.problems import Forbidden, InvalidInput, PayloadTooLarge, ServiceUnavailable, UnsupportedMediaType
from pipeline.runs import RunStore
from pipeline.storage import ReferenceStore, StoredReference
from pipeline.telemetry import Telemetry
from pipeline.vision import LocalAnalyzer, VisionAnalyzer
from pipeline.workflow import ReferenceCache, Workflow
from tests.conftest import FakeClock
from tests.pipeline_fixtures import FailingAnalyzer, gif, noisy, padded_png, truncated_jpeg

ASSET_ID = "a" * 32
CACHE_TTL = timedelta(minutes=5)
URL_TTL = timedelta(hours=24)


class CountingStore:
    """A bucket holding one reference: counts resolves; refuses saves (a refusal must not get that far)."""

    def __init__(self, clock: FakeClock, url_ttl: timedelta = URL_TTL) -> None:
        self._clock = clock
        self._url_ttl = url_ttl
        self.resolves: list[str] = []
        self.saves = 0

    def resolve(self, asset_id: str) -> StoredReference | None:
        """A fresh URL for the one known id; None for any other."""
        self.resolves.append(asset_id)
        if asset_id != ASSET_ID:
            return None
        return StoredReference(
            asset_id=asset_id,
            object_name=f"reference-images/{asset_id}.png",
            content_type="image/png",
            role="character",
            uploader="user-1",
            sha256="0" * 64,
            size=10,
            signed_url=f"https://storage.test/b/{asset_id}?X-Goog-Date={self._clock().isoformat()}",
            signed_url_expires_at=self._clock() + self._url_ttl,
        )

    def save(self, data: bytes, checked: CheckedImage, **kwargs: Any) -> StoredReference:
        """Count the attempt and fail the test's expectations loudly."""
        self.saves += 1
        raise AssertionError("a refused upload reached the bucket")


def workflow(
    tmp_path: Path,
    store: CountingStore,
    clock: FakeClock,
    *,
    enabled: bool = True,
    analyzer: VisionAnalyzer | None = None,
) -> Workflow:
    """A workflow over the counting store, the fake clock for both itself and its cache, and no telemetry."""
    fake_store: Any = store  # the workflow only calls resolve and save
    bucket: ReferenceStore = fake_store
    return Workflow(
        gate=StaticGate(enabled),
        analyzer=analyzer if analyzer is not None else LocalAnalyzer(),
        generator=LocalGenerator(),
        store=bucket,
        runs=RunStore(tmp_path / "runs"),
        telemetry=Telemetry(None, "test"),
        environment="test",
        cache=ReferenceCache(CACHE_TTL, clock),
        clock=clock,
    )


def preflight(flow: Workflow, ids: list[str]) -> dict[str, Any]:
    return flow.preflight(user_id="user-1", prompt="p", reference_image_ids=ids, decision=flow.gate.decide("user-1"))


def test_a_second_resolve_within_the_cache_ttl_does_not_touch_the_bucket_and_one_after_it_does(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    flow = workflow(tmp_path, store, clock)

    first = preflight(flow, [ASSET_ID])
    clock.advance(CACHE_TTL - timedelta(seconds=1))
    second = preflight(flow, [ASSET_ID])

    assert store.resolves == [ASSET_ID]
    assert second["reference_images"] == first["reference_images"]

    clock.advance(timedelta(seconds=1))  # the TTL is up exactly now
    third = preflight(flow, [ASSET_ID])

    assert store.resolves == [ASSET_ID, ASSET_ID]
    assert third["reference_images"][0]["signed_url_expires_at"] == (clock() + URL_TTL).isoformat()


def test_the_cache_never_hands_out_a_url_past_its_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock, url_ttl=timedelta(minutes=2))  # shorter than the cache's TTL
    flow = workflow(tmp_path, store, clock)

    preflight(flow, [ASSET_ID])
    clock.advance(timedelta(minutes=1, seconds=59))
    preflight(flow, [ASSET_ID])
    assert len(store.resolves) == 1
    clock.advance(timedelta(seconds=1))
    refreshed = preflight(flow, [ASSET_ID])

    assert len(store.resolves) == 2
    assert refreshed["signed_url_expires_at"] == (clock() + timedelta(minutes=2)).isoformat()


def test_unknown_ids_are_not_cached_and_refuse_the_preflight(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    flow = workflow(tmp_path, store, clock)
    unknown = "b" * 32

    for _ in range(2):
        with pytest.raises(InvalidInput) as refused:
            preflight(flow, [ASSET_ID, unknown])
        assert refused.value.extra["missing"] == [unknown]

    assert store.resolves == [ASSET_ID, unknown, unknown]
    assert not (tmp_path / "runs").exists()


def test_with_the_flag_off_preflight_never_resolves(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    flow = workflow(tmp_path, store, clock, enabled=False)

    state = preflight(flow, [ASSET_ID])

    assert store.resolves == []
    assert (state["reference_images"], state["flag"]["variant"]) == ([], "off")
    assert [entry["event"] for entry in state["delivery_audit_trail"]] == [
        "run_started",
        "preflight_reference_images_ignored",
    ]


@pytest.mark.parametrize(
    ("enabled", "data", "refusal", "slug"),
    [
        (False, noisy("PNG"), Forbidden, "reference-images-disabled"),
        (True, padded_png(5 * 1024 * 1024 + 1), PayloadTooLarge, "image-too-large"),
        (True, gif(), UnsupportedMediaType, "image-unsupported-type"),
        (True, truncated_jpeg(), InvalidInput, "image-corrupt"),
    ],
    ids=["flag-off", "too-large", "gif", "truncated-jpeg"],
)
def test_a_refused_upload_never_reaches_the_bucket(
    tmp_path: Path, enabled: bool, data: bytes, refusal: type[Exception], slug: str
) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    flow = workflow(tmp_path, store, clock, enabled=enabled)

    with pytest.raises(refusal) as refused:
        flow.upload(data=data, role="character", user_id="user-1", decision=flow.gate.decide("user-1"))

    assert getattr(refused.value, "slug", None) == slug
    assert store.saves == 0


def test_a_vision_failure_never_reaches_the_bucket(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    flow = workflow(tmp_path, store, clock, analyzer=FailingAnalyzer())

    with pytest.raises(ServiceUnavailable):
        flow.upload(data=noisy("PNG"), role="product", user_id="user-1", decision=flow.gate.decide("user-1"))

    assert store.saves == 0
