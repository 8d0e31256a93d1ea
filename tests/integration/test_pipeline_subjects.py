"""The pipeline reports who its events are about: the user id it evaluates the flag for (the targeting key) goes to
the emitter as the subject of the upload request, its Vision analysis and upload outcome, the preflight and the
generation, and only its digest is sent. The app runs in process; Vision fails, so no bucket is needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from litestar.testing import TestClient

from controlplane_client.emitter import subject_digest
from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.settings import PipelineSettings
from tests.pipeline_fixtures import EventSink, FailingAnalyzer, noisy, recording_emitter

USER = "user-4711"


def test_events_about_a_user_carry_the_hash_of_its_id_and_never_the_id(tmp_path: Path) -> None:
    sink = EventSink()
    emitter = recording_emitter(tmp_path / "spool", sink)
    settings = PipelineSettings(
        environment="qa", runs_dir=tmp_path / "runs", spool_dir=tmp_path / "spool", flags_enabled=False
    )
    parts = Parts(
        gate=StaticGate(True), analyzer=FailingAnalyzer(), generator=LocalGenerator(), store=None, emitter=emitter
    )
    with TestClient(create_pipeline_app(settings, parts)) as client:
        upload = client.post(
            "/upload/reference-image",
            files={"file": ("reference.jpg", noisy("JPEG"), "image/jpeg")},
            data={"role": "character", "user_id": USER},
        )
        run = client.post("/run_preflight", json={"user_id": USER, "prompt": "a cat", "reference_image_ids": []})
        generated = client.post(f"/runs/{run.json()['run_id']}/generate_assets")
        missing = client.post("/upload/reference-image", data={"role": "character", "user_id": USER})
        assert emitter.flush(timeout=5.0)

    assert (upload.status_code, run.status_code, generated.status_code, missing.status_code) == (503, 200, 200, 400)
    digest = subject_digest(USER)
    events: list[dict[str, Any]] = sink.events
    about = {(event["type"], event.get("labels", {}).get("route", "")): event.get("subject") for event in events}
    assert about == {
        ("http_request", "upload_reference_image"): None,  # the last one, refused before it read the user
        ("vision_analysis", ""): digest,
        ("reference_image_upload", ""): digest,
        ("http_request", "run_preflight"): digest,
        ("preflight_reference_images", ""): digest,
        ("http_request", "generate_assets"): digest,
        ("image_assets_generation", ""): digest,
    }
    uploads = [event for event in events if event.get("labels", {}).get("route") == "upload_reference_image"]
    assert [(event["labels"]["status_class"], event.get("subject")) for event in uploads] == [
        ("5xx", digest),
        ("4xx", None),
    ]
    assert USER not in json.dumps(events)
