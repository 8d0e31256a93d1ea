"""The pipeline service over HTTP, with the real google-cloud-storage client on gcp-storage-emulator (in-process).

The flag is a ``StaticGate`` in most tests and the real ``OpenFeatureGate`` over a served control plane in the
flag tests at the end. Events go through a real ``Emitter`` to a fake control plane (httpx.MockTransport); logs
are captured as JSON lines. The emulator checks neither signatures nor expiry of signed URLs (reference/gcs.md), so
the URL's expiry is checked by reading it, not by waiting for a refusal.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from openfeature import api
from prometheus_client.parser import text_string_to_metric_families

from controlplane_client.emitter import Emitter
from controlplane_client.provider import ControlPlaneProvider
from controlplane_client.provider.bucketing import in_rollout
from pipeline.app import Parts, create_pipeline_app
from pipeline.audit import audit_window
from pipeline.flag import FlagGate, OpenFeatureGate, StaticGate
from pipeline.generator import AssetGenerator, GenerationRequest, GenerationResult, LocalGenerator
from pipeline.images import MAX_UPLOAD_BYTES, RejectionReason
from pipeline.settings import FLAG_KEY, OBJECT_PREFIX, PipelineSettings
from pipeline.storage import EXPIRY_METADATA_KEY, ReferenceStore, development_signing_credentials
from pipeline.vision import LocalAnalyzer, VisionAnalyzer
from tests.conftest import FakeClock, problem, serve_with_admin, without_gates
from tests.gcs_emulator import emulated_bucket, emulator
from tests.pipeline_fixtures import (
    EventSink,
    FailingAnalyzer,
    FixedAnalyzer,
    LogCapture,
    gif,
    noisy,
    padded_png,
    recording_emitter,
    truncated_jpeg,
)
from tests.unit.test_pipeline_images import blank_bilevel_png

BUCKET = "reference-images"
TTL = timedelta(seconds=90)
ENVIRONMENT = "staging"
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- the service under test -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator_host() -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port, in memory, for this module."""
    yield from emulator()


@pytest.fixture(scope="module")
def signing_credentials() -> Any:
    """One throwaway signing key for the module (making an RSA key takes a while)."""
    return development_signing_credentials()


