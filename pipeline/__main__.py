"""`python -m pipeline`: serve the reference-image pipeline (settings from the environment, see pipeline.settings)."""

from __future__ import annotations

import uvicorn

from pipeline.app import create_pipeline_app
from pipeline.logs import configure_logging
from pipeline.settings import PipelineSettings, PipelineSettingsError


def main() -> None:
    """Serve on PIPELINE_HOST:PIPELINE_PORT until interrupted."""
    configure_logging()
    try:
        settings = PipelineSettings.from_env()
        settings.check()
    except PipelineSettingsError as error:
        raise SystemExit(f"pipeline: {error}") from error
    uvicorn.run(create_pipeline_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
