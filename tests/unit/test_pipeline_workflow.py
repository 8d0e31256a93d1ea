"""The pipeline's steps without HTTP or a bucket: the reference cache (TTL, clears, purged objects), and refusals
that never reach storage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.images import CheckedImage
from pipeline.problems import Forbidden, InvalidInput, PayloadTooLarge, ServiceUnavailable, UnsupportedMediaType
from pipeline.runs import RunStore
from pipeline.settings import PipelineSettings
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
        self.deleted: set[str] = set()  # object names a purge removed
        self.during_resolve: Any = None  # called inside a resolve (something happening meanwhile)

    def resolve(self, asset_id: str) -> StoredReference | None:
        """A fresh URL for the one known id; None for any other."""
        self.resolves.append(asset_id)
        if self.during_resolve is not None:
            self.during_resolve()
        if asset_id != ASSET_ID or f"reference-images/{asset_id}.png" in self.deleted:
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

    def exists(self, object_name: str) -> bool:
        """Whether the object was not purged."""
        return object_name not in self.deleted

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
    cache: ReferenceCache | None = None,
) -> Workflow:
    """A workflow over the counting store, the fake clock for both itself and its cache, and no telemetry."""
    fake_store: Any = store  # the workflow only calls resolve, exists and save
    bucket: ReferenceStore = fake_store
    return Workflow(
        gate=StaticGate(enabled),
        analyzer=analyzer if analyzer is not None else LocalAnalyzer(),
        generator=LocalGenerator(),
        store=bucket,
        runs=RunStore(tmp_path / "runs"),
        telemetry=Telemetry(None, "test"),
        environment="test",
        cache=cache if cache is not None else ReferenceCache(CACHE_TTL, clock),
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


# --- the cache after a rollback and a purge -------------------------------------------------------------------------


def test_a_cached_reference_whose_object_was_purged_is_never_handed_out(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    cache = ReferenceCache(CACHE_TTL, clock)
    flow = workflow(tmp_path, store, clock, cache=cache)
    preflight(flow, [ASSET_ID])
    assert len(cache) == 1

    store.deleted.add(f"reference-images/{ASSET_ID}.png")  # the purge, well within the cache's TTL
    with pytest.raises(InvalidInput) as refused:
        preflight(flow, [ASSET_ID])

    assert refused.value.extra["missing"] == [ASSET_ID]
    assert (len(cache), cache.dropped) == (0, 1)


def test_a_clear_empties_the_cache_and_the_next_preflight_resolves_from_the_bucket(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    cache = ReferenceCache(CACHE_TTL, clock)
    flow = workflow(tmp_path, store, clock, cache=cache)
    preflight(flow, [ASSET_ID])

    assert cache.clear() == 1

    assert (len(cache), cache.cleared) == (0, 1)
    preflight(flow, [ASSET_ID])
    assert store.resolves == [ASSET_ID, ASSET_ID]


def test_a_resolve_under_way_when_the_cache_is_cleared_is_not_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    store = CountingStore(clock)
    cache = ReferenceCache(CACHE_TTL, clock)
    flow = workflow(tmp_path, store, clock, cache=cache)
    # The flag turns off while the bucket is being asked: what it answers predates the rollback.
    store.during_resolve = cache.clear

    preflight(flow, [ASSET_ID])

    assert len(cache) == 0
    store.during_resolve = None
    preflight(flow, [ASSET_ID])
    assert (store.resolves, len(cache)) == ([ASSET_ID, ASSET_ID], 1)


class ChangingGate(StaticGate):
    """A fixed answer whose flag-change callbacks the test fires, as the provider's event would."""

    def __init__(self) -> None:
        super().__init__(True)
        self.callbacks: list[Callable[[], None]] = []

    def on_flag_change(self, callback: Callable[[], None]) -> None:
        """Keep the callback for ``changed``."""
        self.callbacks.append(callback)

    def changed(self) -> None:
        """The flag's configuration changed."""
        for callback in self.callbacks:
            callback()


def test_the_service_clears_its_cache_when_the_flag_changes_and_counts_it_on_metrics(tmp_path: Path) -> None:
    clock = FakeClock()
    gate = ChangingGate()
    store: Any = CountingStore(clock)
    settings = PipelineSettings(runs_dir=tmp_path / "runs", spool_dir=tmp_path / "spool", telemetry_enabled=False)
    app = create_pipeline_app(
        settings, Parts(gate=gate, analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=store)
    )
    with TestClient(app) as client:
        answer = client.post("/run_preflight", json={"user_id": "user-1", "reference_image_ids": [ASSET_ID]})
        assert answer.status_code == 200, answer.text

        def sample(name: str) -> float | None:
            families = text_string_to_metric_families(client.get("/metrics").text)
            return next((s.value for f in families for s in f.samples if s.name == name), None)

        assert (sample("pipeline_reference_cache_entries"), sample("pipeline_reference_cache_clears_total")) == (1, 0)
        gate.changed()
        assert (sample("pipeline_reference_cache_entries"), sample("pipeline_reference_cache_clears_total")) == (0, 1)