@pytest.fixture
def gcs(emulator_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real storage client on the emulator, with an empty bucket."""
    yield from emulated_bucket(emulator_host, monkeypatch, BUCKET)


@dataclass
class Service:
    """One running pipeline app and what it is built on."""

    client: TestClient[Litestar]
    bucket: Any
    sink: EventSink
    emitter: Emitter
    runs_dir: Path

    def upload(
        self,
        data: bytes,
        *,
        user: str = "user-1",
        role: str = "character",
        filename: str = "reference.png",
        content_type: str = "image/png",
    ) -> httpx.Response:
        """POST one reference image."""
        return self.client.post(
            "/upload/reference-image",
            files={"file": (filename, data, content_type)},
            data={"role": role, "user_id": user},
        )

    def uploaded(self, data: bytes, *, role: str = "character", user: str = "user-1") -> str:
        """Upload an image that must be accepted; its asset id."""
        response = self.upload(data, role=role, user=user)
        assert response.status_code == 201, response.text
        asset_id: str = response.json()["asset_id"]
        return asset_id

    def preflight(self, ids: list[str], *, user: str = "user-1", prompt: str = "a cat on a sofa") -> httpx.Response:
        """POST /run_preflight."""
        return self.client.post("/run_preflight", json={"user_id": user, "prompt": prompt, "reference_image_ids": ids})

    def events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """The events the service emitted so far (the emitter flushed first), all or one type."""
        assert self.emitter.flush(timeout=5.0)
        return [event for event in self.sink.events if event_type is None or event["type"] == event_type]

    def objects(self) -> list[Any]:
        """Every object in the bucket."""
        return list(self.bucket.list_blobs())

    def meta(self, run_id: str) -> tuple[dict[str, Any], str]:
        """A run's meta.json, parsed and raw."""
        raw = (self.runs_dir / run_id / "meta.json").read_text(encoding="utf-8")
        parsed: dict[str, Any] = json.loads(raw)
        return parsed, raw


MakeService = Callable[..., Service]


@pytest.fixture
def make_service(gcs: Any, signing_credentials: Any, tmp_path: Path) -> Iterator[MakeService]:
    """Build and start pipeline apps; every one is stopped (emitter and gate closed) after the test."""
    stack = ExitStack()
    built = 0

    def make(
        *,
        gate: FlagGate | None = None,
        analyzer: VisionAnalyzer | None = None,
        store: ReferenceStore | None = None,
        generator: AssetGenerator | None = None,
        bucket: str = BUCKET,
        **changes: Any,
    ) -> Service:
        nonlocal built
        built += 1
        root = tmp_path / f"service-{built}"
        settings = PipelineSettings(
            **{
                "bucket": bucket,
                "image_signed_url_ttl": TTL,
                "environment": ENVIRONMENT,
                "runs_dir": root / "runs",
                "spool_dir": root / "spool",
                "flags_enabled": False,
                **changes,
            }
        )
        sink = EventSink()
        emitter = recording_emitter(root / "spool" / "events", sink)
        parts = Parts(
            gate=gate if gate is not None else StaticGate(True),
            analyzer=analyzer if analyzer is not None else LocalAnalyzer(),
            generator=generator if generator is not None else LocalGenerator(),
            store=store if store is not None else ReferenceStore(gcs, bucket, ttl=TTL, credentials=signing_credentials),
            emitter=emitter,
        )
        client = stack.enter_context(TestClient(create_pipeline_app(settings, parts)))
        return Service(client=client, bucket=gcs.bucket(BUCKET), sink=sink, emitter=emitter, runs_dir=root / "runs")

    with stack:
        yield make


@pytest.fixture
def service(make_service: MakeService) -> Service:
    """The service with the flag on for everyone."""
    return make_service()


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """The pipeline's JSON logs of this test."""
    with LogCapture() as capture:
        yield capture


def upload_events(service: Service) -> list[tuple[str, str, str, str, str]]:
    """(outcome, content_type, rejection_reason, variant, environment) of each upload event."""
    return [
        (e["outcome"], e["labels"]["content_type"], e["labels"]["rejection_reason"], e["variant"], e["environment"])
        for e in service.events("reference_image_upload")
    ]


def goog_params(url: str) -> dict[str, str]:
    """The query parameters of a signed URL, one value each."""
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def signing_time(params: dict[str, str]) -> datetime:
    """X-Goog-Date (basic ISO 8601, UTC) as a datetime."""
    return datetime.strptime(params["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


# --- upload refusals ------------------------------------------------------------------------------------------------


def test_flag_off_refuses_the_upload_with_403_stores_nothing_and_emits_a_flag_off_rejection(
    make_service: MakeService,
) -> None:
    service = make_service(gate=StaticGate(False))

    response = service.upload(noisy("PNG"), user="user-7")

    body = problem(response, 403, "reference-images-disabled")
    assert body["flag"] == FLAG_KEY
    assert body["variant"] == "off"
    assert "user-7" in body["detail"] and "nothing was stored" in body["detail"]
    assert service.objects() == []
    assert upload_events(service) == [("rejected", "image/png", "flag_off", "off", ENVIRONMENT)]
    # Refused before Vision: no analysis was asked for.
    assert service.events("vision_analysis") == []
    http = service.events("http_request")
    assert [(e["labels"], e["variant"]) for e in http] == [
        ({"route": "upload_reference_image", "status_class": "4xx"}, "off")
    ]


def test_exactly_5_mib_is_accepted(service: Service) -> None:
    data = padded_png(5 * 1024 * 1024)

    response = service.upload(data)

    assert response.status_code == 201, response.text
    assert response.json()["size"] == 5 * 1024 * 1024 == MAX_UPLOAD_BYTES
    [stored] = service.objects()
    assert stored.size == MAX_UPLOAD_BYTES
    assert upload_events(service) == [("success", "image/png", "none", "on", ENVIRONMENT)]
    assert service.events("reference_image_upload")[0]["value"] == float(MAX_UPLOAD_BYTES)


def test_one_byte_over_5_mib_is_refused_with_413_and_nothing_is_stored(service: Service) -> None:
    response = service.upload(padded_png(5 * 1024 * 1024 + 1))

    body = problem(response, 413, "image-too-large")
    assert body["reason"] == "too_large"
    assert str(MAX_UPLOAD_BYTES) in body["detail"]
    assert service.objects() == []
    assert upload_events(service) == [("rejected", "image/png", "too_large", "on", ENVIRONMENT)]


def test_an_upload_far_over_5_mib_is_reported_as_a_too_large_rejection(service: Service) -> None:
    response = service.upload(padded_png(6 * 1024 * 1024))

    assert response.status_code == 413
    assert service.objects() == []
    # Refused before the body is read (over 5 MiB + 64 KiB of multipart): neither its type nor its user is known,
    # so the rejection is counted as `other` in the `off` cohort.
    assert upload_events(service) == [("rejected", "other", "too_large", "off", ENVIRONMENT)]


@pytest.mark.parametrize(
    ("data", "status", "slug", "content_type", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"garbage, not chunks" * 20, 422, "image-corrupt", "image/png", "corrupt"),
        (truncated_jpeg(), 422, "image-corrupt", "image/jpeg", "corrupt"),
        (gif(), 415, "image-unsupported-type", "other", "unsupported_type"),
        (b"", 422, "image-empty", "other", "empty"),
        (blank_bilevel_png(7_000, 6_000), 422, "image-too-many-pixels", "image/png", "too_many_pixels"),
    ],
    ids=["png-header-on-garbage", "truncated-jpeg", "gif", "empty", "pixel-bomb"],
)
def test_corrupt_and_unsupported_images_are_refused_and_nothing_is_stored(
    service: Service, data: bytes, status: int, slug: str, content_type: str, reason: str
) -> None:
    response = service.upload(data)

    assert problem(response, status, slug)["reason"] == reason
    assert service.objects() == []
    assert upload_events(service) == [("rejected", content_type, reason, "on", ENVIRONMENT)]
    assert service.events("vision_analysis") == []


def test_a_vision_error_answers_503_stores_nothing_and_is_reported(make_service: MakeService, logs: LogCapture) -> None:
    service = make_service(analyzer=FailingAnalyzer())

    response = service.upload(noisy("JPEG"), user="user-3")

    body = problem(response, 503, "vision-unavailable")
    assert "nothing was stored" in body["detail"]
    assert service.objects() == []
    [vision] = service.events("vision_analysis")
    assert (vision["outcome"], vision["variant"], vision["environment"]) == ("error", "on", ENVIRONMENT)
    assert upload_events(service) == [("failed", "image/jpeg", "other", "on", ENVIRONMENT)]
    [logged] = logs.lines("vision_analysis_error")
    assert logged["level"] == "error"
    assert (logged["user"], logged["content_type"]) == ("user-3", "image/jpeg")
    assert "backend unavailable" in logged["error"]
    assert logs.lines("reference_image_upload_failed")


def test_an_unsafe_image_is_refused_with_422_image_rejected(make_service: MakeService) -> None:
    analyzer = FixedAnalyzer(accepted=False, reason=RejectionReason.UNSAFE, notes=("adult is VERY_LIKELY",))
    service = make_service(analyzer=analyzer)

    response = service.upload(noisy("PNG"))

    body = problem(response, 422, "image-rejected")
    assert body["reason"] == "unsafe"
    assert "adult is VERY_LIKELY" in body["detail"]
    assert analyzer.calls == 1
    assert service.objects() == []
    assert [e["outcome"] for e in service.events("vision_analysis")] == ["ok"]
    assert upload_events(service) == [("rejected", "image/png", "unsafe", "on", ENVIRONMENT)]


def test_a_storage_failure_answers_503_and_reports_a_failed_upload(
    make_service: MakeService, gcs: Any, signing_credentials: Any, logs: LogCapture
) -> None:
    # A bucket that does not exist: the real client's upload fails with 404 from the emulator.
    missing = ReferenceStore(gcs, "no-such-bucket", ttl=TTL, credentials=signing_credentials)
    service = make_service(store=missing)

    response = service.upload(noisy("PNG"))

    body = problem(response, 503, "storage-unavailable")
    assert "retry later" in body["detail"]
    assert upload_events(service) == [("failed", "image/png", "other", "on", ENVIRONMENT)]
    assert [e["outcome"] for e in service.events("vision_analysis")] == ["ok"]
    [failed] = logs.lines("reference_image_upload_failed")
    assert "NotFound" in failed["error"]
    assert [e["labels"]["status_class"] for e in service.events("http_request")] == ["5xx"]


def test_the_app_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    settings = PipelineSettings(runs_dir=tmp_path / "runs", spool_dir=tmp_path / "spool", flags_enabled=False)
    parts = Parts(gate=StaticGate(True), analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_pipeline_app(settings, parts)
    assert [str(warning.message) for warning in caught] == []


# --- accepted uploads: the object, its metadata and the signed URL ------------------------------------------------


def test_a_polyglot_is_stored_as_the_image_it_is_without_what_follows(service: Service) -> None:
    # A valid PNG with a ZIP archive appended after IEND: the archive was never checked, so it is not kept.
    image = noisy("PNG", seed=7)
    archive = b"PK\x03\x04" + b"hidden payload" * 50 + b"PK\x05\x06" + b"\x00" * 18

    response = service.upload(image + archive)

    assert response.status_code == 201, response.text
    [stored] = service.objects()
    assert stored.download_as_bytes() == image
    assert stored.metadata["sha256"] == hashlib.sha256(image).hexdigest()
    served = httpx.get(response.json()["signed_url"], timeout=10)
    assert served.status_code == 200 and served.content == image


def test_a_jpeg_named_png_is_stored_as_image_jpeg(service: Service) -> None:
    data = noisy("JPEG")

    response = service.upload(data, filename="x.png", content_type="image/png")

    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == "image/jpeg"
    [stored] = service.objects()
    assert stored.name == f"{OBJECT_PREFIX}{response.json()['asset_id']}.jpg"
    assert stored.content_type == "image/jpeg"
    assert stored.metadata["content_type"] == "image/jpeg"
    assert upload_events(service) == [("success", "image/jpeg", "none", "on", ENVIRONMENT)]


def test_the_stored_object_carries_its_metadata_and_a_v4_url_valid_for_the_ttl(service: Service) -> None:
    data = noisy("PNG", seed=5)
    before = datetime.now(UTC)

    response = service.upload(data, user="user-42", role="product")

    after = datetime.now(UTC)
    assert response.status_code == 201, response.text
    answer = response.json()
    [stored] = service.objects()
    metadata = stored.metadata
    assert metadata["uploader"] == "user-42"
    assert metadata["sha256"] == hashlib.sha256(data).hexdigest() == answer["sha256"]
    assert (metadata["content_type"], metadata["role"]) == ("image/png", "product")
    recorded = datetime.fromisoformat(metadata[EXPIRY_METADATA_KEY])
    assert before + TTL <= recorded <= after + TTL
    assert datetime.fromisoformat(answer["signed_url_expires_at"]) == recorded

    url = answer["signed_url"]
    params = goog_params(url)
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Expires"] == str(int(TTL.total_seconds())) == "90"
    assert "X-Goog-Signature" in params
    signed_at = signing_time(params)
    assert before.replace(microsecond=0) <= signed_at <= after
    # "Expires when the TTL says": the URL's own expiry is the recorded one (the two clocks read within a second).
    expires = signed_at + timedelta(seconds=int(params["X-Goog-Expires"]))
    assert abs(expires - recorded) <= timedelta(seconds=1)
    assert urlsplit(url).path == f"/{BUCKET}/{stored.name}"
    # The emulator serves the URL without checking its signature or expiry: this proves the path, not the signature.
    downloaded = httpx.get(url)
    assert downloaded.status_code == 200
    assert downloaded.content == data


# --- preflight ----------------------------------------------------------------------------------------------------


def test_preflight_with_the_flag_on_resolves_the_references_with_fresh_signed_urls(service: Service) -> None:
    character = noisy("PNG", seed=11)
    asset_id = service.uploaded(character, role="character")

    response = service.preflight([asset_id])

    assert response.status_code == 200, response.text
    state = response.json()
    assert state["reference_images_present"] is True
    [reference] = state["reference_images"]
    assert (reference["asset_id"], reference["role"]) == (asset_id, "character")
    assert reference["sha256"] == hashlib.sha256(character).hexdigest()
    assert goog_params(reference["signed_url"])["X-Goog-Expires"] == "90"
    assert httpx.get(reference["signed_url"]).content == character
    assert state["signed_url_expires_at"] == reference["signed_url_expires_at"]
    [preflight] = service.events("preflight_reference_images")
    assert (preflight["outcome"], preflight["variant"], preflight["environment"]) == ("resolved", "on", ENVIRONMENT)


def test_preflight_with_the_flag_off_ignores_the_references(make_service: MakeService) -> None:
    on = make_service()
    asset_id = on.uploaded(noisy("PNG"))
    off = make_service(gate=StaticGate(False))

    response = off.preflight([asset_id])

    assert response.status_code == 200, response.text
    state = response.json()
    assert (state["reference_images_present"], state["reference_images"]) == (False, [])
    assert state["requested_reference_image_ids"] == [asset_id]
    assert state["signed_url_expires_at"] is None
    assert [(e["outcome"], e["variant"]) for e in off.events("preflight_reference_images")] == [("ignored", "off")]


def test_preflight_refuses_unknown_reference_ids_with_422(service: Service) -> None:
    known = service.uploaded(noisy("PNG"))
    unknown = "0" * 32

    response = service.preflight([known, unknown, "not-an-id"])

    body = problem(response, 422, "unknown-reference-images")
    assert body["missing"] == [unknown, "not-an-id"]
    assert service.events("preflight_reference_images") == []
    assert not service.runs_dir.exists() or not any(service.runs_dir.iterdir())


def test_resolving_again_moves_the_recorded_expiry_later_never_earlier(
    make_service: MakeService, gcs: Any, signing_credentials: Any
) -> None:
    clock = FakeClock(datetime.now(UTC))
    store = ReferenceStore(gcs, BUCKET, ttl=TTL, credentials=signing_credentials, clock=clock)
    # No reference cache: every preflight resolves through the bucket.
    service = make_service(store=store, reference_cache_ttl_seconds=0.0)
    asset_id = service.uploaded(noisy("PNG"))
    uploaded_at = clock()

    def recorded() -> datetime:
        [stored] = service.objects()
        return datetime.fromisoformat(stored.metadata[EXPIRY_METADATA_KEY])

    assert recorded() == uploaded_at + TTL

    clock.advance(timedelta(seconds=30))
    later = service.preflight([asset_id])
    assert later.status_code == 200, later.text
    assert recorded() == uploaded_at + timedelta(seconds=30) + TTL
    assert later.json()["reference_images"][0]["signed_url_expires_at"] == recorded().isoformat()

    # A resolve whose URL expires sooner (this replica's clock is behind) must not pull the record back.
    clock.advance(timedelta(seconds=-20))
    sooner = service.preflight([asset_id])
    assert sooner.status_code == 200, sooner.text
    assert recorded() == uploaded_at + timedelta(seconds=30) + TTL
    assert (
        sooner.json()["reference_images"][0]["signed_url_expires_at"]
        == (uploaded_at + timedelta(seconds=10) + TTL).isoformat()
    )


# --- runs: meta.json and the final assets ------------------------------------------------------------------------

SCENARIOS = {
    "no-reference": [],
    "character": ["character"],
    "product": ["product"],
    "both": ["character", "product"],
}


@pytest.mark.parametrize("roles", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_a_run_leaves_meta_json_and_final_assets_for_each_qa_scenario(
    service: Service, roles: list[str], logs: LogCapture
) -> None:
    ids = [service.uploaded(noisy("PNG", seed=20 + n), role=role) for n, role in enumerate(roles)]
    preflight = service.preflight(ids)
    assert preflight.status_code == 200, preflight.text
    run_id = preflight.json()["run_id"]

    generated = service.client.post(f"/runs/{run_id}/generate_assets")

    assert generated.status_code == 200, generated.text
    meta, raw = service.meta(run_id)
    assert service.client.get(f"/runs/{run_id}").json() == meta
    assert "signed_url" not in _keys(meta)
    assert "X-Goog-Signature" not in raw
    expected_assets = [{"asset_id": asset_id, "role": role} for asset_id, role in zip(ids, roles, strict=True)]
    assert meta["reference_images_present"] is bool(roles)
    assert [{"asset_id": r["asset_id"], "role": r["role"]} for r in meta["reference_images"]] == expected_assets
    if roles:
        assert meta["signed_url_expires_at"] == min(r["signed_url_expires_at"] for r in meta["reference_images"])
    else:
        assert meta["signed_url_expires_at"] is None

    assets = meta["image_assets"]
    assert assets["status"] == "pass"
    assert assets["references_used"] == ids
    assert assets["critical_errors"] == []
    assert set(assets["safe_search_notes"]) == set(ids)
    for notes in assets["safe_search_notes"].values():
        assert "adult=" in notes["safe_search"]
    assert [(v["index"], v["status"]) for v in assets["variations"]] == [(0, "pass"), (1, "pass"), (2, "pass")]
    assert all(v["reference_assets"] == expected_assets for v in assets["variations"])
    assert [entry["event"] for entry in meta["delivery_audit_trail"]] == [
        "run_started",
        "preflight_reference_images_resolved",
        "image_assets_generation_start",
        "image_assets_generation_complete",
    ]

    final = service.runs_dir / run_id / "artifacts" / "ads_final"
    for index in range(3):
        document = json.loads((final / f"variation_{index}.json").read_text(encoding="utf-8"))
        assert document["variation"] == index
        assert document["visual"]["reference_assets"] == expected_assets
        assert (final / f"variation_{index}.png").read_bytes().startswith(b"\x89PNG")
    [event] = service.events("image_assets_generation")
    assert (event["outcome"], event["labels"], event["variant"]) == (
        "pass",
        {"reference_images_present": "true" if roles else "false"},
        "on",
    )
    [complete] = logs.lines("image_assets_generation_complete")
    assert (complete["references_used"], complete["critical_errors"]) == (ids, [])
    assert "X-Goog-Signature" not in logs.text
    http = [(e["labels"]["route"], e["labels"]["status_class"], e["variant"]) for e in service.events("http_request")]
    assert http[: len(roles) + 1] == [
        *[("upload_reference_image", "2xx", "on")] * len(roles),
        ("run_preflight", "2xx", "on"),
    ]


def test_with_the_flag_off_a_run_ignores_its_references_and_generates_the_legacy_3_variations(
    make_service: MakeService,
) -> None:
    asset_id = make_service().uploaded(noisy("PNG"))
    off = make_service(gate=StaticGate(False))
    run_id = off.preflight([asset_id]).json()["run_id"]

    generated = off.client.post(f"/runs/{run_id}/generate_assets")

    assert generated.status_code == 200, generated.text
    meta, _ = off.meta(run_id)
    assert (meta["reference_images_present"], meta["reference_images"], meta["signed_url_expires_at"]) == (
        False,
        [],
        None,
    )
    assert [entry["event"] for entry in meta["delivery_audit_trail"]] == [
        "run_started",
        "preflight_reference_images_ignored",
        "image_assets_generation_start",
        "image_assets_generation_complete",
    ]
    assert meta["delivery_audit_trail"][1]["ignored"] == [asset_id]
    assert [v["reference_assets"] for v in meta["image_assets"]["variations"]] == [[], [], []]
    final = off.runs_dir / run_id / "artifacts" / "ads_final"
    for index in range(3):
        document = json.loads((final / f"variation_{index}.json").read_text(encoding="utf-8"))
        assert document["visual"]["reference_assets"] == []
    assert [(e["outcome"], e["variant"]) for e in off.events("image_assets_generation")] == [("pass", "off")]


def test_a_run_is_generated_once_and_unknown_runs_are_404(service: Service) -> None:
    run_id = service.preflight([]).json()["run_id"]
    assert service.client.post(f"/runs/{run_id}/generate_assets").status_code == 200

    problem(service.client.post(f"/runs/{run_id}/generate_assets"), 400, "run-already-generated")
    problem(service.client.post(f"/runs/{'f' * 32}/generate_assets"), 404, "run-not-found")
    problem(service.client.get("/runs/not-a-run-id"), 404, "run-not-found")
    assert len(service.events("image_assets_generation")) == 1


class HeldGenerator:
    """The local generator, held at its start until the test releases it: a generation still running."""

    def __init__(self) -> None:
        self.entered, self.released = threading.Event(), threading.Event()
        self.calls = 0

    def generate(self, request: GenerationRequest) -> GenerationResult:
        self.calls += 1
        self.entered.set()
        assert self.released.wait(30), "the test never released the generation"
        return LocalGenerator().generate(request)


def test_concurrent_generations_of_one_run_give_one_200_and_409s_while_it_runs(make_service: MakeService) -> None:
    held = HeldGenerator()
    service = make_service(generator=held)
    run_id = service.preflight([]).json()["run_id"]
    first: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: first.append(service.client.post(f"/runs/{run_id}/generate_assets")))
    worker.start()
    try:
        assert held.entered.wait(30)
        for _ in range(3):
            problem(service.client.post(f"/runs/{run_id}/generate_assets"), 409, "run-generating")
    finally:
        held.released.set()
        worker.join(30)

    assert first[0].status_code == 200, first[0].text
    problem(service.client.post(f"/runs/{run_id}/generate_assets"), 400, "run-already-generated")
    assert held.calls == 1
    assert len(service.events("image_assets_generation")) == 1
    meta, _ = service.meta(run_id)
    assert [entry["event"] for entry in meta["delivery_audit_trail"]].count("image_assets_generation_complete") == 1


def test_generate_assets_requests_are_reported(service: Service) -> None:
    run_id = service.preflight([]).json()["run_id"]
    assert service.client.post(f"/runs/{run_id}/generate_assets").status_code == 200
    problem(service.client.post(f"/runs/{'f' * 32}/generate_assets"), 404, "run-not-found")

    http = [(e["labels"]["route"], e["labels"]["status_class"]) for e in service.events("http_request")]

    assert http == [("run_preflight", "2xx"), ("generate_assets", "2xx"), ("generate_assets", "4xx")]


def _keys(value: Any) -> set[str]:
    """Every dictionary key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


# --- logs ---------------------------------------------------------------------------------------------------------


def test_the_json_logs_carry_the_playbook_event_names_and_never_a_signature(
    make_service: MakeService, logs: LogCapture
) -> None:
    service = make_service()
    data = noisy("JPEG", seed=3)
    asset_id = service.uploaded(data, user="user-9")
    assert service.upload(gif(), user="user-9").status_code == 415
    run_id = service.preflight([asset_id], user="user-9").json()["run_id"]
    assert service.client.post(f"/runs/{run_id}/generate_assets").status_code == 200
    make_service(gate=StaticGate(False)).preflight([asset_id], user="user-10")
    make_service(analyzer=FailingAnalyzer()).upload(noisy("PNG"), user="user-11")

    assert logs.names() == [
        "reference_image_upload_start",
        "reference_image_upload_success",
        "reference_image_upload_start",
        "reference_image_upload_rejected",
        "preflight_reference_images_resolved",
        "image_assets_generation_start",
        "image_assets_generation_complete",
        "preflight_reference_images_ignored",
        "reference_image_upload_start",
        "vision_analysis_error",
        "reference_image_upload_failed",
    ]
    for line in logs.lines():
        if line["event"].startswith("reference_image_upload_"):
            assert {"user", "size", "content_type"} <= set(line), line
    success = logs.lines("reference_image_upload_success")[0]
    assert (success["user"], success["size"], success["content_type"]) == ("user-9", len(data), "image/jpeg")
    rejected = logs.lines("reference_image_upload_rejected")[0]
    assert (rejected["content_type"], rejected["reason"]) == ("other", "unsupported_type")
    assert logs.lines("preflight_reference_images_resolved")[0]["reference_images"] == [asset_id]
    assert logs.lines("preflight_reference_images_ignored")[0]["ignored"] == [asset_id]
    assert logs.lines("image_assets_generation_start")[0]["references_used"] == [asset_id]
    complete = logs.lines("image_assets_generation_complete")[0]
    assert (complete["references_used"], complete["critical_errors"]) == ([asset_id], [])
    assert "X-Goog-Signature" not in logs.text
    assert "X-Goog-Signature" not in service.meta(run_id)[1]


# --- faults -------------------------------------------------------------------------------------------------------


def test_faults_cannot_be_set_unless_enabled(service: Service) -> None:
    problem(service.client.put("/faults", json={"vision_error_rate": 1.0}), 404, "faults-disabled")
    problem(service.client.get("/faults"), 404, "faults-disabled")
    assert service.upload(noisy("PNG")).status_code == 201


def test_with_faults_enabled_a_vision_error_rate_of_1_fails_every_upload(make_service: MakeService) -> None:
    service = make_service(faults_enabled=True)
    assert service.client.get("/faults").json()["vision_error_rate"] == 0.0

    set_faults = service.client.put("/faults", json={"vision_error_rate": 1.0})

    assert set_faults.status_code == 200, set_faults.text
    assert set_faults.json()["vision_error_rate"] == 1.0
    for seed in range(3):
        problem(service.upload(noisy("PNG", seed=seed)), 503, "vision-unavailable")
    assert service.objects() == []
    assert [e["outcome"] for e in service.events("vision_analysis")] == ["error"] * 3


# --- the real flag: OpenFeatureGate over a served control plane -------------------------------------------------

# First users inside and outside production's first stage (10%), as the control plane buckets them.
INSIDE = next(f"user-{n}" for n in range(1000) if in_rollout(FLAG_KEY, f"user-{n}", 10))
OUTSIDE = next(f"user-{n}" for n in range(1000) if not in_rollout(FLAG_KEY, f"user-{n}", 10))


@dataclass
class ControlPlane:
    """A served control plane with the reference-images definition applied."""

    url: str
    headers: dict[str, str]

    def operate(self, environment: str, operation: str, **body: Any) -> None:
        """Apply a rollout operation against the revision shown now; it must succeed."""
        rollout = f"{self.url}/api/v1/flags/{FLAG_KEY}/environments/{environment}/rollout"
        shown = httpx.get(rollout, headers=self.headers)
        assert shown.status_code == 200, shown.text
        answer = httpx.post(
            f"{rollout}/{operation}",
            headers=self.headers,
            json={"expected_revision": shown.json()["revision"], "reason": "test", **body},
        )
        assert answer.status_code == 200, answer.text

    def token(self, role: str, environment: str) -> str:
        """A new API token."""
        body = {"name": f"{role}-{time.time_ns()}", "role": role, "environment": environment}
        answer = httpx.post(f"{self.url}/api/v1/tokens", headers=self.headers, json=body)
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["token"]
        return token


@pytest.fixture
def production_at_10_percent(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlane]:
    """A control plane on each backend, served; qa and staging completed, production at its first stage (10%)."""
    # An incident override in this process's environment would decide for the provider.
    monkeypatch.delenv("ENABLE_REFERENCE_IMAGES", raising=False)
    with serve_with_admin(database_url) as (url, headers):
        plane = ControlPlane(url, headers)
        definition = without_gates((REPO_ROOT / "definitions" / "reference-images.yaml").read_text())
        applied = httpx.post(
            f"{url}/api/v1/definitions/apply",
            headers=headers,
            json={"content": definition, "source": "reference-images.yaml"},
        )
        assert applied.status_code == 200, applied.text
        for environment in ("qa", "staging"):
            plane.operate(environment, "start")
            plane.operate(environment, "advance")
        plane.operate("production", "start")
        yield plane
    api.clear_providers()


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    """Poll ``condition`` for at most ``seconds`` (a bounded wait for another thread, not a measurement)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        time.sleep(0.02)


def test_the_real_flag_decides_per_user_and_follows_a_rollback(
    production_at_10_percent: ControlPlane, make_service: MakeService
) -> None:
    plane = production_at_10_percent
    gate = OpenFeatureGate(plane.url, plane.token("evaluate", "production"), environment="production")
    wait_for(lambda: gate.decide(OUTSIDE).reason != "ERROR", "the provider has its first snapshot")
    service = make_service(gate=gate, environment="production")

    inside = service.upload(noisy("PNG"), user=INSIDE)
    outside = service.upload(noisy("PNG"), user=OUTSIDE)

    assert inside.status_code == 201, inside.text
    assert inside.json()["variant"] == "on"
    assert problem(outside, 403, "reference-images-disabled")["variant"] == "off"
    assert len(service.objects()) == 1
    assert upload_events(service) == [
        ("success", "image/png", "none", "on", "production"),
        ("rejected", "image/png", "flag_off", "off", "production"),
    ]

    plane.operate("production", "rollback")
    wait_for(lambda: not gate.decide(INSIDE).enabled, "the provider saw the rollback")

    problem(service.upload(noisy("PNG"), user=INSIDE), 403, "reference-images-disabled")
    assert len(service.objects()) == 1


def test_the_gate_is_ready_when_it_is_built(
    production_at_10_percent: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = production_at_10_percent
    released = threading.Event()
    initialize = ControlPlaneProvider.initialize

    def slow_initialize(self: ControlPlaneProvider, *args: Any, **kwargs: Any) -> None:
        # A control plane that takes a moment to answer the first snapshot.
        released.wait(timeout=1.0)
        initialize(self, *args, **kwargs)

    monkeypatch.setattr(ControlPlaneProvider, "initialize", slow_initialize)
    gate = OpenFeatureGate(plane.url, plane.token("evaluate", "production"), environment="production")
    try:
        first = gate.decide(INSIDE)
        released.set()
        wait_for(lambda: gate.decide(OUTSIDE).reason != "ERROR", "the provider has its first snapshot")
    finally:
        gate.close()
    # A user inside the 10% must not be refused just because the pipeline started a moment ago.
    assert (first.enabled, first.variant) == (True, "on"), first


def cache_clears(service: Service) -> float:
    """How many times the service cleared its reference cache (its /metrics)."""
    families = text_string_to_metric_families(service.client.get("/metrics").text)
    return next(s.value for f in families for s in f.samples if s.name == "pipeline_reference_cache_clears_total")


def test_upload_rollback_with_a_purge_and_re_enable_never_hand_out_a_purged_reference_and_the_audit_flags_its_run(
    production_at_10_percent: ControlPlane, make_service: MakeService
) -> None:
    plane = production_at_10_percent
    gate = OpenFeatureGate(plane.url, plane.token("evaluate", "production"), environment="production")
    wait_for(lambda: gate.decide(OUTSIDE).reason != "ERROR", "the provider has its first snapshot")
    service = make_service(gate=gate, environment="production")
    since = datetime.now(UTC) - timedelta(seconds=1)
    asset = service.uploaded(noisy("PNG"), user=INSIDE)
    used = service.preflight([asset], user=INSIDE)
    assert used.status_code == 200, used.text  # resolved, and now cached
    assert cache_clears(service) == 0

    rollout = f"{plane.url}/api/v1/flags/{FLAG_KEY}/environments/production/rollout"
    body = {"reason": "uploads broken", "purge_uploads_since": since.isoformat()}
    answer = httpx.post(f"{rollout}/rollback", headers=plane.headers, json=body)

    assert answer.status_code == 200, answer.text
    [run_id] = answer.json()["purge_runs"]
    wait_for(lambda: not gate.decide(INSIDE).enabled, "the provider saw the rollback")
    wait_for(lambda: cache_clears(service) >= 1, "the cache was cleared on the provider's event")

    def purged() -> bool:
        run = httpx.get(f"{plane.url}/api/v1/cleanup/runs/{run_id}", headers=plane.headers).json()
        assert run["status"] != "failed", run
        return bool(run["status"] == "succeeded")

    wait_for(purged, "the purge ran", seconds=30)
    assert service.objects() == []

    plane.operate("production", "start")  # re-enabled: the user is in the 10% again
    wait_for(lambda: gate.decide(INSIDE).enabled, "the provider saw the new start")

    refused = service.preflight([asset], user=INSIDE)
    assert problem(refused, 422, "unknown-reference-images")["missing"] == [asset]
    # `pipeline audit` of the window lists exactly the run that used the purged reference, and flags it.
    now = datetime.now(UTC)
    [run] = audit_window(
        service.runs_dir, since, now, still_stored=lambda name: bool(service.bucket.blob(name).exists()), now=now
    )
    assert (run.run_id, run.user_id, run.variant, run.references) == (used.json()["run_id"], INSIDE, "on", [asset])
    assert (run.purged_references, run.flagged) == ([asset], [f"used purged reference {asset}"])
