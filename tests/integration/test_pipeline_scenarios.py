"""The QA canary scenarios and the load generator against a served pipeline on gcp-storage-emulator.

The pipeline runs under uvicorn (``serve_in_thread``) with a fixed flag answer (``StaticGate``), the local Vision
heuristic and generator, the real storage client on the emulator, no emitter, and fault injection on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.db import create_db_engine
from controlplane.embedded import serve_in_thread
from controlplane.migrate import upgrade_to_head
from pipeline import scenarios
from pipeline.app import Parts, create_pipeline_app
from pipeline.flag import StaticGate
from pipeline.generator import LocalGenerator
from pipeline.loadgen import AiAssistantConfig, LoadConfig, Mix, run_load, set_faults
from pipeline.settings import PipelineSettings
from pipeline.storage import ReferenceStore, development_signing_credentials, new_client
from pipeline.vision import LocalAnalyzer
from tests.conftest import serve_with_admin
from tests.gcs_emulator import emulator, fresh_bucket, storage_client

PROJECT = "reference-images-test"
BUCKET = "reference-images"
REPO_ROOT = Path(__file__).resolve().parents[2]

Serve = Callable[[bool], AbstractContextManager[str]]


@pytest.fixture(scope="module")
def emulator_host() -> Iterator[str]:
    """gcp-storage-emulator on a free loopback port, in memory, for this module."""
    yield from emulator()


@pytest.fixture
def serve(emulator_host: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Serve:
    """Serve a pipeline whose flag is on (or off) for everyone; yields its URL."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator_host)
    fresh_bucket(storage_client(PROJECT), BUCKET)

    @contextmanager
    def served(flag_on: bool) -> Iterator[str]:
        settings = PipelineSettings(
            bucket=BUCKET,
            runs_dir=tmp_path / "runs",
            spool_dir=tmp_path / "spool",
            gcs_project=PROJECT,
            flags_enabled=False,
            telemetry_enabled=False,
            faults_enabled=True,
        )
        store = ReferenceStore(
            new_client(PROJECT),
            BUCKET,
            ttl=timedelta(hours=1),
            credentials=development_signing_credentials(),
        )
        parts = Parts(
            gate=StaticGate(flag_on), analyzer=LocalAnalyzer(), generator=LocalGenerator(), store=store, emitter=None
        )
        with serve_in_thread(create_pipeline_app(settings, parts)) as url:
            yield url

    return served


def run_scenarios_json(url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, dict[str, Any]]:
    code = scenarios.main(["--pipeline-url", url, "--user-id", "qa-user", "--json", *extra])
    out = capsys.readouterr().out
    # The served pipeline logs to the same stdout (before the report, which is written once every run is read).
    return code, json.loads(out[out.index('{\n  "passed"') :])


