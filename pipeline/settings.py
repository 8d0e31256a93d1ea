"""The pipeline service's settings, read once from the environment (names as the playbook gives them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

__all__ = ["PipelineSettings", "PipelineSettingsError"]

#: The flag that gates reference images, and the pipeline its events belong to (definitions/reference-images.yaml).
FLAG_KEY = "enable-reference-images"
PIPELINE = "reference-images"
#: Where uploads live in the bucket: the prefix the cleanup policy `expired-reference-images` sweeps.
OBJECT_PREFIX = "reference-images/"
#: V4 signed URLs may live at most seven days (Cloud Storage's cap).
MAX_SIGNED_URL_TTL = timedelta(days=7)


class PipelineSettingsError(ValueError):
    """A setting that cannot be used; the message names the variable."""


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """Everything the service reads from its environment."""

    bucket: str = "reference-images"
    image_signed_url_ttl: timedelta = timedelta(hours=24)
    reference_cache_ttl_seconds: float = 3600.0
    controlplane_url: str = "http://127.0.0.1:8080"
    evaluate_token: str = ""
    ingest_token: str = ""
    browser_evaluate_token: str = ""
    browser_controlplane_url: str = ""
    environment: str = "production"
    runs_dir: Path = Path("runs")
    spool_dir: Path = Path("spool")
    gcs_project: str = "reference-images-dev"
    signing_key_file: Path | None = None
    flags_enabled: bool = True
    telemetry_enabled: bool = True
    faults_enabled: bool = False
    faults_seed: int = 7
    host: str = "127.0.0.1"
    port: int = 8090

    def check(self) -> None:
        """Refuse to serve without what a production pipeline needs (a silent default would lose events)."""
        if self.flags_enabled and not self.evaluate_token:
            raise PipelineSettingsError(
                "PIPELINE_EVALUATE_TOKEN is not set: without the control plane's evaluate token every user would be "
                "served the flag's code default (off)"
            )
        if self.telemetry_enabled and not self.ingest_token:
            raise PipelineSettingsError(
                "PIPELINE_INGEST_TOKEN is not set: without the control plane's ingest token every event is refused "
                "and the guards watching this pipeline see nothing"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        """Read the settings; unset variables keep their defaults.

        ``REFERENCE_IMAGES_BUCKET``, ``IMAGE_SIGNED_URL_TTL`` (seconds), ``REFERENCE_CACHE_TTL_SECONDS``,
        ``CONTROLPLANE_URL``, ``PIPELINE_EVALUATE_TOKEN`` and ``PIPELINE_INGEST_TOKEN`` (the control plane's
        `evaluate` and `ingest` tokens), ``PIPELINE_ENVIRONMENT``, ``PIPELINE_RUNS_DIR``, ``PIPELINE_SPOOL_DIR``,
        ``GOOGLE_CLOUD_PROJECT``, ``PIPELINE_SIGNING_KEY_FILE`` (a service account key that signs URLs),
        ``PIPELINE_HOST``, ``PIPELINE_PORT``, ``PIPELINE_FAULTS_ENABLED`` (``true``: `PUT /faults` may inject faults),
        ``PIPELINE_BROWSER_EVALUATE_TOKEN`` (an `evaluate` token the upload page hands every browser) and
        ``PIPELINE_BROWSER_CONTROLPLANE_URL`` (the control plane as browsers reach it; ``CONTROLPLANE_URL`` by default).
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def number(name: str, default: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError as error:
                raise PipelineSettingsError(f"{name}: {raw!r} is not a number") from error
            if value <= 0:
                raise PipelineSettingsError(f"{name} must be positive, got {raw}")
            return value

        ttl = timedelta(seconds=number("IMAGE_SIGNED_URL_TTL", 86400.0))
        if ttl > MAX_SIGNED_URL_TTL:
            raise PipelineSettingsError(
                f"IMAGE_SIGNED_URL_TTL: {ttl} is longer than the 7 days a V4 signed URL may live"
            )
        key_file = get("PIPELINE_SIGNING_KEY_FILE")
        return cls(
            bucket=get("REFERENCE_IMAGES_BUCKET") or "reference-images",
            image_signed_url_ttl=ttl,
            reference_cache_ttl_seconds=number("REFERENCE_CACHE_TTL_SECONDS", 3600.0),
            controlplane_url=get("CONTROLPLANE_URL") or "http://127.0.0.1:8080",
            evaluate_token=get("PIPELINE_EVALUATE_TOKEN") or "",
            ingest_token=get("PIPELINE_INGEST_TOKEN") or "",
            browser_evaluate_token=get("PIPELINE_BROWSER_EVALUATE_TOKEN") or "",
            browser_controlplane_url=get("PIPELINE_BROWSER_CONTROLPLANE_URL") or "",
            environment=get("PIPELINE_ENVIRONMENT") or "production",
            runs_dir=Path(get("PIPELINE_RUNS_DIR") or "runs"),
            spool_dir=Path(get("PIPELINE_SPOOL_DIR") or "spool"),
            gcs_project=get("GOOGLE_CLOUD_PROJECT") or "reference-images-dev",
            signing_key_file=Path(key_file) if key_file else None,
            host=get("PIPELINE_HOST") or "127.0.0.1",
            port=int(number("PIPELINE_PORT", 8090)),
            faults_enabled=(get("PIPELINE_FAULTS_ENABLED") or "").lower() in ("1", "true", "yes"),
        )
