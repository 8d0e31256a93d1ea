"""`python -m pipeline`: serve the reference-image pipeline (settings from the environment, see pipeline.settings)."""

from __future__ import annotations

import uvicorn

from pipeline.app import create_pipeline_app
from pipeline.logs import configure_logging
from pipeline.settings import PipelineSettings


def main() -> None:
    """Serve on PIPELINE_HOST:PIPELINE_PORT until interrupted."""
    configure_logging()
    settings = PipelineSettings.from_env()
    uvicorn.run(create_pipeline_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