def test_the_four_scenarios_pass_with_the_flag_on(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(True) as url:
        code, report = run_scenarios_json(url, capsys)
    assert code == 0, report
    assert [item["name"] for item in report["scenarios"]] == [scenario.name for scenario in scenarios.SCENARIOS]
    assert all(item["passed"] and item["run_id"] for item in report["scenarios"])
    assert [len(item["references"]) for item in report["scenarios"]] == [0, 1, 1, 2]


def test_the_table_says_pass_for_each_scenario(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(True) as url:
        code = scenarios.main(["--pipeline-url", url])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("PASS") == 4 and "FAIL" not in out


def test_with_the_flag_off_the_scenarios_fail_unless_flag_off_is_expected(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(False) as url:
        off_code, off_report = run_scenarios_json(url, capsys, "--expect-flag", "off")
        on_code, on_report = run_scenarios_json(url, capsys)
    assert off_code == 0, off_report
    assert all(item["passed"] for item in off_report["scenarios"])
    assert on_code == 1
    problems = {item["name"]: item["problems"] for item in on_report["scenarios"]}
    assert "--expect-flag off" in problems["b-character"][0]
    assert any("expected on" in problem for problem in problems["a-no-reference"])


def test_expecting_the_flag_off_fails_when_it_is_on(serve: Serve, capsys: pytest.CaptureFixture[str]) -> None:
    with serve(True) as url:
        code, report = run_scenarios_json(url, capsys, "--expect-flag", "off")
    assert code == 1
    assert "expected 403" in report["scenarios"][1]["problems"][0]


def test_load_with_every_vision_call_failing_counts_the_503s(serve: Serve) -> None:
    with serve(True) as url:
        config = LoadConfig(
            pipeline_url=url,
            rate=20,
            duration=1.5,
            users=4,
            seed=3,
            mix=Mix(upload=1, preflight=1, generate=1),
            workers=8,
            faults={"vision_error_rate": 1.0, "upload_failure_rate": 0.0, "vision_latency_seconds": 0.0},
        )
        stats = run_load(config)
        faults = httpx.get(f"{url}/faults").json()
        cleared = set_faults(url)
    assert stats.sent == 30 and stats.completed == 30 and stats.dropped == 0 and stats.errors == 0
    uploads = stats.by_status["upload_reference_image"]
    assert uploads == {"503": stats.by_route["upload_reference_image"]} and uploads["503"] > 0
    assert stats.status_count(503) == uploads["503"]
    # No upload succeeded, so every preflight went without references and every generation passed.
    assert set(stats.by_status.get("run_preflight", {})) <= {"200"}
    assert set(stats.by_status.get("generate_assets", {})) <= {"200"}
    assert faults["vision_error_rate"] == 1.0
    assert cleared == {"vision_error_rate": 0.0, "upload_failure_rate": 0.0, "vision_latency_seconds": 0.0}


def test_load_without_faults_stores_uploads_and_uses_them(serve: Serve) -> None:
    with serve(True) as url:
        stats = run_load(LoadConfig(pipeline_url=url, rate=20, duration=1.0, users=2, seed=11, workers=8))
    assert stats.errors == 0 and stats.dropped == 0
    assert stats.by_status["upload_reference_image"] == {"201": stats.by_route["upload_reference_image"]}
    assert stats.status_count(503) == 0


def test_the_simulated_assistant_reaches_a_served_control_plane(tmp_path: Path) -> None:
    # The pipeline side is mocked: this is about the assistant's events, sent by a real Emitter and ingested.
    url = f"sqlite:///{tmp_path}/controlplane.db"
    upgrade_to_head(create_db_engine(url))
    with serve_with_admin(url) as (base, headers):
        definition = (REPO_ROOT / "definitions" / "ai-assistant.yaml").read_text(encoding="utf-8")
        applied = httpx.post(
            f"{base}/api/v1/definitions/apply", headers=headers, json={"content": definition, "source": "ai.yaml"}
        )
        assert applied.status_code == 200, applied.text
        created = httpx.post(f"{base}/api/v1/tokens", headers=headers, json={"name": "loadgen", "role": "ingest"})
        assert created.status_code == 201, created.text
        ai = AiAssistantConfig(
            controlplane_url=base,
            ingest_token=created.json()["token"],
            rate=40,
            spool_dir=tmp_path / "spool",
            fallback_rate=0.5,
        )
        config = LoadConfig(pipeline_url="http://pipeline", rate=1, duration=1, ai_assistant=ai)
        stats = run_load(config, transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})))
        scraped = httpx.get(f"{base}/metrics").text
    samples = [
        sample
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "ai_run_events_total" and sample.labels.get("pipeline") == "ai-assistant"
    ]
    assert stats.ai_runs == 40
    assert sum(sample.value for sample in samples) == 40
    by_outcome: dict[str, float] = {}
    for sample in samples:
        by_outcome[sample.labels["outcome"]] = by_outcome.get(sample.labels["outcome"], 0) + sample.value
    assert by_outcome == {outcome: float(count) for outcome, count in stats.ai_by_outcome.items()}
