"""Nothing the pipeline reports is lost when the control plane crashes mid-load: every event the pipeline emitted
is counted once by the control plane after it comes back.

The control plane runs as its own process (`controlplane serve`, SQLite) and is killed with SIGKILL during a load
run, then started again on the same port and database. The pipeline keeps serving meanwhile: flags from its
provider's last snapshot, events spooled by the emitter and replayed, with their batch ids, once the control plane
answers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from controlplane.db import create_db_engine, session_scope
from controlplane.embedded import serve_in_thread
from controlplane.telemetry.models import TelemetryWindow
from controlplane_client.emitter import Emitter, EmitterSettings
from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import OpenFeatureGate
from pipeline.generator import LocalGenerator
from pipeline.loadgen import LoadConfig, LoadStats, run_load
from pipeline.local_control_plane import ControlPlaneProcess, complete_rollout
from pipeline.settings import PIPELINE, PipelineSettings
from pipeline.storage import ReferenceStore, development_signing_credentials, new_client
from pipeline.vision import LocalAnalyzer
from tests.conftest import missing_service
from tests.gcs_emulator import fresh_bucket, running_emulator, storage_client

BUCKET = "reference-images"


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    try:
        with running_emulator() as host:
            monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
            fresh_bucket(storage_client("reference-images-dev"), BUCKET)
            yield host
    except ImportError as error:
        missing_service(f"gcp-storage-emulator ({error})")


def roll_out_everywhere(plane: ControlPlaneProcess) -> None:
    """The flag through qa and staging and production to 100% (forced), so every user uploads."""
    headers = {"Authorization": f"Bearer {plane.tokens['admin']}"}
    with httpx.Client(base_url=plane.url, headers=headers, timeout=10) as client:
        for environment in ("qa", "staging", "production"):
            complete_rollout(client, environment, "test")


def counted(plane: ControlPlaneProcess) -> int:
    """Events of the pipeline the control plane has stored (its windows' counts)."""
    engine = create_db_engine(plane.database_url)
    try:
        with session_scope(sessionmaker(engine)) as session:
            total = session.scalar(
                select(func.coalesce(func.sum(TelemetryWindow.count), 0)).where(TelemetryWindow.pipeline == PIPELINE)
            )
    finally:
        engine.dispose()
    return int(total or 0)


@pytest.mark.usefixtures("emulator")
def test_events_emitted_during_a_control_plane_crash_are_all_counted_once_after_it_returns(tmp_path: Path) -> None:
    folder = tmp_path / "controlplane"
    folder.mkdir()
    plane = ControlPlaneProcess(folder)
    plane.start()
    try:
        roll_out_everywhere(plane)
        emitter = Emitter(
            plane.url,
            plane.tokens["ingest"],
            pipeline=PIPELINE,
            spool_dir=tmp_path / "spool",
            # Quick to give up on a dead control plane and to try again: the outage lasts seconds here.
            settings=EmitterSettings(flush_interval=0.2, max_attempts=2, backoff_base=0.1, backoff_cap=0.5),
        )
        settings = PipelineSettings(runs_dir=tmp_path / "runs", spool_dir=tmp_path / "spool", environment="production")
        gate = OpenFeatureGate(plane.url, plane.tokens["evaluate"], environment="production")
        store = ReferenceStore(
            new_client("reference-images-dev"),
            BUCKET,
            ttl=settings.image_signed_url_ttl,
            credentials=development_signing_credentials(),
        )
        parts = Parts(gate=gate, analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=store, emitter=emitter)
        stop = threading.Event()
        result: list[LoadStats] = []
        with serve_in_thread(create_pipeline_app(settings, parts)) as pipeline_url:
            config = LoadConfig(pipeline_url=pipeline_url, rate=30, duration=8, users=20, seed=3)
            load = threading.Thread(target=lambda: result.append(run_load(config, stop=stop)), name="load")
            load.start()
            time.sleep(2)  # real traffic for a while: this test is about a real outage in real time
            plane.stop(kill=True)
            time.sleep(2)
            plane.start()
            load.join(timeout=60)
            assert not load.is_alive()
        # The app's shutdown closed the emitter: everything queued was sent (the control plane is back).
        stats = emitter.stats()
        assert result and result[0].sent > 100
        assert stats.spooled > 0 or stats.transient_failures > 0, "the outage did not touch the emitter"
        assert (stats.dropped, stats.rejected) == (0, 0)
        stored = counted(plane)
        print(
            f"requests {result[0].sent}, events emitted {stats.queued}, spooled {stats.spooled}, replayed "
            f"{stats.replayed}, transient failures {stats.transient_failures}, counted by the control plane {stored}"
        )
        assert stats.queued > 0
        assert stored == stats.queued
    finally:
        plane.stop()
