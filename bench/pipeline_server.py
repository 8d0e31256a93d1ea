"""The pipeline service as `bench.pipeline_upload` runs it: a process of its own, its bucket in memory.

The bucket is a dict (plus a real V4 signature per upload, made offline), so the benchmark measures the service,
its flag check and its emitter, not gcp-storage-emulator, which rewrites its whole store on every write.

    python -m bench.pipeline_server --port P --mode with|without [--controlplane-url U --evaluate-token T
        --ingest-token T] --work-dir DIR
"""

from __future__ import annotations

import argparse
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from google.cloud import storage

from controlplane_client.emitter import Emitter
from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import OpenFeatureGate, StaticGate
from pipeline.generator import LocalGenerator
from pipeline.images import CheckedImage
from pipeline.logs import configure_logging
from pipeline.settings import OBJECT_PREFIX, PIPELINE, PipelineSettings
from pipeline.storage import StoredReference, development_signing_credentials
from pipeline.vision import LocalAnalyzer

TTL = timedelta(hours=24)


class MemoryBucket:
    """Reference images in a dict, with URLs signed as the real store signs them."""

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self._credentials = development_signing_credentials()
        self._bucket = storage.Client.create_anonymous_client().bucket("bench-reference-images")

    def save(self, data: bytes, checked: CheckedImage, **kwargs: Any) -> StoredReference:
        """Keep the bytes and sign a URL."""
        asset_id = uuid.uuid4().hex
        name = f"{OBJECT_PREFIX}{asset_id}"
        expires = datetime.now(UTC) + TTL
        url = self._bucket.blob(name).generate_signed_url(
            version="v4", expiration=TTL, method="GET", credentials=self._credentials
        )
        with self._lock:
            self._objects[name] = (data, {"signed_url_expires_at": expires.isoformat()})
        return StoredReference(
            asset_id=asset_id,
            object_name=name,
            content_type=checked.content_type.value,
            role=str(kwargs.get("role", "")),
            uploader=str(kwargs.get("uploader", "")),
            sha256=checked.sha256,
            size=checked.size,
            signed_url=url,
            signed_url_expires_at=expires,
        )


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["with", "without"], required=True)
    parser.add_argument("--controlplane-url", default="")
    parser.add_argument("--evaluate-token", default="")
    parser.add_argument("--ingest-token", default="")
    parser.add_argument("--work-dir", type=Path, required=True)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    # JSON lines to a file, as in production (a terminal renderer would cost more than the service).
    configure_logging(stream=(args.work_dir / "pipeline.log").open("w"))
    with_both = args.mode == "with"
    settings = PipelineSettings(
        runs_dir=args.work_dir / "runs",
        spool_dir=args.work_dir / "spool",
        telemetry_enabled=with_both,
        flags_enabled=with_both,
        port=args.port,
    )
    gate = (
        OpenFeatureGate(args.controlplane_url, args.evaluate_token, environment="production")
        if with_both
        else StaticGate(True)
    )
    emitter = (
        Emitter(args.controlplane_url, args.ingest_token, pipeline=PIPELINE, spool_dir=args.work_dir / "events")
        if with_both
        else None
    )
    parts = Parts(
        gate=gate, analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=MemoryBucket(), emitter=emitter
    )
    uvicorn.run(create_pipeline_app(settings, parts), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
