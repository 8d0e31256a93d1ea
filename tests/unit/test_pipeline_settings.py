"""The pipeline's settings: read from the environment, and refused when a production pipeline could not work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import structlog

from pipeline.__main__ import main
from pipeline.settings import PipelineSettings, PipelineSettingsError


@pytest.fixture(autouse=True)
def default_logging() -> Iterator[None]:
    """`main` points structlog at this test's stdout; put the defaults back for the tests that follow."""
    yield
    structlog.reset_defaults()


TOKENS = {"PIPELINE_EVALUATE_TOKEN": "cpt_evaluate", "PIPELINE_INGEST_TOKEN": "cpt_ingest"}


def test_the_playbook_names_are_read() -> None:
    settings = PipelineSettings.from_env(
        {
            "REFERENCE_IMAGES_BUCKET": "refs-prod",
            "IMAGE_SIGNED_URL_TTL": "3600",
            "REFERENCE_CACHE_TTL_SECONDS": "60",
            "CONTROLPLANE_URL": "http://cp:8080",
            "PIPELINE_ENVIRONMENT": "staging",
            "PIPELINE_RUNS_DIR": "/var/lib/pipeline/runs",
            "PIPELINE_FAULTS_ENABLED": "true",
            **TOKENS,
        }
    )
    assert settings.bucket == "refs-prod"
    assert settings.image_signed_url_ttl == timedelta(hours=1)
    assert settings.reference_cache_ttl_seconds == 60
    assert (settings.controlplane_url, settings.environment) == ("http://cp:8080", "staging")
    assert settings.runs_dir == Path("/var/lib/pipeline/runs")
    assert settings.faults_enabled
    settings.check()


def test_defaults_follow_the_playbook() -> None:
    settings = PipelineSettings.from_env({})
    assert settings.image_signed_url_ttl == timedelta(hours=24)
    assert settings.reference_cache_ttl_seconds == 3600
    assert settings.bucket == "reference-images"
    assert not settings.faults_enabled


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"IMAGE_SIGNED_URL_TTL": "604801"}, "7 days"),
        ({"IMAGE_SIGNED_URL_TTL": "a day"}, "not a number"),
        ({"REFERENCE_CACHE_TTL_SECONDS": "0"}, "must be positive"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(PipelineSettingsError, match=message) as refused:
        PipelineSettings.from_env(environ)
    assert next(iter(environ)) in str(refused.value)


@pytest.mark.parametrize(
    ("missing", "variable"),
    [("PIPELINE_EVALUATE_TOKEN", "PIPELINE_EVALUATE_TOKEN"), ("PIPELINE_INGEST_TOKEN", "PIPELINE_INGEST_TOKEN")],
)
def test_serving_without_a_control_plane_token_is_refused(
    missing: str, variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in TOKENS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(missing)
    with pytest.raises(SystemExit) as stopped:
        main()
    assert variable in str(stopped.value)
